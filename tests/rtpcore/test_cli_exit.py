"""`rtphelper correlate` as a program leaves without the interpreter's teardown: what it printed and wrote is whole."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rtpcore.pcap.reader import open_capture
from tests.conftest import load_truth

ROOT = Path(__file__).resolve().parents[2]


def _rtphelper(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The program as users run it (`python -m rtpcore.cli` = the console script: main() without argv), piped."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RTPHELPER_LOG_DIR": str(cwd / "logs")}
    env.pop("RTPHELPER_ENV_FILE", None)
    env.pop("PYTHONUNBUFFERED", None)        # stdout to a pipe is block-buffered, as for users
    return subprocess.run([sys.executable, "-m", "rtpcore.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_piped_json_report_and_outputs_are_complete(generated, tmp_path: Path) -> None:
    folder = generated("inbound-b2bua")
    truth = load_truth(folder)
    out = tmp_path / "out"
    done = _rtphelper(["correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--media",
                       str(folder / "media"), "--out", str(out), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)          # a block-buffered pipe: lost unless flushed before the exit
    assert doc["call_id"] == truth["legs"]["call_id"]
    assert sum(leg["packets"] for leg in doc["legs"]) == truth["media_packets"]
    with open_capture(out / "combined" / "media_raw.pcap") as reader:
        assert sum(1 for _ in reader) == truth["media_packets"]
    assert truth["legs"]["call_id"] in (tmp_path / "logs" / "app.log").read_text()   # the log file got its lines


def test_errors_keep_their_exit_code_and_message(generated, tmp_path: Path) -> None:
    folder = generated("inbound-b2bua")
    done = _rtphelper(["correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--media",
                       str(tmp_path / "absent"), "--out", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("rtphelper correlate: error:") and "absent" in done.stderr
