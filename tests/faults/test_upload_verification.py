"""Upload verification is what lets a chunk be evicted: break it and a test here fails.

Against a real moto_server, directly and through an HTTP proxy that lies about what S3 stored (wrong
ETag, wrong size): the item is retried, then failed loudly, nothing is evicted from the spool, and the
local chunk stays byte-identical. A chunk changed on disk after it was closed is never uploaded.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rtpcore.pcap.rolling import RollingPcapWriter
from rtpcore.storage import UploadQueue
from rtpcore.storage.queue import QueueStore
from tests.storage.conftest import BUCKET, MotoServer, moto_server, new_session, s3_storage, write_chunk  # noqa: F401

KIB = 1024
ATTEMPTS = 2


class LyingProxy:
    """Forwards every request to moto; on HEAD replies it rewrites one header (ETag or Content-Length)."""

    def __init__(self, target: MotoServer, header: str, value: str) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status, reply.reason)
                for name, val in reply.getheaders():
                    if self.command == "HEAD" and name.lower() == header.lower():
                        val = value
                    if name.lower() in ("transfer-encoding", "connection"):
                        continue
                    self.send_header(name, val)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        del proxy

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(params=[("ETag", '"0123456789abcdef0123456789abcdef"'), ("Content-Length", "1")],
                ids=["wrong-etag", "wrong-size"])
def lying(request: pytest.FixtureRequest, moto_server: MotoServer) -> Iterator[LyingProxy]:  # noqa: F811
    proxy = LyingProxy(moto_server, *request.param)
    yield proxy
    proxy.close()


def _queue(root: Path, storage, **extra) -> tuple[UploadQueue, Path]:  # noqa: ANN001
    paths, location = new_session(root)
    queue = UploadQueue(paths.root, storage, location, workers=1, max_attempts=ATTEMPTS, backoff_base=0.05,
                        backoff_max=0.1, spool_max_bytes=1, start=False, **extra)
    return queue, paths.raw


def test_server_that_misreports_the_object_fails_the_item_and_evicts_nothing(
    lying: LyingProxy, moto_server: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    queue, raw = _queue(tmp_path, s3_storage(moto_server, endpoint_url=lying.endpoint))
    info = write_chunk(raw, "eu-sbc1-0001.pcap", 48 * KIB)
    original = info.path.read_bytes()
    queue.on_chunk_closed(info)
    with caplog.at_level(logging.WARNING):
        queue.start()
        assert queue.flush(timeout=30) is False
        queue.close()
    (item,) = QueueStore(queue.session_dir).load_all()
    assert item.state == "failed" and item.attempts == ATTEMPTS and not item.evicted
    assert "does not match" in (item.last_error or "")
    assert info.path.read_bytes() == original, "a chunk whose upload is not verified stays on disk, unchanged"
    assert any("giving up, the file stays local" in r.getMessage() for r in caplog.records)


def test_chunk_changed_after_close_is_never_uploaded_nor_evicted(
    moto_server: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    queue, raw = _queue(tmp_path, s3_storage(moto_server))
    info = write_chunk(raw, "eu-sbc1-0002.pcap", 40 * KIB, index=2)
    changed = bytearray(info.path.read_bytes())
    changed[100] ^= 0xFF  # a bit flipped on disk after the writer hashed the closed chunk
    info.path.write_bytes(bytes(changed))
    queue.on_chunk_closed(info)
    with caplog.at_level(logging.WARNING):
        queue.start()
        assert queue.flush(timeout=30) is False
        queue.close()
    (item,) = QueueStore(queue.session_dir).load_all()
    assert item.state == "failed" and not item.evicted and "changed since" in (item.last_error or "")
    assert info.path.read_bytes() == bytes(changed)
    keys = moto_server.client().list_objects_v2(Bucket=BUCKET, Prefix=item.key).get("Contents", [])
    assert keys == [], "nothing reached S3 under the chunk's key"


def test_a_verified_upload_is_what_allows_eviction(moto_server: MotoServer, tmp_path: Path) -> None:  # noqa: F811
    """The control: the same queue and cap with an honest server evicts the uploaded chunk."""
    queue, raw = _queue(tmp_path, s3_storage(moto_server))
    info = write_chunk(raw, "eu-sbc1-0003.pcap", 40 * KIB, index=3)
    queue.on_chunk_closed(info)
    queue.start()
    assert queue.flush(timeout=30) is True
    queue.close()
    (item,) = QueueStore(queue.session_dir).load_all()
    assert item.state == "done" and item.evicted and not info.path.exists()
    body = moto_server.client().get_object(Bucket=BUCKET, Key=item.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == info.sha256


def test_a_closed_chunk_is_fsynced_before_it_is_announced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """on_close (upload, manifest) may only see a chunk whose bytes reached the disk."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else str(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    announced: list[tuple[str, bool]] = []

    def on_close(info) -> None:  # noqa: ANN001 - ChunkInfo
        announced.append((info.name, str(info.path.resolve()) in synced))

    writer = RollingPcapWriter(tmp_path, "eu-sbc1", 1, max_bytes=4 * KIB, on_close=on_close)
    with writer:
        for n in range(100):
            writer.write(1_700_000_000 * 10**9 + n * 10**6, os.urandom(120))
    assert len(announced) >= 3
    assert all(ok for _, ok in announced), f"announced before fsync: {announced}"
