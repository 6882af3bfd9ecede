"""report.html in headless Chromium: no console error, the ladder's arrows and the timeline's streams drawn, audio plays.

No Prefect server: the page is opened from disk (file://), as a support engineer opens it from the outputs folder.
The screenshot stays in the test's tmp dir (the repo keeps UI screenshots out of the tree); its path is printed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rtpcore.analysis.call import analyze_capture
from rtpcore.analysis.report_html import write_call_report
from rtpcore.sip.legs import resolve_legs
from tests.conftest import load_truth
from tests.rtpcore.test_report_html import verdicts_for_test
from tests.ui.conftest import CHROMIUM_NAMES, WINDOW, Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not any(shutil.which(n) for n in CHROMIUM_NAMES),
                       reason="headless Chromium not on PATH: apt-get install chromium (renders report.html)"),
]

VARIANT = "inbound-b2bua"
ERROR_LEVELS = ("error", "assert")
# Ask the first audio element to load its WAV; the duration in seconds, or -1 when the browser cannot.
AUDIO_DURATION_JS = """
new Promise(resolve => {
  const a = document.querySelector('audio');
  const t = setTimeout(() => resolve(-2), 10000);
  a.addEventListener('loadedmetadata', () => { clearTimeout(t); resolve(a.duration); });
  a.addEventListener('error', () => { clearTimeout(t); resolve(-1); });
  a.preload = 'auto'; a.load();
})
"""


def console_errors(events: list[dict]) -> list[str]:
    """Console errors, log entries of level error and uncaught exceptions among the DevTools events."""
    found = []
    for e in events:
        params = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            found.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif e["method"] == "Runtime.consoleAPICalled" and params.get("type") in ERROR_LEVELS:
            found.append(json.dumps(params.get("args", []))[:500])
        elif e["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            found.append(json.dumps(params["entry"])[:500])
    return found


def tshark_sip_frames(sip: Path) -> int:
    """SIP messages in the variant's SIP pcap (one call, one message per frame) as tshark counts them."""
    out = subprocess.run(["tshark", "-r", str(sip), "-Y", "sip"], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return len(out.splitlines())


def test_report_renders_without_console_errors(browser_page: Page, generated, tmp_path: Path, tshark: str) -> None:
    from rtpcore.pipeline import correlate

    folder = generated(VARIANT)
    truth = load_truth(folder)
    sip = folder / truth["sip"]
    out = tmp_path / "out"
    correlate(sip, truth["direction"], [folder / "media"], out)
    analysis = analyze_capture(out / "combined" / "media_decrypted.pcap", sip=sip)
    written = write_call_report(out, analysis=analysis, verdicts=verdicts_for_test(),
                                plan=resolve_legs(sip, truth["direction"]), sip_pcap=sip)
    page = browser_page
    page.call("Runtime.enable")
    page.call("Log.enable")
    page.events.clear()
    page.goto((out / "combined" / "report.html").as_uri())
    page.wait_for("document.readyState === 'complete' && document.querySelector('svg.timeline') !== null")

    assert page.js("document.querySelectorAll('svg.ladder g.sip-msg').length") == tshark_sip_frames(sip) == 14
    assert page.js("document.querySelectorAll('svg.ladder .arrow').length") == 14
    assert page.js("document.querySelectorAll('svg.timeline g.stream').length") == len(analysis.streams) == 4
    assert page.js("document.querySelectorAll('svg.timeline rect.bin').length") > 4 * 50  # ~6 s of bars each
    size = page.js("(() => { const r = document.querySelector('svg.ladder').getBoundingClientRect();"
                   " return [r.width, r.height]; })()")
    assert isinstance(size, list) and size[0] > 600 and size[1] > 300
    assert page.js("document.querySelectorAll('table.streams tbody tr').length") == 4
    assert page.js("document.querySelector('table.verdicts tbody tr').className") == "error"
    wavs = [p for p in written if p.suffix == ".wav"]
    assert page.js("document.querySelectorAll('audio').length") == len(wavs) == 6
    duration = page.js(AUDIO_DURATION_JS)
    assert isinstance(duration, (int, float)) and duration > 5, f"the first WAV did not load ({duration})"

    shot = tmp_path / "report.png"
    png = page.screenshot(shot)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == WINDOW[0]
    page.js("document.getElementById('timeline').scrollIntoView()")
    page.screenshot(tmp_path / "report-timeline.png")
    print(f"report screenshots: {shot} and {tmp_path / 'report-timeline.png'}")
    errors = console_errors(page.events)
    assert not errors, f"console errors on report.html: {errors}"
