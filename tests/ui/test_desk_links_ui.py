"""A support engineer opens a correlation run page in the Prefect UI and clicks each output link: the browser
downloads, through `rtphelper serve`, files byte-identical to the worker's outputs (headless Chromium)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rtpcore.desk.serve import OutputServer, ServeConfig
from tests.conftest import load_truth
from tests.ui.conftest import CHROMIUM_NAMES, REPO, Page, UiServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not any(shutil.which(n) for n in CHROMIUM_NAMES),
                       reason="headless Chromium not on PATH: apt-get install chromium (renders the real Prefect UI)"),
]

SECRET = "ui-serve-secret-0001"
DOWNLOAD_WAIT_S = 30.0
RUN_FLOW = """
import json, sys
from flows.correlate_call import correlate_call
state = correlate_call(**json.loads(sys.argv[1]), return_state=True)
print("FLOW_RUN " + json.dumps({"id": str(state.state_details.flow_run_id), "type": state.type.value}))
"""
# The innermost element showing the description, clicked (the card navigates to the artifact's page).
CARD_JS = """(() => { const d = %s;
  const hits = [...document.querySelectorAll('body *')].filter(e => e.innerText && e.innerText.trim() === d);
  if (!hits.length) return false; hits[hits.length - 1].click(); return true; })()"""
LINKS_JS = "[...document.querySelectorAll('a')].map(a => a.href).filter(h => h.startsWith(%s))"
# Every <audio> of the page: its duration once the browser has loaded the WAV's header (-1 when it failed).
AUDIO_DURATIONS_JS = """
Promise.all([...document.querySelectorAll('audio')].map(a => a.readyState >= 1 ? a.duration : new Promise(done => {
  a.addEventListener('loadedmetadata', () => done(a.duration));
  a.addEventListener('error', () => done(-1));
  a.preload = 'metadata'; a.load();
})))
"""


def _wait_file(path: Path) -> bytes:
    """The downloaded file once Chromium has renamed it from .crdownload."""
    deadline = time.monotonic() + DOWNLOAD_WAIT_S
    while time.monotonic() < deadline:
        if path.is_file() and not list(path.parent.glob("*.crdownload")):
            return path.read_bytes()
        time.sleep(0.2)
    pytest.fail(f"{path.name} was not downloaded in {DOWNLOAD_WAIT_S}s; folder holds {list(path.parent.iterdir())}")


def _click(page: Page, href: str) -> None:
    """A real mouse click (a user gesture: a link opening a new tab is not a blocked popup) on the link."""
    box = page.js(f"(() => {{ const a = [...document.querySelectorAll('a')].find(a => a.href === {json.dumps(href)});"
                  "a.scrollIntoView(); const r = a.getBoundingClientRect();"
                  "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    assert isinstance(box, list)
    for kind in ("mousePressed", "mouseReleased"):
        page.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


def test_run_page_output_links_download_byte_identical_files(ui_server: UiServer, browser_page: Page, generated,
                                                            tmp_path: Path) -> None:
    call = generated("rolling")
    truth = load_truth(call)
    root = tmp_path / "captures"
    session = root / "ticket-90" / "20260101_121212"
    (session / "raw").mkdir(parents=True)
    for chunk in sorted((call / "media").glob("*.pcap")):
        shutil.copy(chunk, session / "raw" / chunk.name)
    server = OutputServer("127.0.0.1:0", ServeConfig(root, SECRET, 1 << 20)).start()
    try:
        env = {**ui_server.env, "RTPHELPER_CAPTURE_ROOT": str(root), "RTPHELPER_SERVE_URL": server.url,
               "RTPHELPER_SERVE_SECRET": SECRET, "RTPHELPER_STORAGE_MODE": "local"}
        params = {"sip_pcap": str(call / "sip.pcap"), "direction": truth["direction"], "session": str(session)}
        run = subprocess.run([sys.executable, "-c", RUN_FLOW, json.dumps(params)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=180)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("FLOW_RUN ")]
        assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
        flow_run = json.loads(lines[-1].removeprefix("FLOW_RUN "))
        assert flow_run["type"] == "COMPLETED"
        arts = httpx.post(f"{ui_server.api_url}/artifacts/filter", timeout=10,
                          json={"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}}).json()
        served = [a for a in arts if (a.get("description") or "").endswith("(served by rtphelper serve)")]
        report = next(a for a in served if a["description"].startswith("report.html"))
        served = [a for a in served if ".pcap" in a["description"]]
        assert len(served) == 3

        downloads = tmp_path / "downloads"
        downloads.mkdir()
        page = browser_page
        page.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        run_page = f"{ui_server.url}/runs/flow-run/{flow_run['id']}"
        def link_on_card(artifact: dict) -> str:
            """As the engineer does: the run page's Artifacts tab, the link artifact's card, the link on it."""
            page.goto(run_page)
            page.wait_for_text("Completed", "Artifacts")
            page.js("document.querySelector('li.p-tab#artifacts').click()")
            page.wait_for_text(artifact["description"])
            clicked = page.js(CARD_JS % json.dumps(artifact["description"]))
            assert clicked, f"no card for {artifact['description']} on the run page"
            hrefs = page.wait_for(LINKS_JS % json.dumps(server.url))
            assert isinstance(hrefs, list) and len(hrefs) == 1, hrefs
            return str(hrefs[0])

        for artifact in served:
            href = link_on_card(artifact)
            name = href.split("?")[0].rsplit("/", 1)[1]
            _click(page, href)
            assert _wait_file(downloads / name) == (session / "combined" / name).read_bytes()
        assert sorted(p.name for p in downloads.iterdir()) == sorted(
            ["media_raw.pcap", "media_decrypted.pcap", "SIP_plus_media_decrypted.pcap"])

        # The call report's link opens the page itself; its audio players and pcap links work with that one link.
        page.goto(link_on_card(report))
        page.wait_for("document.querySelectorAll('audio').length > 0")
        durations = page.js(AUDIO_DURATIONS_JS)
        assert isinstance(durations, list) and durations and all(d > 1 for d in durations), durations
        # The page's pcap link, resolved against the page's URL as a click does (its CSP forbids fetch() from it).
        href = page.js("new URL(document.querySelector('a[href=\"media_raw.pcap\"]').getAttribute('href'), location.href).href")
        assert httpx.get(str(href), timeout=10).content == (session / "combined" / "media_raw.pcap").read_bytes()
    finally:
        server.stop()
