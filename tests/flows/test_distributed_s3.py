"""Issue 12, point 3: cluster workers read the S3 chunks they filter themselves — a real local Dask cluster
(scheduler + 2 worker processes, started in a folder of their own) against moto_server on loopback; outputs
byte-identical to the in-process run, nothing fetched by the flow's process, the workers' temp folders cleaned
up, no credential in any log."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtpcore.pcap.index import INDEX_SUFFIX
from rtpcore.storage.download import RANGES_DIR
from tests.flows.dask_cluster import LocalCluster, filter_runs_per_worker, local_dask_cluster
from tests.small_session import small_session
from tests.storage.conftest import ACCESS_KEY, BUCKET, SECRET_KEY, MotoServer, point_cli_at

SESSION = "captures/prod-eu/ticket-12/20260116_090000"
WORKERS = 2


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path, Path]]:
    """2 workers whose working directory and TMPDIR are a folder of their own; S3 keys in their own environment."""
    pytest.importorskip("distributed")
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("worker-home")
    temp = home / "tmp"
    temp.mkdir()
    logs = tmp_path_factory.mktemp("dask-s3-logs")
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "TMPDIR": str(temp)}
    with local_dask_cluster(WORKERS, logs, str(PREFECT_API_URL.value()), cwd=home, env=env) as cluster:
        yield cluster, temp, logs


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("combined", "decrypted")
            for p in sorted((out / sub).glob("*.pcap"))}


def test_workers_range_read_s3_chunks_themselves_and_outputs_match_in_process(
    s3_cluster: tuple[LocalCluster, Path, Path], moto_server: MotoServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.correlate_call import correlate_call

    cluster, worker_temp, logs = s3_cluster
    session = small_session(tmp_path / "session")
    client = moto_server.client()
    for path in [*session.chunks, *(c.with_name(c.name + INDEX_SUFFIX) for c in session.chunks)]:
        client.put_object(Bucket=BUCKET, Key=f"{SESSION}/raw/{path.name}", Body=path.read_bytes())
    point_cli_at(monkeypatch, moto_server.endpoint)
    monkeypatch.chdir(tmp_path)
    url = f"s3://{BUCKET}/{SESSION}/"

    def run(out: Path):  # noqa: ANN202 - a prefect State
        return correlate_call(sip_pcap=str(session.sip), direction="inbound", media=[url], output_folder=str(out),
                              return_state=True)

    monkeypatch.setenv("RTPHELPER_FLOW_SUMMARY", "false")   # the in-process run leaves no summaries behind
    local = run(tmp_path / "local")
    assert local.is_completed(), local
    assert list((tmp_path / "local" / RANGES_DIR).glob("*.pcap"))   # in-process: the flow's process range-reads

    monkeypatch.setenv("RTPHELPER_FLOW_SUMMARY", "true")
    monkeypatch.setenv("RTPHELPER_CLUSTER_ADDRESS", cluster.address)
    monkeypatch.setenv("RTPHELPER_DISTRIBUTED_MIN_CHUNKS", "1")
    before = filter_runs_per_worker(cluster.address)
    remote = run(tmp_path / "cluster")
    assert remote.is_completed(), remote
    after = filter_runs_per_worker(cluster.address)

    doc = remote.result()
    read = [f for f in doc["media_read"]["files"] if f["how"] != "skipped"]
    ran = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert set(after) == cluster.worker_pids and os.getpid() not in after
    assert sum(ran.values()) == len(read) >= WORKERS, ran
    assert not (tmp_path / "cluster" / RANGES_DIR).exists()           # the flow's process fetched no chunk bytes
    assert not list(worker_temp.glob("rtphelper-chunk-*"))            # the workers' fetch folders are gone
    local_out, cluster_out = _outputs(tmp_path / "local"), _outputs(tmp_path / "cluster")
    assert {"combined/media_raw.pcap", "combined/SIP_plus_media_decrypted.pcap"} <= cluster_out.keys()
    assert cluster_out == local_out
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{SESSION}/raw/")["Contents"]}
    assert {f"{SESSION}/raw/{Path(f['source']).name}.flows.json" for f in read} <= keys   # summaries from the workers
    for log in logs.glob("*.log"):
        assert SECRET_KEY not in log.read_text(errors="replace"), log
    assert SECRET_KEY not in str(doc)
