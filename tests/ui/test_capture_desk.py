"""The capture desk in the browser: a finished capture-session waits on its run page with the SIP pcap form."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.capture_lab import lab_hosts_yaml, send_until
from tests.conftest import load_truth
from tests.rpcap.conftest import root, rpcapd, rpcapd_binary  # noqa: F401  (a real rpcapd on loopback)
from tests.ui.conftest import CHROMIUM_NAMES, REPO, Page, UiServer
from tests.ui.test_prefect_ui import _shoot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not any(shutil.which(n) for n in CHROMIUM_NAMES),
                       reason="headless Chromium not on PATH: apt-get install chromium (renders the real Prefect UI)"),
]

PORT = 47021
PAUSED_WITHIN_S = 120.0
RESUMED_RUN_S = 300
FORM_DEBOUNCE_S = 1.5  # the schema form applies typed values after a short debounce
RUN_CAPTURE = """
import json, sys
from flows.capture_session import capture_session
state = capture_session(**json.loads(sys.argv[1]), return_state=True)
print("FLOW_RUN " + json.dumps({"id": str(state.state_details.flow_run_id), "type": state.type.value,
                                "message": state.message}))
"""
# The resume modal's form: every field's label and its inputs (text inputs, native selects behind the dropdowns).
FORM_JS = """
[...document.querySelectorAll('.p-modal .schema-form-property, [role=dialog] .schema-form-property')]
  .map(p => ({label: p.querySelector('.schema-form-property__label')?.innerText.trim(),
              description: p.querySelector('.schema-form-property__description')?.innerText.trim() ?? null,
              options: [...p.querySelectorAll('select option')].map(o => o.value)}))
"""


# Fill the resume form as a user does: type into the SIP pcap box, pick the direction (Vue listens to input/change).
FILL_JS = """
(() => {
  const props = [...document.querySelectorAll('.p-modal .schema-form-property')];
  const field = label => props.find(p => p.querySelector('.schema-form-property__label').innerText.startsWith(label));
  const box = field('SIP pcap').querySelector('textarea');
  box.value = %s; box.dispatchEvent(new Event('input', {bubbles: true}));
  const select = field('Direction').querySelector('select:not([class*=placeholder])');
  select.value = %s; select.dispatchEvent(new Event('change', {bubbles: true}));
  return true;
})()
"""


def _paused_run(api_url: str, name: str, proc: subprocess.Popen, out: list[str]) -> dict:
    deadline = time.monotonic() + PAUSED_WITHIN_S
    while time.monotonic() < deadline and proc.poll() is None:
        runs = httpx.post(f"{api_url}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}, timeout=10).json()
        if runs and (runs[0].get("state") or {}).get("type") == "PAUSED":
            return runs[0]
        time.sleep(0.5)
    time.sleep(1.0)
    pytest.fail(f"{name} did not pause within {PAUSED_WITHIN_S}s: {''.join(out)[-3000:]}")


def test_paused_capture_shows_the_sip_form_and_resuming_from_the_page_correlates(
        ui_server: UiServer, browser_page: Page, rpcapd, generated, tmp_path: Path) -> None:  # noqa: F811
    call = generated("inbound-b2bua")
    truth = load_truth(call)
    params = {"environment": "LAB", "duration_minutes": 0.04, "capture_filter": f"udp port {PORT}",
              "output_folder": "ticket-desk", "hosts_file": str(lab_hosts_yaml(tmp_path, rpcapd.port)),
              "storage_mode": "local"}
    env = dict(ui_server.env, RTPHELPER_LOG_DIR=str(tmp_path / "logs"), RTPHELPER_POST_CAPTURE_WAIT_SECONDS="600")
    proc = subprocess.Popen([sys.executable, "-c", RUN_CAPTURE, json.dumps(params)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []))
    reader.start()
    stop = threading.Event()
    sender = threading.Thread(target=send_until, args=(PORT, b"desk-", stop))
    sender.start()
    try:
        try:
            run = _paused_run(ui_server.api_url, "capture-LAB-ticket-desk", proc, out)
        finally:
            stop.set()
            sender.join()
        assert run["tags"] == ["ticket-desk"]
        session = next((tmp_path / "captures" / "ticket-desk").iterdir())
        for chunk in (call / "media").iterdir():  # the call's media, as if the capture had caught it
            shutil.copy(chunk, session / "raw" / chunk.name)

        page = browser_page
        page.goto(f"{ui_server.url}/runs/flow-run/{run['id']}")
        page.wait_for_text("capture-LAB-ticket-desk", "Paused", "Resume")
        page.js("[...document.querySelectorAll('button')].find(b => b.innerText.trim() == 'Resume').click()")
        page.wait_for_text("Capture finished: session", str(session), "SIP pcap", "Direction")
        form = {f["label"]: f for f in page.js(FORM_JS)}  # type: ignore[union-attr]
        assert list(form) == ["Action (Optional)", "SIP pcap (Optional)", "Direction", "Call-ID (Optional)",
                              "Number (Optional)"], form
        assert form["Action (Optional)"]["options"] == ["correlate", "skip"]
        assert form["Direction"]["options"][-2:] == ["inbound", "outbound"], "a dropdown the engineer must set"
        assert form["SIP pcap (Optional)"]["description"].startswith("SIP pcap of the call: a path on the worker")
        _shoot(page, "capture-session-paused-form.png")
        page.js(FILL_JS % (json.dumps(str(call / "sip.pcap")), json.dumps(truth["direction"])))
        time.sleep(FORM_DEBOUNCE_S)
        page.js("[...document.querySelectorAll('.p-modal__footer button')].find(b => b.innerText.trim() == 'Submit')"
                ".click()")
        page.wait_for("!document.querySelector('.p-modal')", timeout=30)  # submitted: the modal closes
        assert proc.wait(timeout=RESUMED_RUN_S) == 0
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join()
    text = "".join(out)
    result = json.loads(next(ln for ln in text.splitlines() if ln.startswith("FLOW_RUN ")).removeprefix("FLOW_RUN "))
    assert result["type"] == "COMPLETED", text[-3000:]
    combined = session / "combined" / "SIP_plus_media_decrypted.pcap"
    assert combined.is_file() and combined.stat().st_size > 24, text[-3000:]
    assert (session / "uploads" / "sip.pcap").is_file()
    page.goto(f"{ui_server.url}/runs/flow-run/{run['id']}")
    page.wait_for_text("Completed", f"Direction: {truth['direction']}")
