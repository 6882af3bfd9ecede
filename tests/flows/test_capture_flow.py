"""capture-session against a real rpcapd: timed run, stop from the stop-capture flow, artifacts, validation."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from rtpcore.capture.manifest import Manifest
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture
from tests.capture_lab import lab_hosts_yaml
from tests.flows.test_correlation_flows import _artifacts_and_logs


def _hosts_yaml(tmp_path: Path, port: int) -> Path:
    return lab_hosts_yaml(tmp_path, port)


def _send(port: int, count: int, tag: bytes, stop: threading.Event | None = None) -> int:
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            sock.sendto(tag + i.to_bytes(4, "big"), ("127.0.0.1", port))
            sent += 1
            time.sleep(0.002)
    return sent


def _payloads(files: list[str], port: int) -> list[bytes]:
    out = []
    for f in files:
        with open_capture(Path(f)) as reader:
            for frame in reader:
                l3 = link_payload(frame.linktype, frame.data)
                udp = parse_udp(parse_ip(l3)) if l3 else None
                if udp is not None and udp.dport == port:
                    out.append(udp.payload)
    return out


@pytest.fixture
def lab(tmp_path: Path, rpcapd, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RTPHELPER_STORAGE_MODE", "local")
    return _hosts_yaml(tmp_path, rpcapd.port)


def test_timed_capture_writes_every_packet(lab: Path, tmp_path: Path) -> None:
    from flows.capture_session import capture_session

    port = 47001
    result: dict = {}

    def run() -> None:
        result["state"] = capture_session(environment="LAB", duration_minutes=0.08, capture_filter=f"udp port {port}",
                                          output_folder="ticket-1", hosts_file=str(lab), post_capture="skip",
                                          return_state=True)

    th = threading.Thread(target=run)
    th.start()
    time.sleep(2.0)  # connected and capturing
    sent = _send(port, 300, b"timed-")
    th.join(timeout=120)
    state = result["state"]
    assert state.is_completed(), state
    doc = state.result()
    session = Path(doc["session"])
    assert session.parent == tmp_path / "captures" / "ticket-1"
    host = doc["hosts"][0]
    assert host["host"] == "media-1" and host["error"] is None
    got = _payloads(host["files"], port)
    assert got == [b"timed-" + i.to_bytes(4, "big") for i in range(sent)]
    m = Manifest.read(session / "manifest.jsonl")
    assert {c.name for c in m.chunks} == {Path(f).name for f in host["files"]}

    arts, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    key = f"ticket-1-{session.name}".replace("_", "-")
    summary = next(a.data for a in arts if a.key == f"capture-summary-{key}")
    assert str(session) in summary and "| media-1 | lo |" in summary
    assert _run(state.state_details.flow_run_id)[:2] == ("capture-LAB-ticket-1", ["ticket-1"])
    counters = [a for a in arts if a.key == f"capture-counters-{key}"]
    assert counters, "the live counters table artifact"
    final = counters[-1].data if isinstance(counters[-1].data, list) else __import__("json").loads(counters[-1].data)
    assert final[0]["host"] == "media-1" and final[0]["packets"] >= sent and final[0]["state"] == "done"
    assert any(a.type == "progress" for a in arts)
    text = "\n".join(log.message for log in logs)
    assert "media-1" in text and "packets" in text, "per-host counters in the run log"


def test_stop_capture_flow_ends_it_early(lab: Path) -> None:
    from flows.capture_session import capture_session
    from flows.stop_capture import stop_capture

    port = 47002
    result: dict = {}
    stop_sending = threading.Event()

    def run() -> None:
        result["state"] = capture_session(environment="LAB", duration_minutes=10, capture_filter=f"udp port {port}",
                                          hosts_file=str(lab), output_folder="ticket-stop", post_capture="skip",
                                          return_state=True)

    th = threading.Thread(target=run)
    started = time.monotonic()
    th.start()
    sender = threading.Thread(target=lambda: result.setdefault("sent", _send(port, 100000, b"stop-", stop_sending)))
    time.sleep(2.5)
    sender.start()
    time.sleep(1.5)
    deadline = time.monotonic() + 30
    stopped: list[str] = []
    while not stopped and time.monotonic() < deadline:  # the capture run must be Running first
        outcome = stop_capture(capture_run="capture-LAB-ticket-stop", return_state=True)
        stopped = outcome.result() if outcome.is_completed() else []
        time.sleep(0.5)
    th.join(timeout=60)
    stop_sending.set()
    sender.join()
    assert stopped == ["capture-LAB-ticket-stop"], "stop-capture found the running capture by its name"
    assert time.monotonic() - started < 60, "stopped long before its 10 minutes"
    state = result["state"]
    assert state.is_completed(), state
    doc = state.result()
    got = _payloads(doc["hosts"][0]["files"], port)
    assert got and got == [b"stop-" + i.to_bytes(4, "big") for i in range(len(got))], "a gap-free prefix of what was sent"


def test_unknown_host_is_refused_inside_the_flow(lab: Path) -> None:
    from flows.capture_session import capture_session

    state = capture_session(environment="LAB", duration_minutes=0.05, hosts=["media-9"], hosts_file=str(lab),
                            return_state=True)
    assert state.is_failed()
    assert state.message == "unknown host(s) media-9 in environment LAB; known: media-1"
    _, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    errors = [log.message for log in logs if log.level >= 40]
    assert state.message in errors and not any("Traceback" in m for m in errors), errors


def _run(flow_run_id) -> tuple[str, list[str], str]:  # type: ignore[no-untyped-def]
    """(name, tags, state type) of a flow run, read back from the server."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read():  # type: ignore[no-untyped-def]
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    run = asyncio.run(read())
    return run.name, sorted(run.tags), run.state.type.value


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _capture_with_traffic(lab: Path, port: int, tag: bytes, **kwargs: object):  # type: ignore[no-untyped-def]
    """A 6 s capture-session run with 200 datagrams sent once it captures (3 s: connect on a loaded box)."""
    from flows.capture_session import capture_session

    result: dict = {}
    th = threading.Thread(target=lambda: result.setdefault("state", capture_session(
        environment="LAB", duration_minutes=0.1, capture_filter=f"udp port {port}", hosts_file=str(lab),
        post_capture="skip", return_state=True, **kwargs)))
    th.start()
    time.sleep(3.0)
    _send(port, 200, tag)
    th.join(timeout=120)
    return result["state"]


def test_a_failed_host_fails_the_run_and_keeps_the_other_hosts_files(tmp_path: Path, rpcapd,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTPHELPER_STORAGE_MODE", "local")
    lab = _hosts_yaml(tmp_path, rpcapd.port)
    doc = yaml.safe_load(lab.read_text())
    closed = _closed_port()
    hosts = doc["environments"]["LAB"]["regions"]["EU"]["sub-region"]["lab-1"]["hosts"]
    hosts.append({"id": "media-down", "address": "127.0.0.1", "port": closed, "interfaces": ["lo"]})
    lab.write_text(yaml.safe_dump(doc))
    port = 47003
    state = _capture_with_traffic(lab, port, b"half-")
    assert state.is_failed(), state
    assert state.message.startswith("capture failed on 1 of 2 host interface(s): media-down lo: ")
    assert f"rpcap://127.0.0.1:{closed}: connection refused" in state.message
    result = state.result(raise_on_failure=False)
    good = next(h for h in result["hosts"] if h["host"] == "media-1")
    assert good["error"] is None
    assert _payloads(good["files"], port) == [b"half-" + i.to_bytes(4, "big") for i in range(200)]
    arts, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    summary = next(a.data for a in arts if (a.key or "").startswith("capture-summary-"))
    assert summary.startswith("## ❌ Capture failed") and "media-down lo: " in summary
    assert not [log.message for log in logs if "Traceback" in log.message], "a clean Failed state, no traceback"
    assert [log.message for log in logs if log.level >= 40 and log.name == "prefect.flow_runs"] == [state.message]


def test_nothing_captured_fails_the_run(lab: Path) -> None:
    from flows.capture_session import capture_session

    state = capture_session(environment="LAB", duration_minutes=0.03, capture_filter="udp port 9",
                            hosts_file=str(lab), post_capture="skip", return_state=True)
    assert state.is_failed(), state
    assert state.message.startswith("nothing was captured (0 packets on every host): check the capture filter")
    doc = state.result(raise_on_failure=False)
    assert doc["hosts"][0]["error"] is None and doc["hosts"][0]["packets"] == 0


def test_pending_uploads_complete_with_a_warning_and_the_s3_url(tmp_path: Path, rpcapd,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 refuses every connection: the capture completes on local disk, and the state says what is left."""
    for key, value in {"RTPHELPER_STORAGE_MODE": "s3", "RTPHELPER_S3_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
                       "RTPHELPER_S3_PATH": "capture-bucket/caps", "RTPHELPER_S3_FINAL_FLUSH_SECONDS": "1",
                       "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test-secret"}.items():
        monkeypatch.setenv(key, value)
    lab = _hosts_yaml(tmp_path, rpcapd.port)
    port = 47004
    state = _capture_with_traffic(lab, port, b"pend-", output_folder="ticket-9")
    assert state.is_completed(), state
    doc = state.result()
    session = doc["session"]
    pending = doc["storage"]["pending"]
    assert pending and doc["hosts"][0]["error"] is None
    url = doc["storage"]["location"]
    assert url.startswith("s3://capture-bucket/caps/LAB/ticket-9/")
    assert state.message.startswith(f"captured 200 packets on 1 host interface(s) into session {session}, S3 {url}; "
                                    f"warning: {len(pending)} file(s) not yet uploaded to {url}")
    assert f"rtphelper flush {session}" in state.message
    arts, _ = _artifacts_and_logs(state.state_details.flow_run_id)
    key = f"ticket-9-{Path(session).name}".replace("_", "-")
    warning = next(a.data for a in arts if a.key == f"capture-warning-{key}")
    assert warning.startswith("## ⚠️ Warning") and f"rtphelper flush {session}" in warning and url in warning
    summary = next(a.data for a in arts if a.key == f"capture-summary-{key}")
    assert f"S3 session: `{url}`" in summary


def test_stop_capture_requires_a_running_capture_to_be_picked() -> None:
    from flows.stop_capture import stop_capture

    state = stop_capture(return_state=True)
    assert state.is_failed() and state.message.startswith("pick one running capture in capture_run (running: ")
    state = stop_capture(capture_run="capture-LAB-nothing", return_state=True)
    assert state.is_failed()
    assert state.message.startswith("no capture-session run is running") or \
        state.message.startswith("no running capture-session run named 'capture-LAB-nothing'; running: ")


def test_unknown_environment_and_region_list_the_valid_names(lab: Path) -> None:
    from flows.capture_session import capture_session

    state = capture_session(environment="PRD", duration_minutes=0.05, hosts_file=str(lab), return_state=True)
    assert state.is_failed() and state.message == f"{lab}: unknown environment 'PRD'; valid: LAB"
    state = capture_session(environment="LAB", duration_minutes=0.05, regions=["US"], hosts_file=str(lab),
                            return_state=True)
    assert state.is_failed() and state.message == f"{lab}: unknown region 'US' in environment LAB; known: EU"


def _wait_paused(name: str, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    """The flow run called `name` once it is Paused (waiting for the post-capture form)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async def read():  # type: ignore[no-untyped-def]
        async with get_client() as client:
            return await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = asyncio.run(read())
        if runs and runs[0].state and runs[0].state.is_paused():
            return runs[0]
        if runs and runs[0].state and runs[0].state.is_final():
            break
        time.sleep(0.5)
    raise AssertionError(f"{name} never paused: {runs and runs[0].state}")


def _start_capture(lab: Path, folder: str, **kwargs: object) -> tuple[threading.Thread, dict]:
    """A short capture-session run in a thread, with datagrams sent until the test stops them (result["stop"])."""
    from flows.capture_session import capture_session

    result: dict = {"stop": threading.Event()}
    sender = threading.Thread(target=_send, args=(47005, 1_000_000, b"pause-", result["stop"]))
    sender.start()
    th = threading.Thread(target=lambda: result.setdefault("state", capture_session(
        environment="LAB", duration_minutes=0.06, capture_filter="udp port 47005", hosts_file=str(lab),
        output_folder=folder, return_state=True, **kwargs)))
    th.start()
    result["sender"] = sender
    return th, result


def _stop_sending(result: dict) -> None:
    result["stop"].set()
    result["sender"].join()


def test_paused_capture_resumed_with_the_sip_form_correlates_that_session(lab: Path, generated) -> None:
    """The seed's post-capture step: the run pauses, the engineer fills SIP pcap + direction, the same run correlates."""
    import shutil

    from prefect.flow_runs import resume_flow_run

    from tests.conftest import load_truth

    call = generated("inbound-b2bua")
    truth = load_truth(call)
    th, result = _start_capture(lab, "ticket-pause")
    try:
        paused = _wait_paused("capture-LAB-ticket-pause")
    finally:
        _stop_sending(result)
    session = next((lab.parent / "captures" / "ticket-pause").iterdir())
    assert paused.state.state_details.run_input_keyset, "the pause waits for a typed form"
    for chunk in (call / "media").iterdir():  # the call's media, as if the capture had caught it
        shutil.copy(chunk, session / "raw" / chunk.name)
    resume_flow_run(paused.id, run_input={"action": "correlate", "sip_pcap": str(call / "sip.pcap"),
                                          "direction": truth["direction"], "call_id": "", "number": ""})
    th.join(timeout=180)
    state = result["state"]
    assert state.is_completed(), state
    doc = state.result()
    assert doc["session"] == str(session) and doc["hosts"][0]["packets"] > 0, "the capture's own result is kept"
    outputs = [Path(p) for p in doc["correlation"]["outputs"].values()]
    assert {p.name for p in outputs} >= {"media_raw.pcap", "media_decrypted.pcap", "SIP_plus_media_decrypted.pcap"}
    assert all(p.is_file() and p.stat().st_size > 24 and session in p.parents for p in outputs)
    assert (session / "uploads" / "sip.pcap").is_file(), "the SIP pcap is kept in the session"


def test_paused_capture_without_an_answer_completes_with_the_capture(lab: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTPHELPER_POST_CAPTURE_WAIT_SECONDS", "3")
    th, result = _start_capture(lab, "ticket-nobody")
    try:
        _wait_paused("capture-LAB-ticket-nobody")
    finally:
        _stop_sending(result)
    th.join(timeout=60)
    state = result["state"]
    assert state.is_completed(), state
    doc = state.result()
    assert "correlation" not in doc and doc["hosts"][0]["packets"] > 0


FORM_SCHEMA = """
import json
from flows.capture_session import capture_session
from flows.stop_capture import stop_capture
print("SCHEMA " + json.dumps([capture_session.parameters.model_dump(), stop_capture.parameters.model_dump()]))
"""


def _form(hosts_file: str) -> tuple[dict, dict, str]:
    """The run forms' schemas as `prefect deploy` builds them from a fresh import, and what the import printed."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, RTPHELPER_HOSTS_FILE=hosts_file)
    proc = subprocess.run([sys.executable, "-c", FORM_SCHEMA], cwd=Path(__file__).resolve().parents[2], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SCHEMA "))
    capture, stop = json.loads(line.removeprefix("SCHEMA "))
    return capture, stop, proc.stderr


def test_forms_have_dropdowns_from_hosts_yaml_and_no_none_toggles(lab: Path) -> None:
    capture, stop, err = _form(str(lab))
    props = capture["properties"]
    assert props["environment"]["enum"] == ["LAB"]
    assert props["regions"]["items"]["enum"] == ["EU"] and props["sub_regions"]["items"]["enum"] == ["lab-1"]
    assert props["hosts"]["items"]["enum"] == ["media-1"]
    assert props["post_capture"]["enum"] == ["ask", "skip"] and props["post_capture"]["default"] == "ask"
    toggles = [name for name, p in {**props, **stop["properties"]}.items() if "anyOf" in p]
    assert toggles == [], f"Optional parameters render as type toggles in the UI: {toggles}"
    assert stop["properties"]["all_running"]["default"] is False and stop["properties"]["capture_run"]["default"] == ""
    assert "warning" not in err


def test_missing_hosts_yaml_at_deploy_warns_once_and_leaves_free_text(tmp_path: Path) -> None:
    capture, _, err = _form(str(tmp_path / "nowhere" / "hosts.yaml"))
    assert err.count("capture-session: warning: cannot read") == 1, err
    assert "each run checks them against the worker's hosts.yaml" in err
    assert capture["properties"]["environment"]["type"] == "string" and "enum" not in capture["properties"]["environment"]


def test_two_captures_at_once_keep_their_own_sessions_and_counters(lab: Path, tmp_path: Path) -> None:
    """Two engineers' capture-session runs at the same time: each its own run name, session, files and counters."""
    from flows.capture_session import capture_session
    from tests.capture_lab import send_until

    ports = {"ticket-a": 47005, "ticket-b": 47006}
    result: dict = {}
    stop = threading.Event()

    def run(folder: str) -> None:
        result[folder] = capture_session(environment="LAB", duration_minutes=0.1,
                                         capture_filter=f"udp port {ports[folder]}", output_folder=folder,
                                         hosts_file=str(lab), post_capture="skip", return_state=True)

    threads = [threading.Thread(target=run, args=(folder,)) for folder in ports]
    senders = [threading.Thread(target=send_until, args=(port, folder.encode(), stop)) for folder, port in ports.items()]
    for th in threads + senders:  # numbered datagrams from before the captures start until both ended
        th.start()
    for th in threads:
        th.join(timeout=120)
    stop.set()
    for th in senders:
        th.join()
    for folder, port in ports.items():
        state = result[folder]
        assert state.is_completed(), (folder, state)
        doc = state.result()
        session = Path(doc["session"])
        assert session.parent == tmp_path / "captures" / folder
        got = _payloads(doc["hosts"][0]["files"], port)
        first = int.from_bytes(got[0][-4:], "big") if got else 0
        assert got and got == [folder.encode() + i.to_bytes(4, "big") for i in range(first, first + len(got))], folder
        assert _run(state.state_details.flow_run_id)[:2] == (f"capture-LAB-{folder}", [folder])
        arts, _ = _artifacts_and_logs(state.state_details.flow_run_id)
        key = f"{folder}-{session.name}".replace("_", "-")
        counters = [a for a in arts if a.key and a.key.startswith("capture-counters-")]
        assert counters and {a.key for a in counters} == {f"capture-counters-{key}"}, f"{folder}: its own counters"
        tables = [a.data if isinstance(a.data, list) else __import__("json").loads(a.data) for a in counters]
        final = [t[0] for t in tables if t[0]["state"] == "done"]   # the versions' order is the server's, not time
        assert final and final[0]["packets"] == len(got), (folder, [t[0] for t in tables])
