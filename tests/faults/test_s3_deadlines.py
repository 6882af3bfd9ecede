"""S3 with deadlines: a black-holed, failing or slow endpoint never holds a capture past its end.

Each test runs the real `rtphelper capture` against a real rpcapd on lo with the production defaults of
the S3 timeouts (no short test overrides: the defaults are what is under test), then heals the session
with `rtphelper flush` against a real moto_server and checks every chunk byte for byte.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rtpcore.capture.manifest import MANIFEST_NAME, Manifest
from rtpcore.cli import main
from rtpcore.settings import load_settings
from tests.rpcap.conftest import root, rpcapd, rpcapd_binary  # noqa: F401 - real rpcapd fixtures
from tests.rpcap.test_capture_engine import Receiver, payloads, written
from tests.storage.conftest import BUCKET, MotoServer, moto_private, point_cli_at  # noqa: F401

DURATION = 4.0
END_GRACE = 15.0          # the promise: a capture ends within its duration + 15 s whatever S3 does
SIZE = 300


class BlackHole:
    """A TCP listener that accepts every connection, reads what comes, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections.append(conn)
            threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()

    def _swallow(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        while not self._stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for conn in self.connections:
            conn.close()
        self.sock.close()


class Failing(BaseHTTPRequestHandler):
    """Every request gets 503 SlowDown-style XML, as S3 does when it sheds load."""

    delay = 0.0

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        time.sleep(self.delay)
        body = b"<Error><Code>ServiceUnavailable</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass


class SlowProxy:
    """Forwards TCP to a real S3 endpoint, holding every reply back `delay` seconds (a congested path)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # the server behind was stopped (end of test): drop the client
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.delay), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        first = True
        try:
            while data := src.recv(65536):
                if first and delay:
                    time.sleep(delay)
                first = False
                dst.sendall(data)
                if delay and len(data) < 65536:
                    first = True  # the next reply (keep-alive) is held back again
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """The CLI's environment with S3 at the given endpoint and nothing else configured (production timeouts)."""
    monkeypatch.chdir(tmp_path)

    def point_at(endpoint: str) -> None:
        point_cli_at(monkeypatch, endpoint)

    return point_at


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def _capture(rpcapd_port: int, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, float, dict, list[bytes], int]:
    """`rtphelper capture` for DURATION s while 6 chunks' worth of datagrams arrive; (exit, seconds, json, sent, port)."""
    udp = Receiver()
    sent = payloads(b"s3-fault", 1200, size=SIZE)

    def send() -> None:
        deadline = time.monotonic() + 10
        while not any((out / "raw").glob("*.pcap")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        udp.send(sent)

    sender = threading.Thread(target=send)
    sender.start()
    started = time.monotonic()
    code = main(["capture", "--address", "127.0.0.1", "--interface", "lo", "--port", str(rpcapd_port),
                 "--filter", f"udp dst port {udp.port}", "--duration", str(DURATION), "--out", str(out),
                 "--max-bytes", "64KiB", "--storage", "s3", "--folder", "faults", "--json", "--quiet"])
    elapsed = time.monotonic() - started
    sender.join()
    udp.close()
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, elapsed, json.loads(captured.out), sent, udp.port


def _heal_and_compare(server: MotoServer, cli_env: Callable[[str], None], out: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """`rtphelper flush` against a working S3: every manifest chunk lands, sha256-identical to the local file."""
    cli_env(server.endpoint)
    capsys.readouterr()
    assert main(["flush", str(out), "--json"]) == 0
    flushed = json.loads(capsys.readouterr().out)
    assert flushed["left"] == []
    manifest = Manifest.read(out / MANIFEST_NAME)
    assert manifest.finished and not manifest.open_chunks and len(manifest.chunks) >= 4
    prefix = f"captures/adhoc/faults/{out.name}/raw/"
    client = server.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    # every chunk and its index sidecar (issue 12) reach S3
    assert sorted(o["Key"][len(prefix):] for o in listed) == sorted(
        n for c in manifest.chunks for n in (c.name, c.name + ".idx.json"))
    for chunk in manifest.chunks:
        stored = client.get_object(Bucket=BUCKET, Key=prefix + chunk.name)["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == chunk.sha256 == hashlib.sha256(
            (out / "raw" / chunk.name).read_bytes()).hexdigest()


def test_defaults_decide_within_seconds() -> None:
    settings = load_settings({})
    # A black hole costs at most one probe deadline after a stall: ~10 s, not boto3's 60 s x retries.
    assert settings.s3_stall_seconds + settings.s3_probe_timeout_seconds <= 10
    assert settings.s3_read_timeout_seconds <= 15 and settings.s3_final_flush_seconds <= 10


@pytest.mark.slow
def test_black_hole_from_the_start_capture_ends_on_time_then_flush_heals(
    rpcapd, black_hole: BlackHole, moto_private: MotoServer, cli_env, tmp_path: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli_env(black_hole.endpoint)
    out = tmp_path / "hole-session"
    code, elapsed, doc, sent, port = _capture(rpcapd.port, out, capsys)
    assert code == 0
    assert elapsed <= DURATION + END_GRACE, f"capture took {elapsed:.1f} s for a {DURATION} s duration"
    storage = doc["storage"]
    assert storage["status"] == "local-fallback" and black_hole.endpoint in storage["why"]
    files = [Path(f) for f in doc["hosts"][0]["files"]]
    assert written(files, port) == sent, "every datagram is in the local chunks"
    assert sorted(storage["pending"]) == sorted(
        f"raw/{n}" for f in files for n in (f.name, f.name + ".idx.json")), "every chunk (and its index) stays queued"
    _heal_and_compare(moto_private, cli_env, out, capsys)


@pytest.mark.slow
def test_black_hole_mid_capture_switches_within_ten_seconds(
    rpcapd, moto_private: MotoServer, cli_env, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    from rtpcore.capture.engine import adhoc_target
    from rtpcore.capture.runner import CaptureRequest, start_capture

    cli_env(moto_private.endpoint)
    settings = load_settings()
    udp = Receiver()
    out = tmp_path / "mid-session"
    request = CaptureRequest((adhoc_target("127.0.0.1", "lo", rpcapd.port),), out, duration=40,
                             filter_expression=f"udp dst port {udp.port}", max_bytes=64 * 1024, storage_mode="s3",
                             folder="faults")
    running = start_capture(request, settings)
    queue = running.storage.queue
    assert queue is not None
    first = payloads(b"up", 600, size=SIZE)
    try:
        deadline = time.monotonic() + 10
        while not any((out / "raw").glob("*.pcap")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        udp.send(first)
        deadline = time.monotonic() + 20
        while not (len(queue.items()) >= 2 and all(i.state == "done" for i in queue.items())):
            assert time.monotonic() < deadline, "uploads before the outage never finished"
            time.sleep(0.05)
        moto_private.freeze()
        frozen_at = time.monotonic()
        udp.send(payloads(b"hole", 600, size=SIZE))   # chunks close, their uploads hang
        while running.storage.policy.status().storage != "local-fallback":
            assert time.monotonic() - frozen_at < 12, "a black hole was not recognised within ~10 s"
            time.sleep(0.1)
        switched = time.monotonic() - frozen_at
        running.stop()
        stop_at = time.monotonic()
        result = running.wait(60)
        assert result is not None and time.monotonic() - stop_at <= END_GRACE
    finally:
        running.stop()
        udp.close()
        moto_private.thaw()
    print(f"black hole recognised after {switched:.1f} s")
    assert result.storage["status"] == "local-fallback" and result.storage["pending"]
    _heal_and_compare(moto_private, cli_env, out, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 3.0], ids=["503", "503-slow"])
def test_503_capture_ends_on_time_and_keeps_everything(
    rpcapd, moto_private: MotoServer, cli_env, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
    delay: float,
) -> None:
    handler = type("Handler", (Failing,), {"delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cli_env(f"http://127.0.0.1:{server.server_address[1]}")
        out = tmp_path / f"s503-{int(delay)}"
        code, elapsed, doc, sent, port = _capture(rpcapd.port, out, capsys)
    finally:
        server.shutdown()
    assert code == 0 and elapsed <= DURATION + END_GRACE, f"{elapsed:.1f} s"
    assert doc["storage"]["status"] == "local-fallback" and "503" in doc["storage"]["why"]
    assert written([Path(f) for f in doc["hosts"][0]["files"]], port) == sent
    _heal_and_compare(moto_private, cli_env, out, capsys)


@pytest.mark.slow
def test_slow_but_working_s3_capture_ends_on_time_rest_queued(
    rpcapd, moto_private: MotoServer, cli_env, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    proxy = SlowProxy(moto_private.port, delay=2.5)
    try:
        cli_env(proxy.endpoint)
        out = tmp_path / "slow-session"
        code, elapsed, doc, sent, port = _capture(rpcapd.port, out, capsys)
    finally:
        proxy.close()
    assert code == 0 and elapsed <= DURATION + END_GRACE, f"{elapsed:.1f} s"
    storage = doc["storage"]
    files = [Path(f) for f in doc["hosts"][0]["files"]]
    assert written(files, port) == sent
    assert storage["uploaded"] + len(storage["pending"]) == 2 * len(files), "each chunk and index uploaded or queued"
    _heal_and_compare(moto_private, cli_env, out, capsys)
