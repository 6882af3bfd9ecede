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
