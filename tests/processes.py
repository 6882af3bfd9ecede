"""Real Prefect servers and other long-lived processes for the UI and e2e fixtures: start, wait healthy, stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

SERVER_STARTUP_S = 120.0
HEALTH_PROBE_S = 2.0
STOP_GRACE_S = 10.0
LOG_TAIL_CHARS = 3000


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, url: str) -> dict[str, str]:
    """This process's environment without any PREFECT_* of the user, pointed at a fresh PREFECT_HOME and `url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(home), "PREFECT_API_URL": f"{url}/api", "PREFECT_UI_API_URL": f"{url}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_EXTRA_LOGGERS": "rtpcore",
    }
    return env


def tail(path: Path) -> str:
    """The end of a process log, for a failure message."""
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.is_file() else f"(no {path})"


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = SERVER_STARTUP_S) -> None:
    """Wait until `url`/api/health answers 200; fail with the server log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"prefect server exited {proc.returncode}: {tail(log)}")
        try:
            if httpx.get(f"{url}/api/health", timeout=HEALTH_PROBE_S).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"prefect server not healthy after {timeout}s: {tail(log)}")
        time.sleep(0.25)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (server, worker, browser and their children), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_GRACE_S)
