"""Flow options that come from settings when the flow module is imported (as a worker imports it for each run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
from flows.correlate_call import correlate_call
from flows.process_call import process_call
print(json.dumps({"correlate-call": correlate_call.timeout_seconds, "process-call": process_call.timeout_seconds}))
"""


def _timeouts(tmp_path: Path, **env: str) -> dict[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RTPHELPER_")}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(ROOT), "RTPHELPER_HOSTS_FILE": str(tmp_path / "none.yaml"),
                               **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_correlation_flows_time_out_after_the_job_timeout_setting(tmp_path: Path) -> None:
    assert _timeouts(tmp_path, RTPHELPER_CORRELATION_JOB_TIMEOUT_SECONDS="7") == {"correlate-call": 7, "process-call": 7}
    assert _timeouts(tmp_path) == {"correlate-call": 3600, "process-call": 3600}       # the seed's default
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "runtime.env").write_text("RTPHELPER_CORRELATION_JOB_TIMEOUT_SECONDS=90\n")
    assert _timeouts(tmp_path) == {"correlate-call": 90, "process-call": 90}           # the worker's runtime.env
