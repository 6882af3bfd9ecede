"""A worker that cannot see the laptop: the operator's stack plus a desk pool whose worker runs in its own mount
namespace with an empty tmpfs over the laptop folder, and `rtphelper serve` on the worker side."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import POLL_S, REPO, PrefectStack, prefect_stack  # noqa: F401  (the shared stack)
from tests.processes import free_port, stop_group, tail
from tests.storage.conftest import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, MotoServer, moto_server  # noqa: F401

POOL = "desk-e2e"
FLOWS = ("correlate-call", "process-call")
SECRET = "desk-e2e-serve-secret-0001"
READY_S = 120.0
COPIED_FIELDS = ("entrypoint", "pull_steps", "parameter_openapi_schema", "path", "job_variables",
                 "enforce_parameter_schema", "description")


@dataclass(frozen=True, slots=True)
class DeskWorld:
    """The laptop's folder and environment, the worker's capture root, the serve URL."""

    laptop: Path
    captures: Path
    serve_url: str
    laptop_env: dict[str, str]
    worker_log: Path


def _deploy_copies(stack: PrefectStack) -> None:
    """FLOW/desk-e2e deployments: the stack's own, on the desk pool (so only the namespaced worker runs them)."""
    made = stack.cli("work-pool", "create", POOL, "--type", "process")
    if made.returncode != 0 and "already exists" not in made.stdout + made.stderr:
        pytest.fail(f"work-pool create: {made.stdout}{made.stderr}")
    for flow in FLOWS:
        original = stack.deployment(f"{flow}/{flow}")
        body = {k: original[k] for k in COPIED_FIELDS if original.get(k) is not None}
        stack.api("POST", "/deployments/", json={**body, "name": POOL, "flow_id": original["flow_id"],
                                                 "work_pool_name": POOL})


@pytest.fixture(scope="session")
def desk_world(prefect_stack: PrefectStack, moto_server: MotoServer,  # noqa: F811
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskWorld]:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("the namespaced worker needs unshare(1) as root (mount namespace + tmpfs)")
    base = tmp_path_factory.mktemp("desk")
    laptop, captures = base / "laptop", base / "captures"
    laptop.mkdir()
    captures.mkdir()
    _deploy_copies(prefect_stack)
    serve_url = f"http://127.0.0.1:{free_port()}"
    s3 = {"RTPHELPER_S3_ENDPOINT": moto_server.endpoint, "RTPHELPER_S3_REGION": REGION,
          "RTPHELPER_S3_PATH": f"{BUCKET}/captures", "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    desk = {"RTPHELPER_SERVE_URL": serve_url, "RTPHELPER_SERVE_SECRET": SECRET, "RTPHELPER_STORAGE_MODE": "s3", **s3}
    worker_env = {**prefect_stack.env, **desk, "RTPHELPER_CAPTURE_ROOT": str(captures),
                  "RTPHELPER_SERVE_ADDRESS": serve_url.removeprefix("http://"),
                  "PYTHONPATH": str(prefect_stack.clone)}  # the worker's checkout, as `make worker` runs it
    worker_log, serve_log = base / "worker.log", base / "serve.log"
    procs: list[subprocess.Popen[bytes]] = []
    handles = [worker_log.open("w"), serve_log.open("w")]
    # The worker's view: the laptop folder is an empty tmpfs, so the flow can never read the laptop's files.
    worker_cmd = (f"mount -t tmpfs tmpfs {laptop} && exec {sys.executable} -m prefect worker start "
                  f"--pool {POOL} --type process")
    try:
        procs.append(subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", worker_cmd],
                                      cwd=prefect_stack.clone, env=worker_env, stdout=handles[0],
                                      stderr=subprocess.STDOUT, start_new_session=True))
        procs.append(subprocess.Popen([sys.executable, "-m", "rtpcore.cli", "serve"], cwd=prefect_stack.clone,
                                      env=worker_env, stdout=handles[1], stderr=subprocess.STDOUT,
                                      start_new_session=True))
        _wait_ready(prefect_stack, procs, worker_log, serve_url)
        laptop_env = {k: v for k, v in os.environ.items() if not k.startswith(("RTPHELPER_", "AWS_", "PREFECT_"))}
        laptop_env |= {"PREFECT_API_URL": prefect_stack.api_url, "PYTHONPATH": str(REPO), **desk}
        yield DeskWorld(laptop, captures, serve_url, laptop_env, worker_log)
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        for handle in handles:
            handle.close()


def _wait_ready(stack: PrefectStack, procs: list[subprocess.Popen[bytes]], worker_log: Path, serve_url: str) -> None:
    """The desk worker online in its pool and `rtphelper serve` answering."""
    deadline = time.monotonic() + READY_S
    while True:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args} exited {proc.returncode}: {tail(worker_log)}")
        workers = stack.api("POST", f"/work_pools/{POOL}/workers/filter", json={})
        try:
            served = httpx.get(f"{serve_url}/files/x", timeout=2).status_code == 403
        except httpx.TransportError:
            served = False
        if served and any(w.get("status") == "ONLINE" for w in workers):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"desk worker/serve not ready after {READY_S}s: {tail(worker_log)}")
        time.sleep(POLL_S)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/desk/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
