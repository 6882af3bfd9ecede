"""capture-session from its deployment through a real worker: capture on rpcapd, pause, resume with the SIP form."""
from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.capture_lab import lab_hosts_yaml, send_until
from tests.conftest import load_truth
from tests.e2e.conftest import PrefectStack
from tests.rpcap.conftest import root, rpcapd, rpcapd_binary  # noqa: F401  (a real rpcapd on loopback)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import e2e_replay  # noqa: E402

PORT = 47011
PAUSE_TIMEOUT_S = 240.0
START_RETRY_S = 60.0
LOG_SHIP_S = 30.0


def _start(stack: PrefectStack, parameters: dict) -> dict:
    """Create the capture-session run; a busy SQLite server answers 503 for a moment (2 loaded cores): retry."""
    dep = stack.deployment("capture-session/capture-session")
    deadline = time.monotonic() + START_RETRY_S
    while True:
        response = httpx.post(f"{stack.api_url}/deployments/{dep['id']}/create_flow_run",
                              json={"parameters": parameters}, timeout=30)
        if response.status_code != 503 or time.monotonic() > deadline:
            assert response.status_code == 201, response.text[:2000]
            return response.json()
        time.sleep(2.0)


def _wait_state(stack: PrefectStack, run_id: str, wanted: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = stack.api("GET", f"/flow_runs/{run_id}")
        state = (run.get("state") or {}).get("type")
        if state == wanted:
            return run
        assert state not in ("FAILED", "CRASHED", "COMPLETED", "CANCELLED"), (state, run["state"], stack.logs(run_id))
        assert time.monotonic() < deadline, f"{run['name']} still {state}; worker log: {stack.worker_log.read_text()[-3000:]}"
        time.sleep(1.0)


def test_capture_pauses_for_the_sip_form_and_the_same_run_correlates(
        prefect_stack: PrefectStack, rpcapd, generated, tmp_path: Path) -> None:  # noqa: F811
    call = generated("inbound-b2bua")
    truth = load_truth(call)
    hosts = lab_hosts_yaml(tmp_path, rpcapd.port)
    stop = threading.Event()
    sender = threading.Thread(target=send_until, args=(PORT, b"e2e-", stop))
    sender.start()
    try:
        run = _start(prefect_stack, {
            "environment": "LAB", "duration_minutes": 0.1, "capture_filter": f"udp port {PORT}",
            "output_folder": "ticket-e2e", "hosts_file": str(hosts), "storage_mode": "local"})
        paused = _wait_state(prefect_stack, run["id"], "PAUSED", PAUSE_TIMEOUT_S)
    finally:
        stop.set()
        sender.join()
    assert paused["name"] == "capture-LAB-ticket-e2e" and "ticket-e2e" in paused["tags"]
    assert paused["state"]["state_details"].get("run_input_keyset"), "the pause waits for a typed form"
    session = next((tmp_path / "captures" / "ticket-e2e").iterdir())
    assert any((session / "raw").glob("*.pcap")), "the capture's chunks"
    for chunk in (call / "media").iterdir():  # the call's media, as if the capture had caught it
        shutil.copy(chunk, session / "raw" / chunk.name)

    prefect_stack.api("POST", f"/flow_runs/{run['id']}/resume", json={"run_input": {
        "action": "correlate", "sip_pcap": str(call / "sip.pcap"), "direction": truth["direction"],
        "call_id": "", "number": ""}})
    done = prefect_stack.wait(run["id"])
    logs = prefect_stack.logs(run["id"])
    assert done.completed, (done.state_type, done.message, logs)
    combined = session / "combined" / "SIP_plus_media_decrypted.pcap"
    assert combined.is_file() and combined.stat().st_size > 24
    deadline = time.monotonic() + LOG_SHIP_S   # the run's log lines reach the server in batches, after the state
    while f"Direction: {truth['direction']}" not in logs and time.monotonic() < deadline:
        time.sleep(1)
        logs = prefect_stack.logs(run["id"])
    assert f"Direction: {truth['direction']}" in logs, "rtpcore's lines are in the worker-started run's logs"
    assert f"Call-ID: {truth['legs']['call_id']}" in logs

    # The UI's log export, as downloaded, makes the session a replay case.
    export = httpx.get(f"{prefect_stack.api_url}/flow_runs/{run['id']}/logs/download", timeout=30)
    case = tmp_path / "e2e-tests" / "ticket-e2e" / session.name
    shutil.copytree(session, case, ignore=shutil.ignore_patterns("combined", "decrypted", "filtered"))
    (case / f"{done.name}.csv").write_bytes(export.content)
    assert e2e_replay.main([str(case.parent.parent)]) == 0
