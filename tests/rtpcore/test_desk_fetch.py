"""fetch_sip: the SIP pcap from a worker path, a real local HTTP server, or a real S3 (moto_server), into uploads/."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rtpcore.errors import InputError, StorageError
from rtpcore.settings import load_settings
from rtpcore.storage.fetch import fetch_sip
from tests.storage.conftest import BUCKET, MotoServer, moto_server, point_cli_at  # noqa: F401

BODY = b"\xd4\xc3\xb2\xa1" + bytes(range(256)) * 40


class _Files(BaseHTTPRequestHandler):
    """GET /ok/<name> → BODY with Content-Length; /chunked/<name> → BODY without it; anything else 404."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path.startswith("/ok/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif path.startswith("/chunked/"):
            self.send_response(200)
            self.end_headers()  # HTTP/1.0, no length: the body ends when the connection closes
            self.wfile.write(BODY)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture()
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    return load_settings({"RTPHELPER_FETCH_TIMEOUT_SECONDS": "1.5"})


def test_http_url_lands_in_uploads_byte_identical(http_base: str, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    uploads = tmp_path / "s" / "uploads"
    got = fetch_sip(f"{http_base}/ok/call%201.pcap?X-Amz-Signature=abc123", uploads, settings)
    assert got == uploads / "call_1.pcap" and got.read_bytes() == BODY
    again = fetch_sip(f"{http_base}/ok/call%201.pcap", uploads, settings)
    assert again == got, "the same file again is reused"
    assert sorted(p.name for p in uploads.iterdir()) == ["call_1.pcap"]


def test_http_errors_name_the_url_without_its_signature(http_base: str, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    uploads = tmp_path / "uploads"
    with pytest.raises(InputError, match=r"/gone/sip\.pcap: HTTP 404") as info:
        fetch_sip(f"{http_base}/gone/sip.pcap?X-Amz-Signature=abc123", uploads, settings)
    assert "abc123" not in str(info.value)
    small = settings.model_copy(update={"fetch_max_bytes": len(BODY) - 1})
    with pytest.raises(InputError, match="RTPHELPER_FETCH_MAX_BYTES"):
        fetch_sip(f"{http_base}/ok/sip.pcap", uploads, small)
    with pytest.raises(InputError, match="RTPHELPER_FETCH_MAX_BYTES"):
        fetch_sip(f"{http_base}/chunked/sip.pcap", uploads, small)  # no Content-Length: counted while streaming
    assert list(uploads.iterdir()) == [], "nothing half-fetched is left in uploads/"


def test_a_silent_server_hits_the_deadline(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts TCP, never answers (a black-holed endpoint)
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match="RTPHELPER_FETCH_TIMEOUT_SECONDS"):
            fetch_sip(f"http://127.0.0.1:{silent.getsockname()[1]}/sip.pcap", tmp_path / "uploads", settings)
        assert time.monotonic() - started < 10
    finally:
        silent.close()


def test_worker_path_is_copied_and_never_overwrites(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "sip.pcap"
    source.write_bytes(BODY)
    uploads = tmp_path / "s" / "uploads"
    assert fetch_sip(str(source), uploads, settings).read_bytes() == BODY
    source.write_bytes(BODY + b"changed")
    with pytest.raises(InputError, match="already exists with other content"):
        fetch_sip(str(source), uploads, settings)
    assert (uploads / "sip.pcap").read_bytes() == BODY
    with pytest.raises(InputError, match="not found on the worker.*rtphelper submit"):
        fetch_sip(str(tmp_path / "laptop" / "sip.pcap"), uploads, settings)
    assert fetch_sip(str(uploads / "sip.pcap"), uploads, settings) == (uploads / "sip.pcap").resolve()


def test_s3_object_is_fetched_with_the_s3_settings(moto_server: MotoServer, tmp_path: Path,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    point_cli_at(monkeypatch, moto_server.endpoint)
    monkeypatch.chdir(tmp_path)
    key = "captures/PRD/ticket-5/20260101_101010/uploads/sip.pcap"
    moto_server.client().put_object(Bucket=BUCKET, Key=key, Body=BODY)
    got = fetch_sip(f"s3://{BUCKET}/{key}", tmp_path / "uploads", load_settings())
    assert got.read_bytes() == BODY
    with pytest.raises(StorageError, match="no such object"):
        fetch_sip(f"s3://{BUCKET}/captures/none/sip.pcap", tmp_path / "uploads2", load_settings())
