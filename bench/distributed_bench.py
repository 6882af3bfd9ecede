"""Issue 12: the correlate-call flow with its filter tasks in-process vs on a local 2-worker Dask cluster (2 cores).

    .venv/bin/python bench/distributed_bench.py [--repeat N] [--engines-only]

First the engine choice, measured: Dask (distributed.LocalCluster) and, when `ray` is importable, Ray — import
time, start of 2 workers, per-task overhead over 200 trivial tasks, resident memory of the whole cluster.
Then the bench set (bench/gen_media.py, 2 × 256 MiB) through the real correlate-call flow under one temporary
Prefect server: in-process and with RTPHELPER_CLUSTER_ADDRESS at a loopback `dask scheduler` + 2 `dask worker`
processes (1 thread each), round-robin, best of N, outputs compared byte for byte.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import gen_media  # noqa: E402

WORKERS = 2
TRIVIAL_TASKS = 200
RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "/ray/", "default_worker.py")   # ps args of a local Ray
DIRECTION = "inbound"


def _pid(_: int) -> int:
    return os.getpid()


def _cluster_rss(root_pid: int, others: tuple[str, ...] = ()) -> int:
    """RSS of this process, its children and (for Ray's daemons, not our children) processes whose args match."""
    import psutil

    me = psutil.Process(root_pid)
    procs = {p.pid: p for p in [me, *me.children(recursive=True)]}
    for p in psutil.process_iter(["cmdline"]):
        if others and any(k in " ".join(p.info["cmdline"] or ()) for k in others):
            procs.setdefault(p.pid, p)
    return sum(p.memory_info().rss for p in procs.values())


def engine_dask() -> dict[str, float]:
    began = time.perf_counter()
    from distributed import Client, LocalCluster

    imported = time.perf_counter()
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        started = time.perf_counter()
        client.gather(client.map(_pid, range(4), pure=False))
        warm = time.perf_counter()
        pids = set(client.gather(client.map(_pid, range(TRIVIAL_TASKS), pure=False)))
        done = time.perf_counter()
        rss = _cluster_rss(os.getpid())
    return {"import_s": imported - began, "start_s": started - imported, "per_task_ms": (done - warm) / TRIVIAL_TASKS * 1e3,
            "workers_used": len(pids), "rss_mib": rss / 2**20}


def engine_ray() -> dict[str, float]:
    began = time.perf_counter()
    import ray

    imported = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        remote_pid = ray.remote(num_cpus=1)(_pid)
        ray.get([remote_pid.remote(i) for i in range(4)])
        warm = time.perf_counter()
        pids = set(ray.get([remote_pid.remote(i) for i in range(TRIVIAL_TASKS)]))
        done = time.perf_counter()
        rss = _cluster_rss(os.getpid(), RAY_PROCESSES)
    finally:
        ray.shutdown()
    return {"import_s": imported - began, "start_s": started - imported, "per_task_ms": (done - warm) / TRIVIAL_TASKS * 1e3,
            "workers_used": len(pids), "rss_mib": rss / 2**20}


def engines() -> dict[str, dict[str, float] | str]:
    """Each engine in a fresh interpreter (import cost counts once, no state shared)."""
    out: dict[str, dict[str, float] | str] = {}
    for name in ("dask", "ray"):
        done = subprocess.run([sys.executable, __file__, "--engine", name], capture_output=True, text=True, cwd=ROOT)
        lines = done.stdout.strip().splitlines()
        out[name] = json.loads(lines[-1]) if done.returncode == 0 and lines else \
            f"not measured ({(done.stderr.strip().splitlines() or ['?'])[-1]}; `pip install ray` to compare)"
    return out


def flows(repeat: int) -> dict[str, object]:
    """Best-of-N flow runs in-process and on the cluster, interleaved; outputs compared byte for byte."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows.correlate_call import correlate_call
    from tests.flows.dask_cluster import filter_runs_per_worker, local_dask_cluster

    ds = gen_media.generate()
    media = [str(m) for m in ds.media]
    times: dict[str, list[float]] = {"in-process": [], "dask 2 workers": []}
    with tempfile.TemporaryDirectory(prefix="distributed-bench-") as tmp_name, \
            prefect_test_harness(server_startup_timeout=120):
        tmp = Path(tmp_name)
        with local_dask_cluster(WORKERS, tmp, str(PREFECT_API_URL.value())) as cluster:
            for _ in range(repeat):
                for name, address in (("in-process", None), ("dask 2 workers", cluster.address)):
                    if address:
                        os.environ.update(RTPHELPER_CLUSTER_ADDRESS=address, RTPHELPER_DISTRIBUTED_MIN_CHUNKS="1")
                    else:
                        os.environ.pop("RTPHELPER_CLUSTER_ADDRESS", None)
                    began = time.perf_counter()
                    state = correlate_call(sip_pcap=str(ds.sip), direction=DIRECTION, media=media,
                                           output_folder=str(tmp / name), overwrite=True, return_state=True)
                    times[name].append(time.perf_counter() - began)
                    if not state.is_completed():
                        raise SystemExit(f"{name}: {state.message}")
            ran = filter_runs_per_worker(cluster.address)
        outs = {name: {p.relative_to(tmp / name): p.read_bytes() for p in sorted((tmp / name).rglob("*.pcap"))}
                for name in times}
    identical = outs["in-process"] == outs["dask 2 workers"] and bool(outs["in-process"])
    return {"times": times, "best": {k: min(v) for k, v in times.items()}, "identical_outputs": identical,
            "filter_tasks_per_worker": sorted(ran.values()), "files": len(media),
            "bytes": sum(Path(m).stat().st_size for m in media)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines-only", action="store_true")
    ap.add_argument("--engine", choices=("dask", "ray"), help=argparse.SUPPRESS)   # one engine, in a child
    args = ap.parse_args(argv)
    if args.engine:
        print(json.dumps(engine_dask() if args.engine == "dask" else engine_ray()))
        return 0
    print(f"load average at start: {os.getloadavg()}")
    measured = engines()
    for name, m in measured.items():
        if isinstance(m, str):
            print(f"{name:5}: {m}")
        else:
            print(f"{name:5}: import {m['import_s']:.2f} s, start {WORKERS} workers {m['start_s']:.2f} s, "
                  f"per task {m['per_task_ms']:.2f} ms, cluster RSS {m['rss_mib']:.0f} MiB")
    if args.engines_only:
        return 0
    r = flows(args.repeat)
    best = r["best"]
    assert isinstance(best, dict)
    ratio = best["dask 2 workers"] / best["in-process"]
    print(f"correlate-call flow, {r['files']} files, {int(r['bytes']) / 2**20:.0f} MiB: in-process {best['in-process']:.2f} s, "
          f"Dask 2 workers {best['dask 2 workers']:.2f} s ({ratio:.2f}x in-process); outputs identical: "
          f"{r['identical_outputs']}; filter tasks per worker {r['filter_tasks_per_worker']}")
    print(json.dumps({"engines": measured, "flows": r, "load": os.getloadavg()}, default=str))
    return 0 if r["identical_outputs"] else 1


if __name__ == "__main__":
    sys.exit(main())
