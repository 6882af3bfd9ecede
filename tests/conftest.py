"""Shared fixtures: where the public sample captures are, and whether tshark is here."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_PCAPS = REPO.parent / "shared" / "pcaps"


@pytest.fixture(scope="session")
def shared_pcaps() -> Path:
    """The folder of real public SIP/RTP captures, or skip with the reason."""
    if not SHARED_PCAPS.is_dir():
        pytest.skip(f"real sample captures not found at {SHARED_PCAPS} (needs the ../shared checkout beside the repo)")
    return SHARED_PCAPS


@pytest.fixture(scope="session")
def tshark() -> str:
    """Path of tshark, or skip: `make test` installs it when run as root (apt-get install tshark)."""
    path = shutil.which("tshark")
    if path is None or shutil.which("capinfos") is None:
        pytest.skip("tshark/capinfos not on PATH: apt-get install tshark (make test does this as root)")
    return path


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory):
    """Render a generator variant once per session: generated('inbound-b2bua') → its folder (truth.json inside)."""
    from rtpcore.callgen import VARIANTS, render

    root = tmp_path_factory.mktemp("calls")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            render(VARIANTS[name], root / name)
            done[name] = root / name
        return done[name]

    return get


def load_truth(folder: Path) -> dict:
    """The generator's truth.json of a rendered variant."""
    import json

    return json.loads((folder / "truth.json").read_text())
