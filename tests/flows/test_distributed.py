"""Issue 12: the correlate-call flow's per-file filter tasks on a real local Dask cluster (scheduler + 2 workers)."""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import load_truth
from tests.flows.dask_cluster import LocalCluster, filter_runs_per_worker, local_dask_cluster

WORKERS = 2
VARIANT = "rolling"          # 7 rolling chunks: enough files for both workers


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """`dask scheduler` + 2 `dask worker` processes on loopback (1 process, 1 thread each) reporting to the harness."""
    pytest.importorskip("distributed")
    from prefect.settings import PREFECT_API_URL

    with local_dask_cluster(WORKERS, tmp_path_factory.mktemp("dask-logs"), str(PREFECT_API_URL.value())) as cluster:
        yield cluster


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.pcap"))}


def _correlate(folder: Path, out: Path):
    from flows.correlate_call import correlate_call

    return correlate_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound", media=[str(folder / "media")],
                          output_folder=str(out), return_state=True)


def test_filter_tasks_run_on_the_cluster_and_outputs_match_in_process(
    generated, tmp_path: Path, dask_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = generated(VARIANT)
    truth = load_truth(folder)
    files = sorted((folder / "media").glob("*.pcap"))   # not the chunk indexes cached beside them
    assert len(files) >= WORKERS

    monkeypatch.delenv("RTPHELPER_CLUSTER_ADDRESS", raising=False)
    local = _correlate(folder, tmp_path / "local")
    assert local.is_completed(), local

    before = filter_runs_per_worker(dask_cluster.address)
    monkeypatch.setenv("RTPHELPER_CLUSTER_ADDRESS", dask_cluster.address)
    monkeypatch.setenv("RTPHELPER_DISTRIBUTED_MIN_CHUNKS", "1")
    remote = _correlate(folder, tmp_path / "cluster")
    assert remote.is_completed(), remote
    after = filter_runs_per_worker(dask_cluster.address)

    # Every raw file was filtered by a cluster worker process (not this one), and both workers took part.
    assert set(after) == dask_cluster.worker_pids and os.getpid() not in after
    ran = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert sum(ran.values()) == len(files), ran
    assert all(n > 0 for n in ran.values()), ran

    local_out, cluster_out = _outputs(tmp_path / "local"), _outputs(tmp_path / "cluster")
    assert {"combined/media_raw.pcap", "combined/SIP_plus_media_decrypted.pcap"} <= {
        Path(k).parent.name + "/" + Path(k).name for k in cluster_out}
    assert cluster_out.keys() == local_out.keys()
    for name, data in local_out.items():
        assert cluster_out[name] == data, f"{name} differs between the cluster and the in-process run"
    doc = remote.result()
    assert {s["packets"] for leg in doc["legs"] for s in leg["streams"]} >= {s["packets"] for s in truth["streams"]}


def test_unanswering_cluster_fails_fast_naming_the_address(
    generated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.distributed as dist

    folder = generated(VARIANT)
    deadline = 2.0
    with socket.socket() as blackhole:   # accepts TCP (backlog) and never answers: the worst case
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        address = f"tcp://127.0.0.1:{blackhole.getsockname()[1]}"
        monkeypatch.setattr(dist, "CLUSTER_CONNECT_SECONDS", deadline)
        monkeypatch.setenv("RTPHELPER_CLUSTER_ADDRESS", address)
        monkeypatch.setenv("RTPHELPER_DISTRIBUTED_MIN_CHUNKS", "1")
        began = time.monotonic()
        state = _correlate(folder, tmp_path / "out")
        took = time.monotonic() - began
    assert state.is_failed(), state
    message = str(state.message) + repr(state.result(raise_on_failure=False))
    assert address in message and "RTPHELPER_CLUSTER_ADDRESS" in message and "in-process" in message, message
    assert took < deadline + 30, took
    assert not (tmp_path / "out" / "combined").exists()   # nothing written: the staging folder went away
