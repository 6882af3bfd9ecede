"""A real local Dask cluster for tests and bench/distributed_bench.py: `dask scheduler` + N `dask worker` processes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")
START_SECONDS = 60
STOP_SECONDS = 15


@dataclass(frozen=True, slots=True)
class LocalCluster:
    """The scheduler's address and the worker processes' pids (each worker runs its tasks in its own process)."""

    address: str
    worker_pids: frozenset[int]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def local_dask_cluster(workers: int, logs: Path, api_url: str, *, cwd: Path = ROOT,
                       env: Mapping[str, str] | None = None) -> Iterator[LocalCluster]:
    """Loopback scheduler + `workers` single-thread worker processes (no nanny) running this checkout's code;
    cwd and env (added to this process's environment) for workers that must not see what the test sees."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT), "PREFECT_API_URL": api_url}
    procs: list[subprocess.Popen] = []
    with ExitStack() as files:
        def start(name: str, *args: str) -> None:
            log = files.enter_context(open(logs / f"{name}.log", "w"))
            procs.append(subprocess.Popen([str(DASK), *args, "--no-dashboard"], cwd=cwd, env=env,
                                          stdout=subprocess.DEVNULL, stderr=log))
        try:
            start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1])
            for i in range(workers):
                start(f"worker{i}", "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-nanny",
                      "--host", "127.0.0.1", "--name", f"w{i}")
            with Client(address, timeout=START_SECONDS) as client:
                client.wait_for_workers(workers, timeout=START_SECONDS)
            yield LocalCluster(address, frozenset(p.pid for p in procs[1:]))
        finally:
            _stop(procs)


def filter_runs_per_worker(address: str) -> dict[int, int]:
    """{worker pid: filter-raw-file tasks it executed}, read from the workers' own transition logs."""
    from distributed import Client

    def count(dask_worker) -> tuple[int, int]:  # runs inside each worker
        keys = {str(entry[0]) for entry in dask_worker.state.log if "filter" in str(entry[0])}
        return os.getpid(), len(keys)

    with Client(address, timeout=START_SECONDS) as client:
        return dict(client.run(count).values())
