"""Architecture rules a reviewer would otherwise have to check by eye."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import rtpcore

REPO = Path(__file__).resolve().parents[2]


def test_rtpcore_never_imports_prefect() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(rtpcore.__path__, "rtpcore.") if not m.name.endswith("__main__"))
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
            "print(len(bad))\nprint(bad[:5])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    count, sample = run.stdout.splitlines()
    assert count == "0", f"importing every rtpcore module loaded prefect: {sample}"
    assert len(modules) > 40


def test_boto3_only_in_rtpcore_storage() -> None:
    offenders = [p for p in (REPO / "rtpcore").rglob("*.py")
                 if "storage" not in p.parts and ("import boto3" in p.read_text() or "import botocore" in p.read_text()
                                                  or "from botocore" in p.read_text())]
    assert offenders == []


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(REPO)): n for p in (REPO / "rtpcore").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 700}
    assert big == {}, "split modules over ~600 lines by concern"
