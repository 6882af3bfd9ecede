"""The type check CI runs: the Literal types catch a misspelt direction, kind, side or storage mode, and
`make test` runs mypy before pytest; at run time a direction outside the set is refused where it enters."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rtpcore.cli import main as cli_main
from rtpcore.errors import SipError
from rtpcore.sip.capture import scan_sip
from rtpcore.sip.legs import plan_from_packets
from tests.conftest import load_truth

REPO = Path(__file__).resolve().parents[2]
MYPY_TIMEOUT_S = 300
_EXPECT = re.compile(r"#\s*expect:\s*([a-z-]+)")
_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")

# Each mistake a contributor could make with the shared vocabularies, marked with the mypy error code the
# project config must report on that line; the unmarked lines are correct uses and must stay silent.
PROBE = '''
from __future__ import annotations

from rtpcore.literals import StorageMode
from rtpcore.media.decrypt import StreamStats
from rtpcore.media.rtp import classify
from rtpcore.plan import SIDE_PEER, KeyProblem, LegPlan
from rtpcore.settings import Settings
from rtpcore.sip.dialog import SIDE_A, Sdp
from rtpcore.storage.local import LocalStorage


def plans() -> None:
    """A direction is one of two words."""
    LegPlan("c", ("c",), "inbund", (), 0, 0)  # expect: arg-type
    ok = LegPlan("c", ("c",), "outbound", (), 0, 0)
    if ok.direction == "Inbound":  # expect: comparison-overlap
        pass
    if ok.direction == "inbound":
        pass


def kinds(stats: StreamStats) -> None:
    """Stream kinds are lower case, as classify() returns them."""
    if classify(b"\\x80" * 12) == "RTP":  # expect: comparison-overlap
        pass
    if stats.kind == "srtp":  # expect: comparison-overlap
        pass
    if classify(b"\\x80" * 12) == "rtcp" and stats.kind == "rtp":
        pass


def sides(sdp: Sdp) -> None:
    """Hop sides are a/b (offerer/answerer); leg sides are peer/host."""
    KeyProblem("INVITE", "carrier", 3, "bad-base64", "redacted")  # expect: arg-type
    KeyProblem("INVITE", SIDE_PEER, 3, "bad-base64", "redacted")
    if sdp.side == "A":  # expect: comparison-overlap
        pass
    if sdp.side == SIDE_A:
        pass


def storage(settings: Settings) -> StorageMode:
    """Storage modes are s3 and local; a Storage's kind is one of them."""
    if settings.storage_mode == "S3":  # expect: comparison-overlap
        pass
    mode: StorageMode = "disk"  # expect: assignment
    return settings.storage_mode if settings.storage_mode == "s3" else mode


class Disk(LocalStorage):
    kind = "disk"  # expect: assignment
'''


def _mypy(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(cache), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=MYPY_TIMEOUT_S,
    )


def test_mypy_reports_each_misspelt_direction_kind_side_and_storage_mode(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    expected = {n: m.group(1) for n, line in enumerate(probe.read_text().splitlines(), 1) if (m := _EXPECT.search(line))}
    run = _mypy([str(probe)], tmp_path / "cache")
    found: dict[int, set[str]] = {}
    for line in run.stdout.splitlines():
        m = _ERROR.match(line)
        if m and Path(m["file"]).name == probe.name:
            found.setdefault(int(m["line"]), set()).add(m["code"])
    assert run.returncode == 1, run.stdout + run.stderr
    missed = {n: code for n, code in expected.items() if code not in found.get(n, set())}
    assert not missed, f"mypy let these mistakes through (line: code): {missed}\n{run.stdout}"
    extra = sorted(set(found) - set(expected))
    assert not extra, f"mypy flagged correct uses on lines {extra}:\n{run.stdout}"


def test_make_test_runs_the_type_check_before_pytest() -> None:
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "test"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout.splitlines()
    mypy = [i for i, c in enumerate(commands) if c.endswith("-m mypy")]
    pytest_runs = [i for i, c in enumerate(commands) if "-m pytest" in c]
    assert mypy and pytest_runs, dry.stdout
    assert mypy[0] < pytest_runs[0], f"mypy must run before pytest:\n{dry.stdout}"


@pytest.mark.parametrize("direction", ["Inbound", "both", ""])
def test_a_direction_outside_the_set_is_refused_naming_the_choices(generated, direction: str) -> None:
    folder = generated("inbound-proxy")
    sip = folder / load_truth(folder)["sip"]
    with pytest.raises(SipError) as info:
        plan_from_packets(list(scan_sip(sip).packets), direction, source=str(sip))
    assert str(info.value) == f"direction {direction!r} is not one of: inbound, outbound"


def test_cli_refuses_a_misspelt_direction_with_exit_code_2(generated, capsys: pytest.CaptureFixture[str]) -> None:
    folder = generated("inbound-proxy")
    with pytest.raises(SystemExit) as info:
        cli_main(["legs", "--sip", str(folder / "sip.pcap"), "--direction", "Inbound"])
    assert info.value.code == 2
    assert "invalid choice: 'Inbound' (choose from 'inbound', 'outbound')" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["outbound-b2bua", "inbound-proxy"])
def test_legs_json_prints_the_direction_as_before(variant: str, generated, capsys: pytest.CaptureFixture[str]) -> None:
    folder = generated(variant)
    truth = load_truth(folder)
    code = cli_main(["legs", "--sip", str(folder / truth["sip"]), "--direction", truth["direction"], "--json"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out) == truth["legs"]
    assert f'"direction": "{truth["direction"]}"' in out
