"""A session folder whose chunks the spool cap removed after upload still correlates in full: the call's part of
those chunks is range-read from S3 (real moto_server, real upload queue). A chunk in the call's time that is
neither on disk nor uploaded stops the run by name; a missing chunk outside the call's time does not matter."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rtpcore.capture.manifest import MANIFEST_NAME, Manifest
from rtpcore.pcap.index import load_index
from rtpcore.pcap.rolling import ChunkInfo
from rtpcore.pipeline import InProcessRunner, correlate, make_job, run_steps
from rtpcore.settings import load_settings
from rtpcore.storage.keys import SessionLocation
from rtpcore.storage.queue import DONE, FAILED, QueueStore, UploadItem, UploadQueue
from rtpcore.storage.uploaded import MissingChunkError, absent_chunks
from tests.small_session import small_session
from tests.storage.conftest import BUCKET, MotoServer, free_port, point_cli_at, s3_storage

SESSION_KEY = "captures/prod-eu/ticket-12/20260115_100000"
MIB = 1024 * 1024


@pytest.fixture
def session(tmp_path: Path):  # noqa: ANN201 - bench.session_gen.Session
    """40 MB on 2 hosts in 4 MB indexed chunks, the call in the middle, and the manifest a capture writes."""
    s = small_session(tmp_path / "ticket-12" / "20260115_100000")
    with Manifest.for_session(s.root) as manifest:
        manifest.start(hosts=["eu-west-1-media-1", "eu-west-1-media-2"])
        for info in chunk_infos(s.chunks):
            manifest.append_chunk(info.name.rsplit("-", 1)[0], "eth0", info)
        manifest.finish()
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


def test_removed_chunks_with_s3_hung_fail_within_the_deadlines(
    session, moto_private: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A black-holed S3 (the endpoint accepts and never answers) ends the run on RTPHELPER_S3_* deadlines."""
    env = point_cli_at(monkeypatch, moto_private.endpoint)
    upload_and_evict(session, moto_private)
    env.update({"RTPHELPER_S3_CONNECT_TIMEOUT_SECONDS": "1", "RTPHELPER_S3_READ_TIMEOUT_SECONDS": "1",
                "RTPHELPER_S3_REQUEST_MAX_ATTEMPTS": "2"})
    out = tmp_path / "out"
    moto_private.freeze()
    try:
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "rtpcore.cli", "correlate", "--sip", str(session.sip),
                               "--direction", "inbound", "--media", str(session.root / "raw"), "--out", str(out)],
                              capture_output=True, text=True, timeout=120, env={**os.environ, **env}, cwd=tmp_path)
        took = time.monotonic() - began
    finally:
        moto_private.thaw()
    assert done.returncode == 2, done.stderr
    assert "removed locally after its upload" in done.stderr and "copy the chunks back" in done.stderr
    print(f"hung S3: the correlation failed after {took:.1f} s")
    assert took < 40, f"a hung S3 held the correlation {took:.1f} s"
    assert env["AWS_SECRET_ACCESS_KEY"] not in done.stderr
    assert not list(out.glob("combined/*.pcap"))


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


def test_the_manifest_and_queue_names_are_the_captures() -> None:
    """uploaded.py spells them itself (a folder without them must not load the capture and queue modules)."""
    from rtpcore.storage import uploaded
    from rtpcore.storage.queue import LOCATION_FILE, QUEUE_DIR

    assert uploaded.MANIFEST_NAME == MANIFEST_NAME
    assert uploaded.QUEUE_LOCATION == f"{QUEUE_DIR}/{LOCATION_FILE}"


# -- edge cases a support engineer hits ------------------------------------------------------------------------


def call_chunk(session) -> ChunkInfo:  # noqa: ANN001 - bench.session_gen.Session
    """A chunk in the middle of the call (the 1 MiB cap removes it after its upload)."""
    call = [i for i in chunk_infos(session.chunks) if i.name.startswith(session.call_host)]
    return call[len(call) // 2]


def run(session, media: list[Path], out: Path):  # noqa: ANN001, ANN201 - CorrelationReport
    return run_steps(make_job(session.sip, "inbound", media, out, settings=load_settings()), InProcessRunner()).report


def full_outputs(session, tmp_path: Path) -> dict[str, bytes]:  # noqa: ANN001
    copy = tmp_path / "copy"
    shutil.copytree(session.root / "raw", copy)
    correlate(session.sip, "inbound", [copy], tmp_path / "full",
              settings=load_settings({}).model_copy(update={"media_select": False}))
    return outputs(tmp_path / "full")


def test_a_torn_manifest_line_loses_no_uploaded_chunk_of_the_call(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The capture was killed while writing the middle chunk's record: the queue's record of it stands in."""
    point_cli_at(monkeypatch, moto_server.endpoint)
    full = full_outputs(session, tmp_path)
    middle = call_chunk(session)
    manifest = session.root / MANIFEST_NAME
    lines = manifest.read_bytes().splitlines(keepends=True)
    record = next(n for n, line in enumerate(lines) if json.loads(line).get("name") == middle.name)
    kept = [line for n, line in enumerate(lines) if n != record and json.loads(line).get("status") != "finished"]
    manifest.write_bytes(b"".join(kept) + lines[record][: len(lines[record]) // 2])   # torn mid-record
    assert Manifest.read(manifest).chunk(middle.name) is None
    assert middle.name in upload_and_evict(session, moto_server)

    with caplog.at_level(logging.WARNING, logger="rtpcore.storage.uploaded"):
        report = run(session, [session.root / "raw"], tmp_path / "out")
    assert outputs(tmp_path / "out") == full
    read = {Path(c["source"]).name for c in report.to_json()["media_read"]["files"] if c["how"] != "skipped"}
    assert middle.name in read
    assert any("torn last line" in r.getMessage() and str(manifest) in r.getMessage() for r in caplog.records)


def test_a_call_chunk_whose_upload_failed_and_whose_file_is_gone_stops_the_run_by_name(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Queue item `failed` (the file stayed local), then someone deleted the file to free disk."""
    point_cli_at(monkeypatch, moto_server.endpoint)
    middle = call_chunk(session)
    upload_and_evict(session, moto_server)
    store = QueueStore(session.root)
    item = next(i for i in store.load_all() if i.path == f"raw/{middle.name}")
    store.save(replace(item, state=FAILED, last_error="503 Slow Down after 5 attempts"))
    with pytest.raises(MissingChunkError) as raised:
        run(session, [session.root / "raw"], tmp_path / "out")
    message = str(raised.value)
    assert str(middle.path) in message and "its upload is failed: 503 Slow Down after 5 attempts" in message
    assert "not uploaded to S3" in message and "restore the file(s) into raw/" in message
    assert not list((tmp_path / "out").glob("combined/*.pcap"))


def test_an_object_of_another_size_under_the_chunks_key_is_not_read_as_the_call(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decision: an object whose size differs from the manifest's record is another upload over the capture's chunk
    (not the bytes the queue verified): the run stops naming both sizes, it does not correlate it."""
    from rtpcore.storage.base import StorageIntegrityError

    point_cli_at(monkeypatch, moto_server.endpoint)
    middle = call_chunk(session)
    data = middle.path.read_bytes()
    upload_and_evict(session, moto_server)
    key = f"{SESSION_KEY}/raw/{middle.name}"
    moto_server.client().put_object(Bucket=BUCKET, Key=key, Body=data + data[24:4024])   # 4000 bytes more
    with pytest.raises(StorageIntegrityError) as raised:
        run(session, [session.root / "raw"], tmp_path / "out")
    message = str(raised.value)
    assert str(middle.path) in message and f"{len(data)} bytes in {session.root / MANIFEST_NAME}" in message
    assert f"{len(data) + 4000} bytes at s3://{BUCKET}/{key}" in message and "another upload replaced it" in message
    assert not list((tmp_path / "out").glob("combined/*.pcap"))


def test_a_session_folder_given_as_its_root_reads_the_removed_chunks_too(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every chunk removed (the spool cap, then the last ones by hand after their upload): <session> as media."""
    point_cli_at(monkeypatch, moto_server.endpoint)
    full = full_outputs(session, tmp_path)
    upload_and_evict(session, moto_server)
    for path in session.chunks:
        path.unlink(missing_ok=True)
    run(session, [session.root], tmp_path / "out")
    assert outputs(tmp_path / "out") == full
    assert not list((session.root / "raw").glob("*.pcap")), "no chunk fetched from S3 is put into the session's raw/"


def test_a_session_root_with_chunks_left_in_raw_correlates(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    point_cli_at(monkeypatch, moto_server.endpoint)
    full = full_outputs(session, tmp_path)
    last = session.chunks[-1]
    data = last.read_bytes()
    upload_and_evict(session, moto_server)
    last.write_bytes(data)   # the cap may remove every chunk; here one is left in raw/
    report = run(session, [session.root], tmp_path / "out")
    assert outputs(tmp_path / "out") == full
    read = {Path(c["source"]).name for c in report.to_json()["media_read"]["files"] if c["how"] != "skipped"}
    assert read, "the session root's raw/ was read"


# -- absent_chunks on small hand-made sessions (no pcaps, no S3) --------------------------------------------------


def tiny_session(root: Path, names: list[str], *, finished: bool = True, state: str = DONE) -> Path:
    """A session folder whose manifest lists `names` (1 s each from t=100 s), all uploaded and none in raw/."""
    (root / "raw").mkdir(parents=True)
    store = QueueStore(root)
    with Manifest.for_session(root) as manifest:
        manifest.start(hosts=["h1"])
        for n, name in enumerate(names):
            first = (100 + n) * 10**9
            manifest.append_chunk("h1", "eth0", ChunkInfo(name=name, path=root / "raw" / name, index=n + 1, packets=10,
                                                          bytes=1000 + n, first_ns=first, last_ns=first + 10**9 - 1,
                                                          sha256="0" * 64, closed_reason="size"))
            store.create(UploadItem(id=f"{n:020d}-raw_{name}", path=f"raw/{name}", size=1000 + n, sha256=None,
                                    key=f"captures/e/t/{root.name}/raw/{name}", state=state, evictable=True,
                                    evicted=state == DONE))
        if finished:
            manifest.finish()
    return root


WINDOW = [(100 * 10**9, 110 * 10**9)]


def test_two_session_folders_each_report_their_own_chunks_and_one_given_twice_counts_once(tmp_path: Path) -> None:
    a = tiny_session(tmp_path / "t" / "20260101_100000", ["h1-0001.pcap", "h1-0002.pcap"])
    b = tiny_session(tmp_path / "t" / "20260101_110000", ["h1-0001.pcap"])
    found = absent_chunks([a / "raw", b, a], WINDOW)
    assert [(c.session, c.name, c.size) for c in found] == [
        (a, "h1-0001.pcap", 1000), (a, "h1-0002.pcap", 1001), (b, "h1-0001.pcap", 1000)]
    assert {c.session_key for c in found} == {"captures/e/t/20260101_100000", "captures/e/t/20260101_110000"}
    assert absent_chunks([a], [(200 * 10**9, 210 * 10**9)]) == [], "outside the call's time: not needed"


def test_a_running_capture_is_said_to_be_running(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    running = tiny_session(tmp_path / "t" / "20260101_100000", ["h1-0001.pcap"], finished=False)
    done = tiny_session(tmp_path / "t" / "20260101_110000", ["h1-0001.pcap"])
    with caplog.at_level(logging.WARNING, logger="rtpcore.storage.uploaded"):
        assert len(absent_chunks([done], WINDOW)) == 1
        assert not caplog.records
        assert len(absent_chunks([running], WINDOW)) == 1
    (record,) = caplog.records
    assert str(running / MANIFEST_NAME) in record.getMessage() and "still running" in record.getMessage()
    assert "correlate again once it has stopped" in record.getMessage()


def test_a_chunk_never_queued_is_named_as_such(tmp_path: Path) -> None:
    from rtpcore.storage.uploaded import fetch_absent

    root = tiny_session(tmp_path / "t" / "20260101_100000", ["h1-0001.pcap", "h1-0002.pcap"], state=FAILED)
    (root / ".upload-queue" / f"{1:020d}-raw_h1-0002.pcap.item.json").unlink()
    with pytest.raises(MissingChunkError) as raised:
        fetch_absent(absent_chunks([root], WINDOW), load_settings({}), tmp_path / "out", WINDOW)
    message = str(raised.value)
    assert f"{root / 'raw' / 'h1-0001.pcap'} (its upload is failed)" in message
    assert f"{root / 'raw' / 'h1-0002.pcap'} (never queued for upload)" in message


def test_a_chunk_deleted_from_the_bucket_is_named_as_gone_not_as_s3_down(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    point_cli_at(monkeypatch, moto_server.endpoint)
    middle = call_chunk(session)
    upload_and_evict(session, moto_server)
    moto_server.client().delete_object(Bucket=BUCKET, Key=f"{SESSION_KEY}/raw/{middle.name}")
    with pytest.raises(MissingChunkError) as raised:
        run(session, [session.root / "raw"], tmp_path / "out")
    message = str(raised.value)
    assert str(middle.path) in message and f"not in s3://{BUCKET}/{SESSION_KEY}/ any more" in message
    assert "deleted from the bucket" in message and "when S3 is reachable" not in message


def test_a_whole_chunk_fetched_for_a_session_correlated_in_place_does_not_land_in_its_raw(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its index missing in S3, the call's chunk is downloaded whole: not into <session>/raw/ (the outputs' folder is
    the session itself, as with correlate-call session=), where it would undo the spool cap and pass for captured."""
    point_cli_at(monkeypatch, moto_server.endpoint)
    full = full_outputs(session, tmp_path)
    middle = call_chunk(session)
    upload_and_evict(session, moto_server)
    moto_server.client().delete_object(Bucket=BUCKET, Key=f"{SESSION_KEY}/raw/{middle.name}.idx.json")
    report = run(session, [session.root / "raw"], session.root)
    assert outputs(session.root) == full
    whole = [c for c in report.to_json()["media_read"]["files"] if Path(c["source"]).name == middle.name]
    assert whole and "downloaded whole" in whole[0]["why"], whole
    assert not middle.path.exists(), "the fetched copy went into the session's raw/"
