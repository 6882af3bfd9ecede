"""Capture into S3 against real rpcapd and moto_server: chunks upload, an outage falls back, flush heals.

Traffic is UDP on 127.0.0.1 only, captured on lo through rpcapd.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rtpcore.pcap.index import INDEX_SUFFIX
from rtpcore.capture.engine import adhoc_target
from rtpcore.capture.manifest import MANIFEST_NAME, Manifest
from rtpcore.capture.runner import CaptureRequest, start_capture
from rtpcore.cli import main
from rtpcore.settings import Settings, load_settings
from rtpcore.storage.queue import QueueStore
from tests.rpcap.conftest import root, rpcapd, rpcapd_binary  # noqa: F401 - real rpcapd fixtures
from tests.rpcap.test_capture_engine import Receiver, payloads, written
from tests.storage.conftest import BUCKET, MotoServer, point_cli_at, s3_storage

KIB = 1024
CHUNK = 64 * KIB
BURST = 800            # datagrams of 300 bytes (351 on the wire): 4 chunks of 64 KiB per burst
SIZE = 300
FAST = {"connect_timeout": 0.5, "read_timeout": 0.5, "max_attempts": 1}


@pytest.fixture
def s3_cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[MotoServer], Settings]:
    """No developer config; the process environment the CLI reads points at the given moto server."""
    monkeypatch.chdir(tmp_path)

    def point_at(server: MotoServer) -> Settings:
        return load_settings(point_cli_at(monkeypatch, server.endpoint), base_dir=tmp_path)

    return point_at


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def capturing(session_dir: Path) -> None:
    """Wait until rpcapd streams: the first chunk opens right after STARTCAP's reply."""
    assert wait_for(lambda: any((session_dir / "raw").glob("*.pcap")), 10)
    time.sleep(0.2)  # let rpcapd's capture thread settle


def send_when_capturing(session_dir: Path, udp: Receiver, data: list[bytes]) -> threading.Thread:
    """Send from a thread once the CLI under test is capturing."""
    sender = threading.Thread(target=lambda: (capturing(session_dir), udp.send(data)))
    sender.start()
    return sender


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_outage_mid_capture_falls_back_and_flush_makes_s3_identical(
    rpcapd, moto_private: MotoServer, s3_cli_env, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    settings = s3_cli_env(moto_private)
    udp = Receiver()
    session_dir = tmp_path / "captures" / "20250102_030405"
    request = CaptureRequest((adhoc_target("127.0.0.1", "lo", rpcapd.port),), session_dir, duration=60,
                             filter_expression=f"udp dst port {udp.port}", max_bytes=CHUNK, storage_mode="s3",
                             folder="ticket-77", flush_timeout=10)
    running = start_capture(request, settings, storage=s3_storage(moto_private, **FAST))
    queue = running.storage.queue
    assert queue is not None
    try:
        capturing(session_dir)
        before = payloads(b"before", BURST, size=SIZE)
        udp.send(before)
        # Several chunks rolled and every one of them is in S3 before the outage.
        assert wait_for(lambda: len(queue.items()) >= 3 and all(i.state == "done" for i in queue.items()))
        uploaded_before = {i.path for i in queue.items()}

        moto_private.freeze()  # connections are accepted, nothing answers: the worst kind of outage
        during = payloads(b"during", BURST, size=SIZE)
        udp.send(during)
        assert wait_for(lambda: running.storage.policy.status().storage == "local-fallback")
        closed_at_fallback = len(queue.items())

        after = payloads(b"after", BURST, size=SIZE)
        udp.send(after)
        assert wait_for(lambda: len(queue.items()) >= closed_at_fallback + 2)  # chunks keep closing
        assert wait_for(lambda: running.progress()[0].packets == 3 * BURST)  # all received before stopping
        assert running.progress()[0].state == "capturing"
    finally:
        running.stop()
        result = running.wait(30)
        udp.close()
    assert result is not None and result.ok

    storage = result.storage
    assert (storage["mode"], storage["status"]) == ("s3", "local-fallback")
    assert storage["switched_at"] and moto_private.endpoint in storage["why"]
    assert storage["location"] == f"s3://{BUCKET}/captures/adhoc/ticket-77/20250102_030405/"
    assert storage["uploaded"] >= len(uploaded_before) and storage["pending"]
    assert not uploaded_before & set(storage["pending"])
    (host,) = result.summary.hosts
    files = [Path(f) for f in host.files]
    assert written(files, udp.port) == before + during + after  # the capture never paused for S3
    assert len(files) >= 9 and all(f.exists() for f in files)
    assert result.to_json()["storage"] == storage and json.dumps(result.to_json())

    moto_private.thaw()
    assert main(["flush", str(session_dir), "--json"]) == 0
    flushed = json.loads(capsys.readouterr().out)
    assert flushed["left"] == [] and flushed["uploaded"] == len(storage["pending"])

    manifest = Manifest.read(session_dir / MANIFEST_NAME)
    assert manifest.finished and not manifest.problems and not manifest.open_chunks
    prefix = "captures/adhoc/ticket-77/20250102_030405/raw/"
    client = moto_private.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    # every chunk and its sidecar index (issue 12), nothing else
    assert sorted(o["Key"][len(prefix):] for o in listed) == sorted(
        [c.name for c in manifest.chunks] + [c.name + INDEX_SUFFIX for c in manifest.chunks])
    assert sorted(c.name for c in manifest.chunks) == sorted(f.name for f in files)
    for chunk in manifest.chunks:
        stored = client.get_object(Bucket=BUCKET, Key=prefix + chunk.name)["Body"].read()
        local = (session_dir / "raw" / chunk.name).read_bytes()
        assert sha256_of(stored) == chunk.sha256 == sha256_of(local)
    assert {i.state for i in QueueStore(session_dir).load_all()} == {"done"}


def test_cli_capture_to_s3_reports_storage(rpcapd, moto_server: MotoServer, s3_cli_env, tmp_path: Path,  # noqa: F811
                                           capsys: pytest.CaptureFixture[str]) -> None:
    s3_cli_env(moto_server)
    udp = Receiver()
    out = tmp_path / "cli-session"
    sent = payloads(b"cli-s3", 400, size=SIZE)
    sender = send_when_capturing(out, udp, sent)
    code = main(["capture", "--address", "127.0.0.1", "--interface", "lo", "--port", str(rpcapd.port),
                 "--filter", f"udp dst port {udp.port}", "--duration", "2", "--out", str(out),
                 "--max-bytes", "64KiB", "--storage", "s3", "--folder", "team/t-1", "--json", "--quiet"])
    sender.join()
    udp.close()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert set(doc) == {"hosts", "session", "storage"}
    storage = doc["storage"]
    files = [Path(f) for f in doc["hosts"][0]["files"]]
    assert written(files, udp.port) == sent and len(files) >= 2
    assert (storage["mode"], storage["status"], storage["pending"], storage["failed"]) == ("s3", "s3", [], [])
    assert storage["uploaded"] == 2 * len(files)  # each chunk and its sidecar index
    assert storage["location"] == f"s3://{BUCKET}/captures/adhoc/team/t-1/cli-session/"
    assert "pending upload" not in captured.err
    client = moto_server.client()
    for f in files:
        body = client.get_object(Bucket=BUCKET, Key=f"captures/adhoc/team/t-1/cli-session/raw/{f.name}")["Body"]
        assert sha256_of(body.read()) == sha256_of(f.read_bytes())


def test_cli_capture_with_s3_down_still_captures_and_says_flush(
    rpcapd, moto_private: MotoServer, s3_cli_env, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    s3_cli_env(moto_private)
    moto_private.stop()  # nothing listens on the endpoint's port any more
    udp = Receiver()
    out = tmp_path / "down-session"
    sent = payloads(b"down", 200, size=SIZE)
    sender = send_when_capturing(out, udp, sent)
    code = main(["capture", "--address", "127.0.0.1", "--interface", "lo", "--port", str(rpcapd.port),
                 "--filter", f"udp dst port {udp.port}", "--duration", "2", "--out", str(out),
                 "--max-bytes", "64KiB", "--quiet"])
    sender.join()
    udp.close()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    chunks = sorted((out / "raw").glob("*.pcap"))
    assert written(chunks, udp.port) == sent
    assert (f"rtphelper capture: warning: {2 * len(chunks)} files pending upload; run: rtphelper flush "
            f"{out.resolve()}") in captured.err  # each chunk and its sidecar index
    assert "storage: local-fallback" in captured.out and "0 uploaded" in captured.out
    assert f"{2 * len(chunks)} pending" in captured.out
    assert moto_private.endpoint in captured.out  # why it fell back, where


def test_no_bucket_configured_captures_locally_with_a_loud_warning(
    rpcapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"RTPHELPER_STORAGE_MODE": "s3"}, base_dir=tmp_path)
    udp = Receiver()
    request = CaptureRequest((adhoc_target("127.0.0.1", "lo", rpcapd.port),), tmp_path / "nob", duration=1.0,
                             filter_expression=f"udp dst port {udp.port}", environment="lab")
    running = start_capture(request, settings)
    sent = payloads(b"nobucket", 50)
    capturing(tmp_path / "nob")
    udp.send(sent)
    result = running.wait(10)
    udp.close()
    assert result is not None and result.ok
    assert written(result.summary.hosts[0].files, udp.port) == sent
    storage = result.storage
    assert (storage["mode"], storage["status"]) == ("s3", "local-fallback")
    assert "no bucket is set" in storage["why"] and storage["pending"] == [
        "raw/adhoc-127.0.0.1-lo-0001.pcap", "raw/adhoc-127.0.0.1-lo-0001.pcap.idx.json"]
    assert any(r.levelname == "ERROR" and "capturing to local disk only" in r.getMessage() for r in caplog.records)
    location = QueueStore(tmp_path / "nob").load_location()  # so `rtphelper flush` knows the keys later
    assert location is not None and location.key_prefix == "lab/nob"  # ad-hoc targets: the request names it


def test_local_mode_has_no_queue_and_a_broken_chunk_callback_does_not_stop_the_capture(
    rpcapd, tmp_path: Path, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    from rtpcore.capture.engine import CaptureSession

    settings = load_settings({"RTPHELPER_STORAGE_MODE": "local"}, base_dir=tmp_path)
    udp = Receiver()
    request = CaptureRequest((adhoc_target("127.0.0.1", "lo", rpcapd.port),), tmp_path / "loc", duration=1.5,
                             filter_expression=f"udp dst port {udp.port}", max_bytes=CHUNK)
    running = start_capture(request, settings)
    capturing(tmp_path / "loc")
    sent = payloads(b"local", 400, size=SIZE)
    udp.send(sent)
    result = running.wait(10)
    assert result is not None and result.ok and written(result.summary.hosts[0].files, udp.port) == sent
    assert result.storage == {"mode": "local", "status": "local", "switched_at": None, "why": None,
                              "restored_at": None, "uploaded": 0, "pending": [], "failed": [], "location": None}
    assert not (tmp_path / "loc" / ".upload-queue").exists()

    closed: list[str] = []

    def flaky(info) -> None:  # noqa: ANN001 - ChunkInfo
        closed.append(info.name)
        raise OSError("queue disk full")

    session = CaptureSession(request.targets, tmp_path / "boom", duration=1.5, max_bytes=CHUNK,
                             filter_expression=f"udp dst port {udp.port}", on_chunk_closed=flaky)
    session.start()
    capturing(tmp_path / "boom")
    udp.send(sent)
    summary = session.wait(10)
    udp.close()
    assert summary is not None and summary.ok and written(summary.hosts[0].files, udp.port) == sent
    assert closed == [f.name for f in summary.hosts[0].files] and len(closed) >= 2
    assert sum("on_chunk_closed callback failed" in r.getMessage() for r in caplog.records) == len(closed)
