"""A session folder whose chunks the spool cap removed after upload still correlates in full: the call's part of
those chunks is range-read from S3 (real moto_server, real upload queue). A chunk in the call's time that is
neither on disk nor uploaded stops the run by name; a missing chunk outside the call's time does not matter."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtpcore.capture.manifest import MANIFEST_NAME, Manifest
from rtpcore.pcap.index import load_index
from rtpcore.pcap.rolling import ChunkInfo
from rtpcore.pipeline import InProcessRunner, correlate, make_job, run_steps
from rtpcore.settings import load_settings
from rtpcore.storage.keys import SessionLocation
from rtpcore.storage.queue import UploadQueue
from tests.storage.conftest import BUCKET, MotoServer, free_port, point_cli_at, s3_storage

BENCH = Path(__file__).resolve().parents[2] / "bench"
SESSION_KEY = "captures/prod-eu/ticket-12/20260115_100000"
MIB = 1024 * 1024


@pytest.fixture
def session(tmp_path: Path):  # noqa: ANN201 - bench.session_gen.Session
    """40 MB on 2 hosts in 4 MB indexed chunks, the call in the middle, and the manifest a capture writes."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import session_gen

    s = session_gen.generate(tmp_path / "ticket-12" / "20260115_100000", 40 * 10**6, hosts=2, chunk_bytes=4 * 10**6,
                             call_seconds=20.0, streams=5, log=lambda *_: None)
    with Manifest.for_session(s.root) as manifest:
        for info in chunk_infos(s.chunks):
            manifest.append_chunk(info.name.rsplit("-", 1)[0], "eth0", info)
    return s


def chunk_infos(chunks: tuple[Path, ...]) -> list[ChunkInfo]:
    infos = []
    for n, path in enumerate(chunks, 1):
        index, problem = load_index(path, cache=False)
        assert problem is None, f"{path}: {problem}"
        infos.append(ChunkInfo(name=path.name, path=path, index=n, packets=index.packets, bytes=index.bytes,
                               first_ns=index.first_ns, last_ns=index.last_ns,
                               sha256=hashlib.sha256(path.read_bytes()).hexdigest(), closed_reason="size"))
    return infos


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("combined", "decrypted")
            for p in sorted((out / sub).glob("*.pcap"))}


def upload_and_evict(session, server: MotoServer) -> list[str]:  # noqa: ANN001 - bench.session_gen.Session
    """What an S3-mode capture does: queue each closed chunk, upload it, then drop local copies over a 1 MiB cap."""
    location = SessionLocation(prefix="captures", environment="prod-eu", folder="ticket-12",
                               timestamp=session.root.name)
    queue = UploadQueue(session.root, s3_storage(server), location, spool_max_bytes=MIB)
    queue.store.save_location(location)
    with queue:
        for info in chunk_infos(session.chunks):
            queue.on_chunk_closed(info)
        assert queue.flush(timeout=60), "the uploads did not finish"
    return sorted(p.name for p in session.chunks if not p.exists())


def test_chunks_removed_after_upload_are_range_read_from_s3_and_the_outputs_are_whole(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    point_cli_at(monkeypatch, moto_server.endpoint)
    full = tmp_path / "full"
    copy = tmp_path / "copy"
    shutil.copytree(session.root / "raw", copy)
    correlate(session.sip, "inbound", [copy], full, settings=load_settings({}).model_copy(update={"media_select": False}))

    evicted = upload_and_evict(session, moto_server)
    # The cap is enforced after each upload, so the newest chunk may stay: a folder of local and removed chunks.
    assert len(evicted) >= len(session.chunks) - 2, f"the 1 MiB spool cap removed only {evicted}"
    # As the CLI and the flows run it (correlate() leaves publishing out).
    report = run_steps(make_job(session.sip, "inbound", [session.root / "raw"], tmp_path / "out",
                                settings=load_settings()), InProcessRunner()).report

    assert outputs(tmp_path / "out") == outputs(full) and outputs(full)
    media = report.to_json()["media_read"]
    read = [c for c in media["files"] if c["how"] != "skipped"]
    from_s3 = [c for c in read if c["source"].startswith("s3://")]
    assert from_s3 and all("removed locally after its upload" in c["why"] for c in from_s3)
    assert {Path(c["source"]).name for c in from_s3} <= set(evicted)
    assert sum(c["bytes_read"] for c in from_s3) < sum(c["bytes"] for c in from_s3), "only the call's ranges"
    assert len(from_s3) < len(evicted), "removed chunks outside the call's time are not fetched"

    # S3 mode and the session's queue knows its place in the bucket: the outputs are published beside the chunks.
    stored = moto_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{SESSION_KEY}/combined/")
    published = {o["Key"].rsplit("/", 1)[1] for o in stored.get("Contents", [])}
    assert {"media_raw.pcap", "media_decrypted.pcap", "SIP_plus_media_decrypted.pcap"} <= published
    body = moto_server.client().get_object(Bucket=BUCKET, Key=f"{SESSION_KEY}/combined/media_decrypted.pcap")["Body"]
    assert body.read() == (tmp_path / "out" / "combined" / "media_decrypted.pcap").read_bytes()


def test_removed_chunks_with_s3_unreachable_fail_by_name_and_write_nothing(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = point_cli_at(monkeypatch, moto_server.endpoint)
    upload_and_evict(session, moto_server)
    env.update({"RTPHELPER_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "RTPHELPER_S3_CONNECT_TIMEOUT_SECONDS": "1",
                "RTPHELPER_S3_READ_TIMEOUT_SECONDS": "1", "RTPHELPER_S3_REQUEST_MAX_ATTEMPTS": "1"})
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "rtpcore.cli", "correlate", "--sip", str(session.sip), "--direction",
                           "inbound", "--media", str(session.root / "raw"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env}, cwd=tmp_path)

    assert done.returncode != 0
    assert "removed locally after its upload" in done.stderr and "copy the chunks back" in done.stderr
    assert str(session.root / "raw") in done.stderr and ".pcap" in done.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in done.stderr
    assert not list(out.glob("combined/*.pcap")), "no outputs from a run that could not read the call's media"


def test_a_lost_chunk_in_the_call_stops_the_run_and_one_outside_it_does_not(
    session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in list(os.environ):
        if key.startswith(("RTPHELPER_", "AWS_")):
            monkeypatch.delenv(key)
    infos = chunk_infos(session.chunks)
    call = [i for i in infos if i.name.startswith(session.call_host)]
    middle = call[len(call) // 2]
    first = min(infos, key=lambda i: i.first_ns or 0)
    assert first is not middle
    first.path.unlink()   # the session's first chunk: minutes before the call
    run = [sys.executable, "-m", "rtpcore.cli", "correlate", "--sip", str(session.sip), "--direction", "inbound",
           "--media", str(session.root / "raw")]
    ok = subprocess.run([*run, "--out", str(tmp_path / "ok")], capture_output=True, text=True, timeout=120,
                        cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr

    middle.path.unlink()
    lost = subprocess.run([*run, "--out", str(tmp_path / "lost")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert lost.returncode == 2
    assert middle.name in lost.stderr and "not uploaded to S3" in lost.stderr and first.name not in lost.stderr
    assert not list((tmp_path / "lost").glob("combined/*.pcap"))
    assert (session.root / MANIFEST_NAME).is_file()


def test_the_manifest_name_is_the_captures() -> None:
    from rtpcore.storage import uploaded as absent

    assert absent.MANIFEST_NAME == MANIFEST_NAME
