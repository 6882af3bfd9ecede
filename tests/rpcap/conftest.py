"""A real rpcapd (built from Debian's libpcap source by scripts/build-rpcapd.sh) on 127.0.0.1, started per module."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-rpcapd.sh"
TEST_USER = "rpcaptest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rpcapd:
    """One rpcapd process group (it forks a child per client and SIGKILLs its group on exit)."""

    def __init__(self, binary: Path, args: list[str], log: Path) -> None:
        self.port = _free_port()
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), "-b", "127.0.0.1", "-p", str(self.port), "-4", *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 5
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rpcapd exited with {self.proc.returncode}: {log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"rpcapd not listening on 127.0.0.1:{self.port} after 5 s") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the whole group: the listener and the child serving each client."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@pytest.fixture(scope="session")
def rpcapd_binary() -> Path:
    """Build (or reuse the cached) rpcapd, or skip with the build script's own reason."""
    if not sys.platform.startswith("linux"):
        pytest.skip("rpcapd tests need Linux (the build uses Debian's libpcap source package)")
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        pytest.skip(f"no rpcapd: {reason}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def root() -> None:
    """Capturing on lo and creating a system user both need root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (capture on lo, a test system user)")


@pytest.fixture(scope="module")
def rpcapd(rpcapd_binary: Path, root: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rpcapd]:
    """rpcapd with NULL authentication allowed (-n), passive mode, foreground."""
    server = Rpcapd(rpcapd_binary, ["-n"], tmp_path_factory.mktemp("rpcapd") / "rpcapd.log")
    yield server
    server.stop()


@pytest.fixture
def rpcapd_disposable(rpcapd_binary: Path, root: None, tmp_path: Path) -> Iterator[Rpcapd]:
    """A NULL-auth rpcapd of the test's own, to be killed by it."""
    server = Rpcapd(rpcapd_binary, ["-n"], tmp_path / "rpcapd.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def system_user(root: None) -> Iterator[tuple[str, str]]:
    """A throwaway system user with a random password, for rpcapd's shadow-file check; removed afterwards."""
    for tool in ("useradd", "userdel", "chpasswd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: cannot create the test user")
    subprocess.run(["userdel", TEST_USER], capture_output=True)  # left over by an interrupted run
    password = secrets.token_urlsafe(12)
    subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", TEST_USER], check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{TEST_USER}:{password}\n", text=True, check=True, capture_output=True)
        yield TEST_USER, password
    finally:
        subprocess.run(["userdel", TEST_USER], capture_output=True)


@pytest.fixture(scope="module")
def rpcapd_pwd(rpcapd_binary: Path, system_user: tuple[str, str], tmp_path_factory: pytest.TempPathFactory):
    """rpcapd without -n: only username/password authentication."""
    server = Rpcapd(rpcapd_binary, [], tmp_path_factory.mktemp("rpcapd-pwd") / "rpcapd.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rpcapd_tls(rpcapd_binary: Path, root: None, tmp_path_factory: pytest.TempPathFactory):
    """rpcapd -S with a fresh self-signed certificate for 127.0.0.1; yields (server, client SSL context)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found: cannot make a test certificate")
    folder = tmp_path_factory.mktemp("rpcapd-tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-days", "2"],
        check=True, capture_output=True,
    )
    server = Rpcapd(rpcapd_binary, ["-n", "-S", "-K", str(key), "-X", str(cert)], folder / "rpcapd.log")
    yield server, ssl.create_default_context(cafile=str(cert))
    server.stop()
