"""A real Prefect server (the test harness serves no UI) and headless Chromium driven over CDP."""
from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port, prefect_env, stop_group, wait_healthy

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
)
WINDOW = (1280, 1600)


@dataclass(frozen=True, slots=True)
class UiServer:
    """Where the UI and API answer, and the environment that points Prefect clients at them."""

    url: str
    api_url: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of a Chromium binary, or skip with the reason."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium not on PATH: apt-get install chromium (the UI test renders the real Prefect UI)")


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """`prefect server start` in a fresh PREFECT_HOME on a free port, stopped at the end of the session."""
    home = tmp_path_factory.mktemp("prefect-ui-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = prefect_env(home, url)
    log = (home / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], cwd=home, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(server, url, home / "server.log")
        yield UiServer(url=url, api_url=f"{url}/api", env=env)
    finally:
        stop_group(server)
        log.close()


class CdpError(RuntimeError):
    """Chromium answered a DevTools command with an error."""


class Page:
    """One headless Chromium tab over the DevTools protocol: navigate, wait for the SPA, read, click, screenshot."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._ws = connect(ws_url, max_size=None, open_timeout=10)
        self._ids = itertools.count(1)
        self.events: list[dict] = []   # DevTools events seen while waiting for replies (console, log, exceptions)
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1], deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params: object) -> dict:
        """Send one command and return its result (events arriving meanwhile are kept in self.events)."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv(timeout=30))
            if "method" in reply:
                self.events.append(reply)
            elif reply.get("id") == msg_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> object:
        """Value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def load(self, url: str, timeout: float = 20.0) -> None:
        """Navigate and wait until the new document has loaded, so nothing reads or clicks the page being left."""
        self.wait_for("window.__leaving = true", timeout)  # retried while a navigation replaces the document
        self.goto(url)
        self.wait_for("!window.__leaving && document.readyState === 'complete'", timeout)

    def wait_for(self, expression: str, timeout: float = 20.0) -> object:
        """Poll a JavaScript expression until it is truthy; fail with the page text if it never is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if value := self.js(expression):
                    return value
            except CdpError:
                pass  # the document is being replaced during navigation
            time.sleep(0.2)
        pytest.fail(f"timed out after {timeout}s waiting for {expression!r}; page text:\n{self.text()[:3000]}")

    def wait_for_text(self, *needles: str, timeout: float = 20.0) -> str:
        """Wait until the visible text holds every needle; return that text."""
        self.wait_for("(" + " && ".join(f"document.body.innerText.includes({json.dumps(n)})" for n in needles)
                      + ")", timeout)
        return self.text()

    def settle(self) -> None:
        """Wait for Vue's route fade-in to finish so screenshots are not half transparent."""
        self.wait_for("!document.querySelector('[class*=\"-enter-active\"], [class*=\"-leave-active\"]')", 10)
        time.sleep(0.3)

    def text(self) -> str:
        return str(self.js("document.body ? document.body.innerText : ''"))

    def html(self) -> str:
        return str(self.js("document.documentElement.outerHTML"))

    def screenshot(self, path: Path) -> bytes:
        """PNG of the viewport, written to path."""
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    def close(self) -> None:
        self._ws.close()


@pytest.fixture(scope="session")
def browser_page(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """A fresh-profile headless Chromium with one tab, shut down at the end of the session."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([chromium_path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             f"--window-size={WINDOW[0]},{WINDOW[1]}", "--remote-debugging-port=0",
                             "--remote-debugging-address=127.0.0.1", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    page = None
    try:
        active = profile / "DevToolsActivePort"  # Chromium writes its chosen port here
        deadline = time.monotonic() + 20
        while not (active.is_file() and active.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not open its DevTools port (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        tab = next(t for t in targets if t["type"] == "page")
        page = Page(tab["webSocketDebuggerUrl"])
        yield page
    finally:
        if page is not None:
            try:
                page.call("Browser.close")  # a clean exit reaps the renderer and GPU children
            except Exception:  # noqa: BLE001 - the socket may close before the reply: fine either way
                pass
            page.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        stop_group(proc)
