"""Output upload to S3 after a correlation: black hole, 503, slow, wrong credentials — outputs stay, the run says so.

`rtphelper correlate --media s3://…` downloads the raw chunks from a real moto_server through a proxy that
forwards reads (GET/HEAD) untouched and misbehaves only on writes (PUT/POST), as a proxy or bucket policy
gone wrong does. Production timeouts are used (no short test overrides).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rtpcore.cli import main
from tests.conftest import load_truth
from tests.storage.conftest import BUCKET, SECRET_KEY, MotoServer, moto_server, point_cli_at  # noqa: F401

SESSION = "captures/prod-eu/ticket-9/20250505_101010"
OUTPUTS = {"combined/media_raw.pcap", "combined/media_decrypted.pcap", "combined/SIP_plus_media_decrypted.pcap"}
DEADLINE = 60.0  # one upload's read timeout x attempts (10 s x 3), plus the correlation itself


def _error(code: int, name: str) -> bytes:
    return f"<Error><Code>{name}</Code><Message>{name} for this test</Message></Error>".encode()


class WriteFaultProxy:
    """Reads pass through to moto; writes are black-holed, refused (503 / 403) or held back."""

    def __init__(self, target: MotoServer, mode: str) -> None:
        hole = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command in ("PUT", "POST"):
                    if mode == "black-hole":
                        hole.wait(120)  # accepted, read, never answered
                        return
                    if mode == "503":
                        self._reply(503, _error(503, "ServiceUnavailable"))
                        return
                    if mode == "wrong-credentials":
                        self._reply(403, _error(403, "InvalidAccessKeyId"))
                        return
                    if mode == "slow":
                        time.sleep(2.5)
                conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status, reply.reason)
                for name, value in reply.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._hole = hole
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._hole.set()
        self.server.shutdown()


@pytest.fixture
def session(moto_server: MotoServer, generated) -> dict:  # noqa: F811
    """A rolling call's chunks put into the bucket as a capture on another machine would have."""
    folder = generated("rolling")
    client = moto_server.client()
    for path in sorted((folder / "media").glob("*.pcap")):
        client.put_object(Bucket=BUCKET, Key=f"{SESSION}/raw/{path.name}", Body=path.read_bytes())
    return {"folder": folder, "truth": load_truth(folder)}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["black-hole", "503", "wrong-credentials", "slow"])
def test_output_upload_fault_keeps_local_outputs_and_says_so(
    mode: str, session: dict, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = WriteFaultProxy(moto_server, mode)
    monkeypatch.chdir(tmp_path)
    point_cli_at(monkeypatch, proxy.endpoint)
    folder, truth = session["folder"], session["truth"]
    out = tmp_path / "out"
    started = time.monotonic()
    try:
        code = main(["correlate", "--sip", str(folder / truth["sip"]), "--direction", truth["direction"],
                     "--media", f"s3://{BUCKET}/{SESSION}/", "--out", str(out), "--json"])
    finally:
        proxy.close()
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert elapsed <= DEADLINE, f"{mode}: the correlation took {elapsed:.1f} s"
    doc = json.loads(captured.out)
    for relative in OUTPUTS:  # the outputs are complete on local disk whatever S3 did
        assert (out / relative).is_file() and (out / relative).stat().st_size > 24
    assert SECRET_KEY not in captured.out + captured.err
    stored = {o["Key"][len(SESSION) + 1:] for o in
              moto_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{SESSION}/").get("Contents", [])}
    if mode == "slow":
        assert OUTPUTS <= set(doc["urls"]), "a slow S3 still gets every output"
        for relative in OUTPUTS:
            body = moto_server.client().get_object(Bucket=BUCKET, Key=f"{SESSION}/{relative}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == hashlib.sha256((out / relative).read_bytes()).hexdigest()
        return
    assert doc["urls"] == {} and not stored & OUTPUTS, "nothing reported as uploaded that is not"
    said = " ".join(doc["warnings"])
    assert "outputs not (all) uploaded" in said, said
    reason = {"black-hole": "unreachable", "503": "503", "wrong-credentials": "rejected the credentials"}[mode]
    assert reason in said, said
