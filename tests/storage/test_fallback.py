"""Fallback to local when S3 hangs, stops or refuses credentials; resume flush; import of a stored session."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from rtpcore.settings import Settings, load_settings
from rtpcore.storage import (
    StorageAuthError,
    StorageNotFoundError,
    download_session,
    flush_session,
    open_session_storage,
)
from rtpcore.storage.queue import QueueStore
from tests.storage.conftest import (
    BUCKET,
    REGION,
    MotoServer,
    new_session,
    s3_storage,
    stored_sha256,
    write_chunk,
)

KIB = 1024
FAST = {"connect_timeout": 0.5, "read_timeout": 0.5, "max_attempts": 1}


def _settings(server: MotoServer, tmp_path: Path) -> Settings:
    return load_settings({"RTPHELPER_S3_ENDPOINT": server.endpoint, "RTPHELPER_S3_REGION": REGION,
                          "RTPHELPER_S3_PATH": f"{BUCKET}/captures", "RTPHELPER_S3_UPLOAD_MAX_ATTEMPTS": "3"},
                         base_dir=tmp_path)


def _wait(predicate, timeout: float = 15.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_hung_endpoint_falls_back_then_flush_uploads_everything(moto_private: MotoServer, tmp_path: Path) -> None:
    paths, location = new_session(tmp_path)
    session = open_session_storage(_settings(moto_private, tmp_path), paths.root, location,
                                   storage=s3_storage(moto_private, **FAST), probe_interval=0.3)
    try:
        chunks = [write_chunk(paths.raw, f"m-{n:04d}.pcap", 30 * KIB, index=n) for n in range(1, 11)]
        for info in chunks[:3]:
            session.on_chunk_closed(info)
        assert session.flush(timeout=20).ok
        moto_private.freeze()
        try:
            for info in chunks[3:]:
                session.on_chunk_closed(info)
            assert _wait(lambda: session.summary()["storage"] == "local-fallback")
            summary = session.summary()
            assert summary["switched_at"] and "unreachable" in summary["why"]
            assert moto_private.endpoint in summary["why"]
            assert all(info.path.exists() for info in chunks)  # nothing lost, nothing removed
            assert not session.flush(timeout=1).ok  # still down: the flush reports what is left
        finally:
            moto_private.thaw()
        report = session.flush(timeout=30)
    finally:
        session.close()
    assert report.ok and report.left == ()
    assert report.storage.storage == "s3" and report.storage.switched_at and report.storage.restored_at
    for info in chunks:
        assert stored_sha256(moto_private, location.key_for(f"raw/{info.name}")) == info.sha256
    assert [i.state for i in QueueStore(paths.root).load_all()] == ["done"] * len(chunks)


def test_stopped_server_then_resume_flush_after_restart(moto_private: MotoServer, tmp_path: Path) -> None:
    settings = _settings(moto_private, tmp_path)
    paths, location = new_session(tmp_path)
    session = open_session_storage(settings, paths.root, location, storage=s3_storage(moto_private, **FAST),
                                   probe_interval=60)
    moto_private.stop()
    chunks = [write_chunk(paths.raw, f"s-{n:04d}.pcap", 10 * KIB, index=n) for n in range(1, 5)]
    for info in chunks:
        session.on_chunk_closed(info)
    assert _wait(lambda: session.summary()["storage"] == "local-fallback")
    session.close()
    down = flush_session(paths.root, settings=settings, storage=s3_storage(moto_private, **FAST), timeout=5)
    assert not down.ok and sorted(down.left) == [f"raw/{i.name}" for i in chunks]
    assert down.storage.storage == "local-fallback" and "unreachable" in (down.storage.why or "")

    moto_private.restart()  # same port, fresh (empty) bucket
    late = paths.combined / "media_raw.pcap"  # never queued: the resume flush finds it by scanning
    late.write_bytes(b"late output")
    report = flush_session(paths.root, settings=settings, storage=s3_storage(moto_private, **FAST), timeout=30)
    assert report.ok and report.uploaded == 5 and report.left == ()
    for info in chunks:
        assert stored_sha256(moto_private, location.key_for(f"raw/{info.name}")) == info.sha256
    assert stored_sha256(moto_private, location.key_for("combined/media_raw.pcap")) == \
        hashlib.sha256(b"late output").hexdigest()


def test_wrong_credentials_fall_back_and_flush_raises_keeping_files(moto_private: MotoServer,
                                                                    tmp_path: Path) -> None:
    moto_private.enable_auth()
    settings = _settings(moto_private, tmp_path)
    paths, location = new_session(tmp_path)
    bad = {"access_key": "AKIAWRONGWRONGWRONG1", "secret_key": "wrong", **FAST}
    session = open_session_storage(settings, paths.root, location, storage=s3_storage(moto_private, **bad),
                                   probe_interval=60, spool_max_bytes=1)
    chunks = [write_chunk(paths.raw, f"a-{n:04d}.pcap", 8 * KIB, index=n) for n in range(1, 4)]
    for info in chunks:
        session.on_chunk_closed(info)
    summary = session.summary()
    session.close()
    assert summary["storage"] == "local-fallback" and "InvalidAccessKeyId" in summary["why"]
    with pytest.raises(StorageAuthError) as err:
        flush_session(paths.root, settings=settings, storage=s3_storage(moto_private, **bad), timeout=5)
    assert str(err.value).startswith(f"S3 rejected the credentials (InvalidAccessKeyId) for bucket {BUCKET} at "
                                     f"endpoint {moto_private.endpoint}; check AWS_ACCESS_KEY_ID")
    assert all(info.path.read_bytes() and info.path.exists() for info in chunks)  # nothing deleted, even over cap
    assert [i.state for i in QueueStore(paths.root).load_all()] == ["pending"] * 3


def test_download_session_round_trip(moto_server: MotoServer, tmp_path: Path) -> None:
    paths, location = new_session(tmp_path / "root", environment="prod-eu", folder="team/t-9")
    storage = s3_storage(moto_server)
    chunks = [write_chunk(paths.raw, f"eu-h1-{n:04d}.pcap", 12 * KIB, index=n) for n in (1, 2)]
    sip = paths.uploads / "call.pcap"
    sip.write_bytes(b"sip capture bytes")
    paths.media_raw.parent.mkdir(parents=True, exist_ok=True)
    paths.media_raw.write_bytes(b"combined output")
    for path in [c.path for c in chunks] + [sip, paths.media_raw]:
        storage.put_file(path, location.key_for(path.relative_to(paths.root).as_posix()))

    dest = tmp_path / "import"
    report = download_session(storage, f"s3://{BUCKET}/{location.key_prefix}/", dest)
    got = sorted(p.relative_to(dest).as_posix() for p in report.files)
    assert got == ["raw/eu-h1-0001.pcap", "raw/eu-h1-0002.pcap", "uploads/call.pcap"]
    for info in chunks:
        assert hashlib.sha256((dest / "raw" / info.name).read_bytes()).hexdigest() == info.sha256
    assert (dest / "uploads/call.pcap").read_bytes() == b"sip capture bytes"
    assert not (dest / "combined").exists()
    again = download_session(storage, ("prod-eu", f"team/t-9/{paths.root.name}"), dest)
    assert again.files == () and len(again.skipped) == 3
    only_raw = download_session(storage, f"s3://{BUCKET}/{location.key_prefix}/raw", tmp_path / "raw-only")
    assert sorted(p.name for p in only_raw.files) == ["eu-h1-0001.pcap", "eu-h1-0002.pcap"]
    with pytest.raises(StorageNotFoundError, match="no raw/ or uploads/ objects"):
        download_session(storage, ("prod-eu", "team/t-9/19990101_000000"), tmp_path / "none")
