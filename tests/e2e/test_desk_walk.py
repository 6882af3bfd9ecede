"""Issue 10's acceptance: the support engineer's whole walk in headless Chromium, against the operator's stack.

Deployments → capture-session-eu → Run → Custom run (a real rpcapd captures) → the counters on the run page →
the run pauses with the SIP pcap form → fill it → the same run correlates → click each output link on the run
page: the downloads (through `rtphelper serve` beside the EU worker) are byte-identical to the worker's files.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from tests.capture_lab import send_until
from tests.conftest import load_truth
from tests.e2e.conftest import RUN_TIMEOUT_S, PrefectStack, RegionDesk, tail
from tests.ui.conftest import CHROMIUM_NAMES, Page, browser_page, chromium_path  # noqa: F401  (the session's browser)
from tests.ui.test_capture_desk import FILL_JS, FORM_DEBOUNCE_S
from tests.ui.test_desk_links_ui import LINKS_JS, _wait_file
from tests.ui.test_desk_links_ui import _click as _link_click

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not any(shutil.which(n) for n in CHROMIUM_NAMES),
                       reason="headless Chromium not on PATH: apt-get install chromium (renders the real Prefect UI)"),
]

PORT = 47031
ENVIRONMENT = "LAB"          # tests/capture_lab.py's hosts.yaml: LAB / EU / lab-1 / media-1 on the loopback rpcapd
TICKET = "ticket-walk"
DEPLOYMENT = "capture-session-eu"
UI_WAIT_S = 60.0             # a page of the SPA on a loaded 2-core machine
PAUSE_WAIT_S = 300.0         # worker pickup + pull step + a 6 s capture + the pause
RELOAD_EVERY_S = 10.0        # the artifacts tab is re-read on a reload
SUBMIT_ATTEMPTS = 3          # the run form's Submit, again after an error toast when no run was created
RESUBMIT_AFTER_S = 15.0      # a Resume dialog still open (and the run still paused) this long after Submit
OUTPUTS = ("media_raw.pcap", "media_decrypted.pcap", "SIP_plus_media_decrypted.pcap")
SERVED = "(served by rtphelper serve)"
COUNTERS = ("final counters per host", "live counters per host (updated every ~5 s)")  # flows/capture_session.py

# Fill a field of the deployment's run form by its label, as typing does (Vue listens to input/change).
FILL_FIELD_JS = """((label, value) => {
  const prop = [...document.querySelectorAll('.schema-form-property')].find(p =>
    p.querySelector('.schema-form-property__label')?.innerText.trim().replace(/ \\(Optional\\)$/, '') === label);
  if (!prop) return false;
  const box = prop.querySelector('textarea, input, select:not([class*=placeholder])');
  Object.getOwnPropertyDescriptor(Object.getPrototypeOf(box), 'value').set.call(box, value);
  box.dispatchEvent(new Event('input', {bubbles: true})); box.dispatchEvent(new Event('change', {bubbles: true}));
  return box.value === value;
})(%s, %s)"""
SEARCH_JS = """((text) => { const box = document.querySelector('input[placeholder^="Search deployments"]');
  if (!box) return false;
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(box, text);
  box.dispatchEvent(new Event('input', {bubbles: true})); return true; })(%s)"""
CLICK_JS = """((selector, text) => { const hit = [...document.querySelectorAll(selector)]
  .find(e => e.innerText.trim() === text); if (hit) hit.click(); return !!hit; })(%s, %s)"""
# An artifact card on the run's Artifacts tab, clicked: the innermost element showing the first description found.
CARD_JS = """((texts) => { for (const text of texts) {
  const hits = [...document.querySelectorAll('body *')].filter(e => e.innerText && e.innerText.trim() === text);
  if (hits.length) { hits[hits.length - 1].click(); return true; } } return false; })(%s)"""
MODAL_TEXT_JS = "document.querySelector('.p-modal')?.innerText ?? '(no dialog)'"
# A table artifact as shown: header names and the cells of each row.
TABLE_JS = """(() => { const t = document.querySelector('table'); if (!t) return null;
  return {head: [...t.querySelectorAll('th')].map(c => c.innerText.trim()),
          rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(c => c.innerText.trim()))};
})()"""


def _click(page: Page, selector: str, text: str, timeout: float = UI_WAIT_S) -> None:
    """Click the element of `selector` whose text is `text`, once the page shows it."""
    page.wait_for(CLICK_JS % (json.dumps(selector), json.dumps(text)), timeout)


def _start_from_the_form(page: Page, stack: PrefectStack) -> str:
    """Deployments → capture-session-eu → Run → Custom run → fill → Submit → View run; the run's id."""
    page.load(f"{stack.ui_url}/deployments", UI_WAIT_S)
    page.wait_for(SEARCH_JS % json.dumps(DEPLOYMENT), UI_WAIT_S)  # the list pages by 10: search, as a user would
    _click(page, "a", DEPLOYMENT)
    page.wait_for_text("Work Queue", "EU", "Run", timeout=UI_WAIT_S)
    _click(page, "button", "Run")
    _click(page, "a", "Custom run")
    page.wait_for_text("Parameters", "duration_minutes", "output_folder", "Submit", timeout=UI_WAIT_S)
    for label, value in (("environment", ENVIRONMENT), ("duration_minutes", "0.1"),
                         ("capture_filter", f"udp port {PORT}"), ("output_folder", TICKET)):
        assert page.js(FILL_FIELD_JS % (json.dumps(label), json.dumps(value))), f"no run-form field {label}"
    time.sleep(FORM_DEBOUNCE_S)  # the schema form applies typed values after a debounce nothing on the page shows
    deployment = stack.api("GET", f"/deployments/name/capture-session/{DEPLOYMENT}")["id"]
    before = _run_ids(stack, deployment)
    for attempt in range(SUBMIT_ATTEMPTS):
        _click(page, "button", "Submit")
        deadline = time.monotonic() + UI_WAIT_S
        while time.monotonic() < deadline:
            if page.js(CLICK_JS % (json.dumps("a, button"), json.dumps("View run"))):  # the created run's toast
                href = str(page.wait_for("location.pathname.startsWith('/runs/flow-run/') && location.pathname",
                                         UI_WAIT_S))
                return href.rsplit("/", 1)[1]
            if new := _run_ids(stack, deployment) - before:  # created, its toast gone or hidden by an error toast
                (run_id,) = new
                page.load(f"{stack.ui_url}/runs/flow-run/{run_id}", UI_WAIT_S)
                return run_id
            if "Oops. Something went wrong." in page.text() and "Submit" in page.text():
                break  # a 5xx (the SQLite server busy) and no run: the user submits again
            time.sleep(1.0)
        page.js(CLICK_JS % (json.dumps("button"), json.dumps("Close")))
    pytest.fail(f"no run of {DEPLOYMENT} after {SUBMIT_ATTEMPTS} submits; server log:\n{tail(stack.server_log)}\n"
                f"page:\n{page.text()[:2000]}")


def _run_ids(stack: PrefectStack, deployment: str) -> set[str]:
    """The ids of the deployment's flow runs, as the API lists them."""
    runs = stack.api("POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment]}}, "limit": 200})
    return {run["id"] for run in runs}


def _open_artifact(page: Page, run_url: str, descriptions: list[str], timeout: float) -> None:
    """The run page's Artifacts tab, reloaded until a card with one of the descriptions shows up; that card opened."""
    deadline = time.monotonic() + timeout
    while True:
        page.load(run_url, UI_WAIT_S)
        _click(page, "[role=tab], li, button", "Artifacts")
        try:
            page.wait_for(CARD_JS % json.dumps(descriptions), min(RELOAD_EVERY_S, timeout))
            return
        except pytest.fail.Exception:
            assert time.monotonic() < deadline, f"no artifact {descriptions} on {run_url} after {timeout}s"


def _watch_counters(page: Page, run_url: str) -> int:
    """The packets the run page's counters table shows (summed over hosts), re-read until > 0 or the wait is over."""
    deadline = time.monotonic() + PAUSE_WAIT_S
    while True:
        _open_artifact(page, run_url, list(COUNTERS), max(RELOAD_EVERY_S, deadline - time.monotonic()))
        table = page.wait_for(TABLE_JS, UI_WAIT_S)
        assert isinstance(table, dict) and "packets" in table["head"], table
        col = table["head"].index("packets")
        packets = sum(int(row[col].replace(",", "")) for row in table["rows"])
        if packets > 0 or time.monotonic() > deadline:
            return packets


def _wait_paused(page: Page, stack: PrefectStack, run_id: str) -> dict:
    """The run page until it says Paused (with its Resume button); the run as the API has it."""
    run_url = f"{stack.ui_url}/runs/flow-run/{run_id}"
    deadline = time.monotonic() + PAUSE_WAIT_S
    while True:
        run = stack.api("GET", f"/flow_runs/{run_id}")
        state = (run.get("state") or {}).get("type")
        assert state not in ("FAILED", "CRASHED", "COMPLETED", "CANCELLED"), (run["state"], stack.logs(run_id))
        if state == "PAUSED":
            page.load(run_url, UI_WAIT_S)
            page.wait_for_text(f"capture-{ENVIRONMENT}-{TICKET}", "Paused", "Resume", timeout=UI_WAIT_S)
            return run
        assert time.monotonic() < deadline, f"{run['name']} still {state} after {PAUSE_WAIT_S}s"
        time.sleep(1.0)


def _resume_from_the_form(page: Page, stack: PrefectStack, run_id: str, sip: Path, direction: str) -> None:
    """Fill SIP pcap + direction in the Resume dialog and Submit; filled and submitted again while the dialog stays
    open and the run paused (on a loaded machine the form can miss values typed before it finished rendering)."""
    deadline = time.monotonic() + UI_WAIT_S * 2
    while True:
        assert page.js(FILL_JS % (json.dumps(str(sip)), json.dumps(direction)))
        time.sleep(FORM_DEBOUNCE_S)  # the schema form applies typed values after a debounce nothing on the page shows
        _click(page, ".p-modal__footer button", "Submit")
        try:
            page.wait_for("!document.querySelector('.p-modal')", RESUBMIT_AFTER_S)
            return
        except pytest.fail.Exception:
            if stack.api("GET", f"/flow_runs/{run_id}")["state"]["type"] != "PAUSED":
                return  # resumed; the dialog is merely slow to close
            assert time.monotonic() < deadline, f"the SIP pcap form did not submit: {page.js(MODAL_TEXT_JS)}"


def test_the_engineers_walk_capture_pause_correlate_download(
        prefect_stack: PrefectStack, region_desk: RegionDesk, browser_page: Page,  # noqa: F811
        generated, tmp_path: Path) -> None:
    call = generated("inbound-b2bua")
    truth = load_truth(call)
    page = browser_page
    stop = threading.Event()
    sender = threading.Thread(target=send_until, args=(PORT, b"walk-", stop))
    sender.start()
    try:
        # 1. The capture, started from the deployment's form in the browser (not the API).
        run_id = _start_from_the_form(page, prefect_stack)
        run_url = f"{prefect_stack.ui_url}/runs/flow-run/{run_id}"
        started = prefect_stack.api("GET", f"/flow_runs/{run_id}")["parameters"]
        assert (started["environment"], started["duration_minutes"], started["output_folder"], started["regions"]) == (
            ENVIRONMENT, 0.1, TICKET, ["EU"]), f"the form's values did not reach the run: {started}"
        # 2. The counters on the run page: packets > 0 while (or once) the loopback RTP is captured.
        assert _watch_counters(page, run_url) > 0, page.text()[:3000]
        # 3. The pause with the SIP pcap form.
        paused = _wait_paused(page, prefect_stack, run_id)
    finally:
        stop.set()
        sender.join()
    assert paused["name"] == f"capture-{ENVIRONMENT}-{TICKET}" and TICKET in paused["tags"]
    (session,) = (region_desk.captures / TICKET).iterdir()
    # The loopback datagrams are no call: the generated call's media goes into raw/ as if the capture had caught it,
    # so the SIP pcap (a file the worker can read) correlates against this session's raw/.
    for chunk in (call / "media").iterdir():
        shutil.copy(chunk, session / "raw" / chunk.name)
    _click(page, "button", "Resume")
    page.wait_for_text("Capture finished: session", str(session), "SIP pcap", "Direction", timeout=UI_WAIT_S)
    _resume_from_the_form(page, prefect_stack, run_id, call / "sip.pcap", truth["direction"])

    # 4. The same run completes; each output link on its run page downloads the worker's file, byte for byte.
    done = prefect_stack.wait(run_id, RUN_TIMEOUT_S)
    assert done.completed, (done.state_type, done.message, prefect_stack.logs(run_id))
    assert done.name == f"capture-{ENVIRONMENT}-{TICKET}"
    page.load(run_url, UI_WAIT_S)
    page.wait_for_text(done.name, "Completed", timeout=UI_WAIT_S)
    arts = prefect_stack.api("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    served = sorted(a["description"] for a in arts if (a.get("description") or "").endswith(SERVED))
    assert {f"{name} {SERVED}" for name in OUTPUTS} <= set(served), served
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    page.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    for description in served:
        _open_artifact(page, run_url, [description], UI_WAIT_S)
        hrefs = page.wait_for(LINKS_JS % json.dumps(region_desk.serve_url), UI_WAIT_S)
        assert isinstance(hrefs, list) and len(hrefs) == 1, hrefs
        path = unquote(urlsplit(hrefs[0]).path)
        # /files/<session path> for a pcap; /report/<expires>/<token>/<session path> for report.html (folder link)
        relative = path.removeprefix("/files/") if path.startswith("/files/") else path.split("/", 4)[4]
        on_disk = region_desk.captures / relative
        assert on_disk.parent.parent == session and on_disk.name == description.removesuffix(f" {SERVED}")
        if on_disk.suffix == ".html":   # the report opens as a page, not a download (its players: test_desk_links_ui)
            assert httpx.get(str(hrefs[0]), timeout=30).content == on_disk.read_bytes()
            continue
        _link_click(page, hrefs[0])
        assert _wait_file(downloads / on_disk.name) == on_disk.read_bytes(), f"{on_disk.name} differs from the worker's"
    assert {p.name for p in downloads.iterdir()} >= set(OUTPUTS)
