"""The Prefect stack an operator brings up (make server / make deploy / make worker), once per test session.

Deployed from a clean clone A of this checkout's HEAD (commit what you want tested); the worker runs the flows
from a second clone B (RTPHELPER_HOME), so a run proves that deployments work from any checkout of the version.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import free_port, prefect_env, stop_group, tail, wait_healthy

REPO = Path(__file__).resolve().parents[2]
POOL = "rtphelper"
DEPLOY_TIMEOUT_S = 600.0     # `make deploy`: imports every flow module once (slow on a loaded 2-core box)
WORKER_ONLINE_S = 120.0
RUN_TIMEOUT_S = 300.0
API_TIMEOUT_S = 30.0
POLL_S = 1.0
BUSY, BUSY_RETRIES = 503, 10
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


@dataclass(frozen=True, slots=True)
class FinishedRun:
    """A flow run in a final state, as the API reports it."""

    id: str
    name: str
    state_type: str          # COMPLETED, FAILED, CRASHED, CANCELLED (or the last state seen on timeout)
    state_name: str
    message: str
    run: dict[str, Any]      # the API's flow run document

    @property
    def completed(self) -> bool:
        return self.state_type == "COMPLETED"


@dataclass(frozen=True, slots=True)
class PrefectStack:
    """A running server + pool + deployments + worker; `env` points Prefect clients and the CLI at it."""

    api_url: str
    ui_url: str
    env: dict[str, str]
    clone: Path              # clone B: the checkout the worker runs the flows from (RTPHELPER_HOME)
    deployed_from: Path      # clone A: where `make deploy` ran
    worker_log: Path
    server_log: Path
    _http: httpx.Client = field(repr=False)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call to the server (path relative to /api); fails the test on an HTTP error.

        503 is retried: the SQLite-backed server answers it while its scheduler holds the database.
        """
        for _ in range(BUSY_RETRIES):
            response = self._http.request(method, f"{self.api_url}{path}", **kwargs)
            if response.status_code != BUSY:
                break
            time.sleep(POLL_S)
        if response.is_error:
            pytest.fail(f"{method} {path}: HTTP {response.status_code} {response.text[:2000]}")
        return response.json() if response.content else None

    def deployment(self, name: str) -> dict[str, Any]:
        """The deployment document by 'flow/deployment' or by deployment name alone."""
        if "/" in name:
            return self.api("GET", f"/deployments/name/{name}")
        found = self.api("POST", "/deployments/filter", json={"deployments": {"name": {"any_": [name]}}})
        if len(found) != 1:
            pytest.fail(f"{len(found)} deployments named {name!r}")
        return found[0]

    def start_run(self, name: str, parameters: dict[str, Any], **body: Any) -> dict[str, Any]:
        """Create a flow run of a deployment over the API (body: e.g. work_queue_name, tags) without waiting."""
        dep = self.deployment(name)
        return self.api("POST", f"/deployments/{dep['id']}/create_flow_run", json={"parameters": parameters, **body})

    def wait(self, run_id: str, timeout: float = RUN_TIMEOUT_S) -> FinishedRun:
        """Poll a flow run until it is final; on timeout, fail with the worker log."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.api("GET", f"/flow_runs/{run_id}")
            state = run.get("state") or {}
            if state.get("type") in FINAL_STATES:
                return FinishedRun(id=run["id"], name=run["name"], state_type=state["type"],
                                   state_name=state.get("name", ""), message=state.get("message") or "", run=run)
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {run['name']} still {state.get('type')} after {timeout}s; worker log:\n"
                            f"{tail(self.worker_log)}")
            time.sleep(POLL_S)

    def run_deployment(self, name: str, parameters: dict[str, Any], timeout: float = RUN_TIMEOUT_S) -> FinishedRun:
        """Create a run of deployment `name` ('flow/deployment' or the deployment name) and wait for a final state."""
        return self.wait(self.start_run(name, parameters)["id"], timeout)

    def logs(self, run_id: str) -> list[str]:
        """The messages of a flow run's logs (its tasks' included), oldest first, as the UI shows them."""
        rows = self.api("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                      "sort": "TIMESTAMP_ASC", "limit": 200})
        return [row["message"] for row in rows]

    def cli(self, *args: str, timeout: float = API_TIMEOUT_S * 4) -> subprocess.CompletedProcess[str]:
        """`prefect …` against this server, from clone A (as an operator's shell would)."""
        return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=self.deployed_from, env=self.env,
                              capture_output=True, text=True, timeout=timeout)


def _clone(dest: Path) -> Path:
    """A clean `git clone` of this checkout's HEAD (untracked and uncommitted files stay behind)."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(dest)], check=True, timeout=120)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", head], check=True, timeout=120)
    return dest


def _make(clone: Path, target: str) -> list[str]:
    """The operator's command line for a make target of a clone, with the shared venv's Python."""
    return ["make", "--no-print-directory", "-C", str(clone), target, f"PY={sys.executable}"]


def _wait_worker(http: httpx.Client, api_url: str, worker: subprocess.Popen, log: Path) -> None:
    """Wait until the worker has registered with the pool (so runs do not race its start)."""
    deadline = time.monotonic() + WORKER_ONLINE_S
    while True:
        if worker.poll() is not None:
            pytest.fail(f"`make worker` exited {worker.returncode}: {tail(log)}")
        response = http.post(f"{api_url}/work_pools/{POOL}/workers/filter", json={})
        if response.status_code == 200 and any(w.get("status") == "ONLINE" for w in response.json()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the worker did not come online in {WORKER_ONLINE_S}s: {tail(log)}")
        time.sleep(POLL_S)


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    """`make server` + `make deploy` from clone A + `make worker` running clone B, torn down at session end."""
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("make and git are needed for the e2e stack: apt-get install make git")
    base = tmp_path_factory.mktemp("e2e-stack")
    clone_a, clone_b = _clone(base / "clone-a"), _clone(base / "clone-b")
    home = base / "prefect-home"
    home.mkdir()
    url = f"http://127.0.0.1:{free_port()}"
    env = prefect_env(home, url) | {"RTPHELPER_HOME": str(clone_b), "PREFECT_WORKER_QUERY_SECONDS": str(POLL_S * 2)}
    for inherited in ("PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # as from an operator's shell
        env.pop(inherited, None)
    server_log, worker_log = home / "server.log", home / "worker.log"
    procs: list[subprocess.Popen] = []
    logs = [server_log.open("w"), worker_log.open("w")]
    http = httpx.Client(timeout=API_TIMEOUT_S)
    try:
        procs.append(subprocess.Popen(_make(clone_a, "server"), env=env, stdout=logs[0],
                                      stderr=subprocess.STDOUT, start_new_session=True))
        wait_healthy(procs[0], url, server_log)
        deploy = subprocess.run(_make(clone_a, "deploy"), env=env, capture_output=True, text=True,
                                timeout=DEPLOY_TIMEOUT_S)
        if deploy.returncode != 0:
            pytest.fail(f"`make deploy` exited {deploy.returncode}:\n{deploy.stdout[-3000:]}\n{deploy.stderr[-3000:]}")
        (home / "deploy.log").write_text(deploy.stdout + deploy.stderr)
        procs.append(subprocess.Popen(_make(clone_b, "worker"), env=env, stdout=logs[1],
                                      stderr=subprocess.STDOUT, start_new_session=True))
        _wait_worker(http, f"{url}/api", procs[1], worker_log)
        yield PrefectStack(api_url=f"{url}/api", ui_url=url, env=env, clone=clone_b, deployed_from=clone_a,
                           worker_log=worker_log, server_log=server_log, _http=http)
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        for handle in logs:
            handle.close()
        http.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


# A real rpcapd for the per-region capture test (built by scripts/build-rpcapd.sh).
from tests.rpcap.conftest import root, rpcapd, rpcapd_binary  # noqa: E402,F401


# issue 10's walk: a worker of the EU queue with `rtphelper serve` beside it, as an engineer's region worker runs.
REGION_QUEUE = "EU"
SERVE_SECRET = "e2e-walk-serve-secret-0001"


@dataclass(frozen=True, slots=True)
class RegionDesk:
    """The EU worker's capture root (served by `rtphelper serve` at serve_url) and its hosts.yaml (a real rpcapd)."""

    captures: Path
    hosts_file: Path
    serve_url: str
    worker_log: Path


def _online_workers(stack: PrefectStack) -> set[str]:
    return {w["name"] for w in stack.api("POST", f"/work_pools/{POOL}/workers/filter", json={})
            if w.get("status") == "ONLINE"}


def _wait_region_desk(stack: PrefectStack, procs: list[subprocess.Popen], before: set[str], desk: RegionDesk) -> None:
    """A new worker online in the pool and `rtphelper serve` refusing an unsigned link (it answers)."""
    deadline = time.monotonic() + WORKER_ONLINE_S
    while True:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args} exited {proc.returncode}: {tail(desk.worker_log)}")
        try:
            served = httpx.get(f"{desk.serve_url}/files/x/combined/y", timeout=API_TIMEOUT_S).status_code == 403
        except httpx.TransportError:
            served = False
        if served and _online_workers(stack) - before:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"EU worker/serve not ready after {WORKER_ONLINE_S}s: {tail(desk.worker_log)}")
        time.sleep(POLL_S)


@pytest.fixture
def region_desk(prefect_stack: PrefectStack, rpcapd, tmp_path: Path) -> Iterator[RegionDesk]:  # noqa: F811
    """`make worker RTPHELPER_WORK_QUEUES=EU` (clone B) + `rtphelper serve`, with the serve URL/secret, capture root
    and lab hosts.yaml in their environment; stopped at the end of the test (other tests own the EU queue then)."""
    from tests.capture_lab import lab_hosts_yaml

    hosts = lab_hosts_yaml(tmp_path, rpcapd.port)
    desk = RegionDesk(captures=tmp_path / "captures", hosts_file=hosts, serve_url=f"http://127.0.0.1:{free_port()}",
                      worker_log=tmp_path / "eu-worker.log")
    desk.captures.mkdir()
    env = prefect_stack.env | {
        "RTPHELPER_WORK_QUEUES": REGION_QUEUE, "RTPHELPER_HOSTS_FILE": str(hosts), "RTPHELPER_STORAGE_MODE": "local",
        "RTPHELPER_CAPTURE_ROOT": str(desk.captures), "RTPHELPER_SERVE_URL": desk.serve_url,
        "RTPHELPER_SERVE_SECRET": SERVE_SECRET, "RTPHELPER_SERVE_ADDRESS": desk.serve_url.removeprefix("http://")}
    before = _online_workers(prefect_stack)
    procs: list[subprocess.Popen] = []
    with desk.worker_log.open("w") as log, (tmp_path / "serve.log").open("w") as serve_log:
        try:
            procs.append(subprocess.Popen(_make(prefect_stack.clone, "worker"), env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            procs.append(subprocess.Popen([sys.executable, "-m", "rtpcore.cli", "serve"], cwd=prefect_stack.clone,
                                          env=env | {"PYTHONPATH": str(prefect_stack.clone)}, stdout=serve_log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            _wait_region_desk(prefect_stack, procs, before, desk)
            yield desk
        finally:
            for proc in reversed(procs):
                stop_group(proc)
