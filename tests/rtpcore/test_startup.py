"""Issue 12 start-up: the light commands never load boto3, Prefect or modules they do not use (checked in a fresh process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import load_truth

ROOT = Path(__file__).resolve().parents[2]
# What `legs`/`correlate` on local files must not import: S3 client, Prefect, the capture engine and (without a
# hosts file) the hosts models; `legs` not the analysis code either (every correlation analyses and reports the
# call, so correlate does). Each is tens to hundreds of ms of every run's fixed cost.
NEVER = ("boto3", "botocore", "prefect", "rtpcore.capture.engine", "rtpcore.rpcap.client")
ANALYSIS = ("rtpcore.analysis.call",)
NOT_WITHOUT_HOSTS_FILE = ("rtpcore.hosts", "yaml")
PROBE = """
import json, sys
from rtpcore.cli import main
rc = main(sys.argv[1:])
sys.stdout.flush()
print("\\nMODULES " + json.dumps(sorted(m for m in sys.modules if not m.startswith("_"))))
raise SystemExit(rc)
"""


def _run(args: list[str], tmp_path: Path) -> tuple[int, str, set[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RTPHELPER_HOSTS_FILE": str(tmp_path / "no-hosts.yaml")}
    env.pop("RTPHELPER_ENV_FILE", None)   # cwd is tmp_path: no config/runtime.env there
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    out, _, modules = done.stdout.rpartition("\nMODULES ")
    assert modules, done.stderr
    return done.returncode, out, set(json.loads(modules))


def _heavy(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == n or m.startswith(n + ".") for n in names)}


def test_legs_loads_neither_boto3_nor_prefect(generated, tmp_path: Path) -> None:
    folder = generated("inbound-b2bua")
    rc, out, modules = _run(["legs", "--sip", str(folder / "sip.pcap"), "--direction", "inbound"], tmp_path)
    assert rc == 0, out
    assert load_truth(folder)["legs"]["call_id"] in out          # it did the work
    assert not _heavy(modules, NEVER + ANALYSIS + NOT_WITHOUT_HOSTS_FILE)


def test_correlate_local_media_loads_neither_boto3_nor_prefect(generated, tmp_path: Path) -> None:
    folder = generated("inbound-b2bua")
    out_dir = tmp_path / "out"
    rc, out, modules = _run(["correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--media",
                             str(folder / "media"), "--out", str(out_dir)], tmp_path)
    assert rc == 0, out
    assert (out_dir / "combined" / "SIP_plus_media_decrypted.pcap").stat().st_size > 24
    assert not _heavy(modules, NEVER + NOT_WITHOUT_HOSTS_FILE)
