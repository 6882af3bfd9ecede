"""Operations as an operator runs them: make start/server/deploy/worker, runs from another checkout, per-region
queues, schedules that keep their parameters and state across redeploys."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture
from tests.e2e.conftest import REPO, PrefectStack
from tests.processes import free_port, prefect_env, stop_group, tail, wait_healthy

CHECKOUT_LINE = "rtp-capture-tool flows run from "
NIGHTLY = "capture-session/capture-session-nightly"
NIGHTLY_PARAMETERS = {"environment": "PRD", "duration_minutes": 30, "output_folder": "nightly", "post_capture": "skip"}
REGION_PORT = 47311
STARTUP_S = 240.0
STOP_S = 150.0   # a loaded CI machine: the server, the worker and serve all shut down


def _make(target: str, *extra: str) -> list[str]:
    return ["make", "--no-print-directory", "-C", str(REPO), *extra, target, f"PY={sys.executable}"]


def test_correlate_call_runs_from_the_workers_checkout(prefect_stack: PrefectStack, generated, tmp_path: Path) -> None:
    """Deployed from clone A, the worker (RTPHELPER_HOME = clone B) runs the correlation from clone B."""
    folder = generated("outbound-b2bua")
    out = tmp_path / "out"
    run = prefect_stack.run_deployment("correlate-call/correlate-call", {
        "sip_pcap": str(folder / "sip.pcap"), "direction": "outbound", "media": [str(folder / "media")],
        "output_folder": str(out)})
    assert run.completed, (run.state_type, run.message, prefect_stack.logs(run.id))
    combined = out / "combined" / "SIP_plus_media_decrypted.pcap"
    assert combined.is_file() and combined.stat().st_size > 0
    worker = prefect_stack.worker_log.read_text()
    checkouts = {line.split(CHECKOUT_LINE, 1)[1].strip() for line in worker.splitlines() if CHECKOUT_LINE in line}
    assert checkouts == {str(prefect_stack.clone)}, worker[-3000:]
    assert str(prefect_stack.deployed_from) not in worker
    deployment = prefect_stack.deployment("correlate-call/correlate-call")
    assert str(prefect_stack.deployed_from) not in str(deployment)  # nothing ties the deployment to clone A


def test_make_deploy_and_worker_without_a_server_say_what_to_do(tmp_path: Path) -> None:
    """`make deploy` / `make worker` against a URL where nothing answers: exit non-zero, name the URL and the fix."""
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = prefect_env(tmp_path, api_url.removesuffix("/api"))
    for target in ("deploy", "worker"):
        done = subprocess.run(_make(target), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, (target, done.stdout)
        assert f"no Prefect server at {api_url}: run make server or set PREFECT_API_URL" in done.stderr, done.stderr


def _udp_payloads(folder: Path, port: int) -> int:
    """UDP packets to `port` in every capture chunk under folder."""
    count = 0
    for chunk in sorted(p for p in folder.rglob("*.pcap*") if p.suffix in (".pcap", ".pcapng")):  # not .idx.json
        with open_capture(chunk) as reader:
            for frame in reader:
                l3 = link_payload(frame.linktype, frame.data)
                udp = parse_udp(parse_ip(l3)) if l3 else None
                count += udp is not None and udp.dport == port
    return count


def _send_until(stop: threading.Event, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while not stop.is_set():
            sock.sendto(b"region-eu", ("127.0.0.1", port))
            time.sleep(0.01)


def test_a_region_capture_runs_only_on_that_regions_worker(prefect_stack: PrefectStack, rpcapd,
                                                           tmp_path: Path) -> None:
    """capture-session-eu waits for a worker of the EU queue (the central worker leaves it), which captures."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({
        "rpcap": {"default_port": rpcapd.port, "auth_mode": None},
        "settings": {"default_capture_root": str(tmp_path / "captures")},
        "environments": {"LAB": {"regions": {"EU": {"sub-region": {"lab-1": {"hosts": [
            {"id": "eu-media-1", "address": "127.0.0.1", "description": "loopback rpcapd", "interfaces": ["lo"]}]}}}}}}}))
    dep = prefect_stack.deployment("capture-session/capture-session-eu")
    assert dep["work_queue_name"] == "EU" and dep["parameters"]["regions"] == ["EU"]
    run = prefect_stack.start_run("capture-session/capture-session-eu", {
        "environment": "LAB", "duration_minutes": 0.1, "capture_filter": f"udp port {REGION_PORT}",
        "output_folder": "eu-ticket", "hosts_file": str(hosts), "storage_mode": "local", "post_capture": "skip"})
    time.sleep(float(prefect_stack.env["PREFECT_WORKER_QUERY_SECONDS"]) * 4)  # the central worker polled
    assert prefect_stack.api("GET", f"/flow_runs/{run['id']}")["state"]["type"] == "SCHEDULED"
    assert run["id"] not in prefect_stack.worker_log.read_text()

    log = tmp_path / "eu-worker.log"
    env = prefect_stack.env | {"RTPHELPER_WORK_QUEUES": "EU", "RTPHELPER_HOME": str(prefect_stack.deployed_from)}
    stop = threading.Event()
    sender = threading.Thread(target=_send_until, args=(stop, REGION_PORT))
    with log.open("w") as out:
        worker = subprocess.Popen(["make", "--no-print-directory", "-C", str(prefect_stack.deployed_from), "worker",
                                   f"PY={sys.executable}"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        sender.start()
        try:
            done = prefect_stack.wait(run["id"])
        finally:
            stop.set()
            sender.join()
            stop_group(worker)
    assert done.completed, (done.state_type, done.message, tail(log))
    assert f"submitting flow run '{run['id']}'" in log.read_text()
    assert run["id"] not in prefect_stack.worker_log.read_text()
    assert _udp_payloads(tmp_path / "captures" / "eu-ticket", REGION_PORT) > 0


def _nightly_schedule(stack: PrefectStack) -> dict:
    schedules = stack.deployment(NIGHTLY)["schedules"]
    assert len(schedules) == 1, schedules
    return schedules[0]


def test_the_nightly_schedule_keeps_its_parameters_and_state_across_make_deploy(prefect_stack: PrefectStack) -> None:
    """Enabled in the UI (PATCH active), the nightly schedule is still enabled, with its parameters, after make deploy."""
    first = _nightly_schedule(prefect_stack)
    assert first["slug"] == "nightly" and first["active"] is False  # the example ships paused
    assert first["parameters"] == NIGHTLY_PARAMETERS
    dep_id = prefect_stack.deployment(NIGHTLY)["id"]
    prefect_stack.api("PATCH", f"/deployments/{dep_id}/schedules/{first['id']}", json={"active": True})
    try:
        redeploy = subprocess.run(["make", "--no-print-directory", "-C", str(prefect_stack.deployed_from), "deploy",
                                   f"PY={sys.executable}"], env=prefect_stack.env, capture_output=True, text=True,
                                  timeout=600)
        assert redeploy.returncode == 0, redeploy.stdout[-3000:] + redeploy.stderr[-3000:]
        assert "capture-session-nightly/nightly: on" in redeploy.stdout
        after = _nightly_schedule(prefect_stack)
        assert after["active"] is True and after["parameters"] == NIGHTLY_PARAMETERS
        assert after["schedule"]["cron"] == first["schedule"]["cron"] == "0 2 * * *"
    finally:
        prefect_stack.api("PATCH", f"/deployments/{dep_id}/schedules/{first['id']}", json={"active": False})


def test_a_run_of_the_nightly_deployment_without_parameters_gets_the_schedules_own(prefect_stack: PrefectStack) -> None:
    """What the scheduler (or `prefect deployment run`) starts carries every parameter: no crash for a missing one."""
    created = prefect_stack.start_run(NIGHTLY, {})
    assert created["parameters"] == NIGHTLY_PARAMETERS
    done = prefect_stack.wait(created["id"])
    # The stack's clone has no hosts.yaml: the run fails on that, cleanly — not Crashed on a missing parameter.
    assert done.name == "capture-PRD-nightly" and done.state_type == "FAILED", done
    assert "hosts.yaml" in done.message and "missing" not in done.message.lower(), done.message


@pytest.mark.slow
def test_make_start_brings_up_the_desk_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    """The seed's single command: server + pool + deployments + worker, the UI address printed; Ctrl-C stops all."""
    url = f"http://127.0.0.1:{free_port()}"
    env = prefect_env(tmp_path, url)
    for inherited in ("PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "RTPHELPER_SERVE_SECRET", "RTPHELPER_SERVE_URL"):
        env.pop(inherited, None)
    serve_url = f"http://127.0.0.1:{free_port()}"
    env |= {"RTPHELPER_SERVE_ADDRESS": serve_url.removeprefix("http://"),
            "RTPHELPER_CAPTURE_ROOT": str(tmp_path / "captures")}
    log = tmp_path / "start.log"
    with log.open("w") as out:
        # -o setup: this checkout is set up already (`make start` on a fresh machine runs setup first)
        start = subprocess.Popen(_make("start", "-o", "setup"), env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            wait_healthy(start, url, log, timeout=STARTUP_S)
            deadline = time.monotonic() + STARTUP_S
            while f"Open the UI at {url}" not in log.read_text():
                assert start.poll() is None and time.monotonic() < deadline, tail(log)
                time.sleep(1)
            assert "<html" in httpx.get(url, timeout=10).text.lower()
            assert f"outputs served at {serve_url}" in log.read_text()
            unsigned = httpx.get(f"{serve_url}/files/t/20260101_000000/combined/media_raw.pcap", timeout=10)
            assert unsigned.status_code == 403 and "expiry" in unsigned.json()["error"]   # rtphelper serve answers
            names = {d["name"] for d in httpx.post(f"{url}/api/deployments/filter", json={}, timeout=10).json()}
            assert {"correlate-call", "capture-session", "capture-session-eu"} <= names
            while not any(w["status"] == "ONLINE" for w in httpx.post(
                    f"{url}/api/work_pools/rtphelper/workers/filter", json={}, timeout=10).json()):
                assert start.poll() is None and time.monotonic() < deadline, tail(log)
                time.sleep(1)
            os.killpg(start.pid, signal.SIGINT)  # Ctrl-C in the terminal
            start.wait(timeout=STOP_S)
            deadline = time.monotonic() + STOP_S
            while _group_alive(start.pid):  # the server's and the worker's children go too
                assert time.monotonic() < deadline, f"processes left in the group after Ctrl-C: {tail(log)}"
                time.sleep(0.5)
        finally:
            if _group_alive(start.pid):
                os.killpg(start.pid, signal.SIGKILL)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/api/health", timeout=2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
