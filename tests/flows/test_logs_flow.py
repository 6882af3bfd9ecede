"""rtpcore's log lines in the run's logs when a worker runs the flow (`python -m prefect.engine`), redacted, on disk too."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect import flow
from tasks.runtime import begin_flow_run
from tests.conftest import load_truth
from tests.flows.test_correlation_flows import _artifacts_and_logs

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import e2e_replay  # noqa: E402
THREAD_LINE = "capture EU-media-1: reconnecting (logged from a capture thread)"
INFO_LINE = "an INFO line below the configured level"


@flow(name="log-probe")
def log_probe(inline_key: str) -> None:
    """What rtpcore does in a run: lines from the flow's thread and from its own threads, one holding an SDES key."""
    begin_flow_run()
    log = logging.getLogger("rtpcore.sip.sdp")
    log.warning("offer m=audio 40000 RTP/SAVP 0: a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s", inline_key)
    log.info(INFO_LINE)
    worker = threading.Thread(target=lambda: logging.getLogger("rtpcore.capture.engine").warning(THREAD_LINE))
    worker.start()
    worker.join()


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def _run_name(run_id: UUID) -> str:
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).name

    return asyncio.run(read())


def _run_like_a_worker(flow_obj: Any, entrypoint: str, parameters: dict, env: dict[str, str]) -> UUID:
    """Create the flow run on the server, then run it as a process worker does: `python -m prefect.engine ID`."""
    from prefect.client.orchestration import get_client

    async def create() -> UUID:
        async with get_client() as client:
            return (await client.create_flow_run(flow_obj, parameters=parameters)).id

    run_id = asyncio.run(create())
    child = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RTPHELPER_"))}
    # No PREFECT_LOGGING_EXTRA_LOGGERS: in a worker's run process Prefect configures logging before our imports.
    child.update(PREFECT_API_URL=_api_url(), PREFECT__FLOW_ENTRYPOINT=entrypoint,
                 PREFECT_SERVER_ANALYTICS_ENABLED="false", **env)
    proc = subprocess.run([sys.executable, "-m", "prefect.engine", str(run_id)], cwd=REPO, env=child,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_id


def test_rtpcore_lines_reach_the_run_logs_of_a_worker_started_run(generated, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The correlation's Direction/Call-ID lines (rtpcore.pipeline) show in the UI's logs and in logs/app.log."""
    from flows.correlate_call import correlate_call

    call = generated("inbound-b2bua")
    truth = load_truth(call)
    params = {"sip_pcap": str(call / "sip.pcap"), "direction": truth["direction"], "media": [str(call / "media")],
              "output_folder": str(tmp_path / "out")}
    run_id = _run_like_a_worker(correlate_call, "flows/correlate_call.py:correlate_call", params,
                                {"RTPHELPER_LOG_DIR": str(tmp_path / "logs"), "RTPHELPER_STORAGE_MODE": "local"})
    _, logs = _artifacts_and_logs(run_id)
    lines = [(log.name, log.message) for log in logs]
    assert ("rtpcore.pipeline", f"Direction: {truth['direction']}") in lines, lines
    assert ("rtpcore.pipeline", f"Call-ID: {truth['legs']['call_id']}") in lines
    assert len([m for _, m in lines if m.startswith("Direction: ")]) == 1, "each line once"
    app_log = (tmp_path / "logs" / "app.log").read_text()
    row = next(x for x in app_log.splitlines() if x.endswith(f"Direction: {truth['direction']}"))
    assert f"| INFO | pipeline | cid={_run_name(run_id)} | rtpcore.pipeline | pipeline.py:" in row, row

    export = httpx.get(f"{_api_url()}/flow_runs/{run_id}/logs/download", timeout=30)
    assert export.status_code == 200 and export.text.startswith("timestamp,level,flow_run_id,task_run_id,message")
    assert f"Direction: {truth['direction']}" in export.text
    # The replay tool takes that export as it is: a case is the session + the downloaded CSV.
    session = tmp_path / "e2e-tests" / "from-ui-export" / "20261203_120000"
    shutil.copytree(call / "media", session / "raw")
    (session / "uploads").mkdir()
    shutil.copy(call / "sip.pcap", session / "uploads" / "sip.pcap")
    (session / f"{_run_name(run_id)}.csv").write_bytes(export.content)
    assert e2e_replay.main([str(session.parent.parent)]) == 0
    assert "PASS  from-ui-export" in capsys.readouterr().out


def test_levels_and_redaction_in_the_run_logs(generated, tmp_path: Path) -> None:
    """RTPHELPER_LOG_LEVEL=WARNING drops INFO; an a=crypto inline key is masked; a capture thread's line is kept."""
    key = next(s["key"] for s in load_truth(generated("inbound-b2bua"))["streams"] if s.get("key"))
    run_id = _run_like_a_worker(log_probe, "tests/flows/test_logs_flow.py:log_probe", {"inline_key": key},
                                {"RTPHELPER_LOG_DIR": str(tmp_path / "logs"), "RTPHELPER_LOG_LEVEL": "WARNING"})
    _, logs = _artifacts_and_logs(run_id)
    messages = [log.message for log in logs]
    offer = next(m for m in messages if "a=crypto:1" in m)
    assert offer.endswith(f"inline:{key[:4]}…(redacted)") and key not in "\n".join(messages)
    assert THREAD_LINE in messages, "lines from rtpcore's own threads belong to the run too"
    assert INFO_LINE not in messages
    on_disk = (tmp_path / "logs" / "app.log").read_text()
    assert THREAD_LINE in on_disk and key not in on_disk and INFO_LINE not in on_disk
