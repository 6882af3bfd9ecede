"""Every file the generator writes is read by our reader exactly as capinfos sees it (count, first/last time)."""
from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from rtpcore.callgen import VARIANTS
from rtpcore.pcap.reader import open_capture
from tests.conftest import load_truth

pytestmark = pytest.mark.tshark


def _capinfos(paths: list[Path]) -> dict[str, tuple[int, Decimal, Decimal]]:
    out = subprocess.run(["capinfos", "-M", "-T", "-r", "-c", "-a", "-e", "-S", *map(str, paths)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {}
    for line in out.splitlines():
        name, count, first, last = line.split("\t")
        rows[name] = (int(count), Decimal(first), Decimal(last))
    return rows


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_reader_agrees_with_capinfos(name: str, generated, tshark: str) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    files = [folder / truth["sip"], *(folder / m for m in truth["media"])]
    expected = _capinfos(files)
    for path in files:
        with open_capture(path) as reader:
            stamps = [f.ts_ns for f in reader]
        count, first, last = expected[str(path)]
        assert len(stamps) == count, path
        # capinfos prints µs for pcap and ns for pcapng; compare at the precision it printed
        scale = 10 ** (9 - (len(str(first).split(".")[1]) if "." in str(first) else 0))
        assert min(stamps) // scale == int(first * 10**9) // scale, path
        assert max(stamps) // scale == int(last * 10**9) // scale, path
        assert stamps == sorted(stamps), f"{path}: the generator writes in time order"

