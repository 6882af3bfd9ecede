"""Operations as an operator runs them: make server/deploy/worker, runs from another checkout, schedules."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import REPO, PrefectStack
from tests.processes import free_port, prefect_env

CHECKOUT_LINE = "rtp-capture-tool flows run from "


def test_correlate_call_runs_from_the_workers_checkout(prefect_stack: PrefectStack, generated, tmp_path: Path) -> None:
    """Deployed from clone A, the worker (RTPHELPER_HOME = clone B) runs the correlation from clone B."""
    folder = generated("outbound-b2bua")
    out = tmp_path / "out"
    run = prefect_stack.run_deployment("correlate-call/correlate-call", {
        "sip_pcap": str(folder / "sip.pcap"), "direction": "outbound", "media": [str(folder / "media")],
        "output_folder": str(out)})
    logs = prefect_stack.logs(run.id)
    assert run.completed, (run.state_type, run.message, logs)
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
        done = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), target, f"PY={sys.executable}"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, (target, done.stdout)
        assert f"no Prefect server at {api_url}: run make server or set PREFECT_API_URL" in done.stderr, done.stderr
