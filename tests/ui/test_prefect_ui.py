"""What a support engineer sees in the Prefect UI: correlate-call's run form and the run's artifacts."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import tempfile
import re
import shutil
import struct
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from tests.conftest import load_truth
from tests.ui.conftest import CHROMIUM_NAMES, REPO, WINDOW, Page, UiServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not any(shutil.which(n) for n in CHROMIUM_NAMES),
                       reason="headless Chromium not on PATH: apt-get install chromium (renders the real Prefect UI)"),
]

# Screenshots land in docs/ui only when asked (RTPHELPER_UI_SCREENSHOTS=1), so test runs leave the tree clean.
SHOTS = (Path(__file__).resolve().parents[2] / "docs" / "ui") if os.environ.get("RTPHELPER_UI_SCREENSHOTS") else Path(
    tempfile.gettempdir()) / "rtphelper-ui-shots"
MAX_SHOT_BYTES = 400_000
VARIANT = "inbound-b2bua"

# One object per top-level form field: its label, docstring description, dropdown choices and current values.
FORM_FIELDS_JS = """
[...document.querySelector('.schema-form-properties').children]
  .filter(e => e.matches('.schema-form-property'))
  .map(p => ({
    label: p.querySelector('.schema-form-property__label')?.innerText.trim(),
    description: p.querySelector('.schema-form-property__description')?.innerText.trim() ?? null,
    options: [...new Set([...p.querySelectorAll('select:not([class*=placeholder]) option')].map(o => o.value))],
    values: [...p.querySelectorAll('input:not([type=checkbox]), textarea')].map(i => i.value),
    toggle: p.querySelector('[role=switch]')?.getAttribute('aria-checked') ?? null,
  }))
"""
MARKDOWN_TABLES_JS = """
[...document.querySelectorAll('.markdown-renderer table')]
  .map(t => [...t.rows].map(r => [...r.cells].map(c => c.innerText.trim())))
"""


def _docstring_args(doc: str) -> dict[str, str]:
    """The Google-style `Args:` section of a docstring, continuation lines joined."""
    lines = doc.split("Args:", 1)[1].splitlines()[1:]
    indent = len(lines[0]) - len(lines[0].lstrip())
    args: dict[str, str] = {}
    name = None
    for line in lines:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        if depth == indent:
            name, text = line.strip().split(":", 1)
            args[name] = text.strip()
        elif depth > indent and name is not None:
            args[name] += " " + line.strip()
        else:
            break
    return args


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", png[16:24])


def _shoot(page: Page, name: str) -> Path:
    """Screenshot the settled page into docs/ui and check it is a full window of reasonable size."""
    page.settle()
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    png = page.screenshot(path)
    assert _png_size(png) == WINDOW
    assert len(png) < MAX_SHOT_BYTES, f"{name} is {len(png)} bytes"
    return path


def _make_pool(api_url: str) -> None:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate

    async def make() -> None:
        async with PrefectClient(api_url) as client:
            await client.create_work_pool(WorkPoolCreate(name="rtphelper", type="process"))

    asyncio.run(make())


def _read_deployment_id(api_url: str) -> str:
    from prefect.client.orchestration import PrefectClient

    async def read() -> str:
        async with PrefectClient(api_url) as client:
            return str((await client.read_deployment_by_name("correlate-call/correlate-call")).id)

    return asyncio.run(read())


def _read_artifacts(api_url: str, flow_run_id: str) -> list:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list:
        async with PrefectClient(api_url) as client:
            return await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return asyncio.run(read())


RUN_FLOW = """
import json, sys
from flows.correlate_call import correlate_call
state = correlate_call(**json.loads(sys.argv[1]), return_state=True)
print("FLOW_RUN " + json.dumps({"id": str(state.state_details.flow_run_id), "type": state.type.value}))
"""


@pytest.fixture(scope="module")
def deployment_id(chromium_path: str, ui_server: UiServer) -> str:
    """correlate-call deployed like an engineer does it: the pool, then `prefect deploy` from the repository."""
    _make_pool(ui_server.api_url)
    deploy = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "correlate-call"],
                            cwd=REPO, env=ui_server.env, capture_output=True, text=True, timeout=120)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    return _read_deployment_id(ui_server.api_url)


@pytest.fixture(scope="module")
def correlated(chromium_path: str, ui_server: UiServer, generated, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One correlate-call run of a generated call against the UI's server: run id, truth, output folder, artifacts."""
    call = generated(VARIANT)
    truth = load_truth(call)
    out = tmp_path_factory.mktemp("ui-run") / "out"
    params = {"sip_pcap": str(call / "sip.pcap"), "direction": truth["direction"], "media": [str(call / "media")],
              "output_folder": str(out)}
    run = subprocess.run([sys.executable, "-c", RUN_FLOW, json.dumps(params)], cwd=REPO, env=ui_server.env,
                         capture_output=True, text=True, timeout=120)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("FLOW_RUN ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    flow_run = json.loads(lines[-1].removeprefix("FLOW_RUN "))
    assert flow_run["type"] == "COMPLETED"
    artifacts = _read_artifacts(ui_server.api_url, flow_run["id"])
    return {
        "id": flow_run["id"], "truth": truth, "out": out,
        "summary": next(a for a in artifacts if (a.key or "").startswith("correlation-")),
        "streams": next(a for a in artifacts if (a.key or "").startswith("streams-")),
        "links": [a for a in artifacts if (a.description or "").endswith("(local file)")],
    }


def _open_summary(page: Page, ui_server: UiServer, correlated: dict) -> None:
    page.goto(f"{ui_server.url}/artifacts/artifact/{correlated['summary'].id}")
    page.wait_for_text("Legs", "Streams", "Outputs")


def test_run_form_shows_every_parameter_with_its_docstring_and_direction_choices(
        ui_server: UiServer, browser_page: Page, deployment_id: str) -> None:
    from flows.correlate_call import Direction, correlate_call

    page = browser_page
    page.goto(f"{ui_server.url}/deployments/deployment/{deployment_id}/run")
    page.wait_for_text("Parameters", "output_folder", "Submit")
    fields = {f["label"]: f for f in page.js(FORM_FIELDS_JS)}
    signature = inspect.signature(correlate_call.fn)
    expected_labels = [name if p.default is inspect.Parameter.empty else f"{name} (Optional)"
                       for name, p in signature.parameters.items()]
    assert list(fields) == expected_labels
    docs = _docstring_args(correlate_call.fn.__doc__)
    for name, label in zip(signature.parameters, expected_labels):
        assert fields[label]["description"] == docs[name], label
    assert "rolling chunks" in fields["media (Optional)"]["description"]
    assert fields["direction"]["options"] == list(typing.get_args(Direction)) == ["inbound", "outbound"]
    # 0: the run uses RTPHELPER_MIN_LEG_PACKETS (one setting for CLI and flows); no Optional type toggle (issue 10).
    assert signature.parameters["min_packets"].default == 0 and fields["min_packets (Optional)"]["values"] == ["0"]
    assert fields["overwrite (Optional)"]["toggle"] == "false"
    assert all(fields[label]["values"] == [""] for label in ("sip_pcap", "output_folder (Optional)",
                                                             "session (Optional)", "call_id (Optional)"))
    _shoot(page, "correlate-call-form.png")


def test_run_page_artifacts_tab_lists_summary_table_and_links(
        ui_server: UiServer, browser_page: Page, correlated: dict) -> None:
    page = browser_page
    summary, streams, links = correlated["summary"], correlated["streams"], correlated["links"]
    assert sorted(a.description.removesuffix(" (local file)") for a in links) == sorted(
        ["media_raw.pcap", "media_decrypted.pcap", "SIP_plus_media_decrypted.pcap", "report.html"])
    # ?tab=Artifacts is rewritten to Logs while the run loads (the tab is hidden until then), so click the tab.
    page.goto(f"{ui_server.url}/runs/flow-run/{correlated['id']}")
    page.wait_for_text("Completed", "Artifacts")
    page.js("document.querySelector('li.p-tab#artifacts').click()")
    text = page.wait_for_text(summary.key, streams.description, *(a.description for a in links))
    assert f"Correlation of call {correlated['truth']['legs']['call_id']}" in text  # backticks render as code
    assert "tab=Artifacts" in str(page.js("location.href"))
    _shoot(page, "correlate-call-artifacts.png")


def test_summary_artifact_renders_call_legs_streams_and_outputs(
        ui_server: UiServer, browser_page: Page, correlated: dict) -> None:
    page, truth = browser_page, correlated["truth"]
    _open_summary(page, ui_server, correlated)
    heading = str(page.js("document.querySelector('.markdown-renderer h1')?.innerText ?? ''"))
    assert heading == f"Call {truth['legs']['call_id']} ({truth['direction']})"
    tables = page.js(MARKDOWN_TABLES_JS)
    assert len(tables) == 1, "the legs table only: streams are lists, too wide for table cells"
    legs_table = tables[0]
    assert legs_table[0] == ["leg", "media host", "peer", "SRTP", "packets"]
    assert [row[:4] for row in legs_table[1:]] == [
        [leg["name"], leg["media_host"], leg["peer"], leg["srtp_suite"] or "none"] for leg in truth["legs"]["legs"]]
    items = page.js("[...document.querySelectorAll('.markdown-renderer li')].map(li => li.innerText.trim())")
    streams = [i for i in items if re.match(r"^(RTP|RTCP) ", i)]
    for s in truth["streams"]:
        head = f"{s['kind'].upper()} {s['src']} → {s['dst']} (SSRC {s['ssrc']}): {s['packets']} packets, "
        assert sum(i.startswith(head) for i in streams) == 1, head
        line = next(i for i in streams if i.startswith(head))
        assert f"{s['packets'] if s['encrypted'] else 0} decrypted, 0 auth failed" in line
    assert len(streams) == len(truth["streams"])
    rows = correlated["streams"].data
    rows = rows if isinstance(rows, list) else json.loads(rows)
    assert len(streams) == len(rows) and list(rows[0])[0] == "leg"
    outputs = [i for i in items if i.startswith(str(correlated["out"]))]     # verdicts are list items too
    assert sorted(Path(o).name for o in outputs) == sorted(
        a.description.removesuffix(" (local file)") for a in correlated["links"] if ".pcap" in a.description)
    assert all(re.fullmatch(re.escape(str(correlated["out"])) + r"/.+\.pcap", o) for o in outputs)
    _shoot(page, "correlate-call-summary.png")


def test_summary_description_does_not_mail_the_call_id(
        ui_server: UiServer, browser_page: Page, correlated: dict) -> None:
    _open_summary(browser_page, ui_server, correlated)
    assert browser_page.js("[...document.querySelectorAll('a[href^=\"mailto:\"]')].map(a => a.href)") == []


def test_summary_streams_table_fits_the_artifact_pane(
        ui_server: UiServer, browser_page: Page, correlated: dict) -> None:
    _open_summary(browser_page, ui_server, correlated)
    widths = browser_page.js("[...document.querySelectorAll('.markdown-renderer table')]"
                             ".map(t => [t.scrollWidth, t.parentElement.clientWidth])")
    assert all(table <= pane for table, pane in widths), widths


@pytest.mark.parametrize(("variant", "needles"), [
    ("nat-carrier", ("Findings", "carrier peer sent from", "NAT or multi-homed")),
    ("wrong-key", ("Findings", "wrong key")),
])
def test_what_the_call_hid_is_in_the_summary_a_user_reads(
        ui_server: UiServer, browser_page: Page, generated, tmp_path: Path, variant: str, needles: tuple[str, ...]) -> None:
    """Issue 8 as the engineer meets it: a latching NAT'd carrier or a wrong key is said in the run's summary."""
    call = generated(variant)
    truth = load_truth(call)
    params = {"sip_pcap": str(call / "sip.pcap"), "direction": truth["direction"], "media": [str(call / "media")],
              "output_folder": str(tmp_path / "out")}
    run = subprocess.run([sys.executable, "-c", RUN_FLOW, json.dumps(params)], cwd=REPO, env=ui_server.env,
                         capture_output=True, text=True, timeout=120)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("FLOW_RUN ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    flow_run = json.loads(lines[-1].removeprefix("FLOW_RUN "))
    assert flow_run["type"] == "COMPLETED", "a key or address problem never fails the run"
    summary = next(a for a in _read_artifacts(ui_server.api_url, flow_run["id"])
                   if (a.key or "").startswith("correlation-"))
    page = browser_page
    page.goto(f"{ui_server.url}/artifacts/artifact/{summary.id}")
    text = page.wait_for_text("Legs", "Streams", *needles)
    for stream in truth["streams"]:
        if stream.get("key"):
            assert stream["key"][:12] not in text, "no SDES key on the page"
    _shoot(page, f"correlate-call-{variant}.png")


RUN_CAPTURE = """
import json, sys
from flows.capture_session import capture_session
state = capture_session(**json.loads(sys.argv[1]), return_state=True)
print("FLOW_RUN " + json.dumps({"id": str(state.state_details.flow_run_id), "type": state.type.value}))
"""


def test_a_capture_whose_host_is_down_shows_failed_with_the_reason(
        ui_server: UiServer, browser_page: Page, tmp_path: Path) -> None:
    """Issue 9 as the engineer meets it: the run page says Failed and why, not a green Completed."""
    import socket

    import yaml

    with socket.socket() as sock:  # a port nobody listens on: the media host's rpcapd is down
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({
        "rpcap": {"default_port": closed, "auth_mode": None},
        "settings": {"default_capture_root": str(tmp_path / "captures")},
        "environments": {"LAB": {"regions": {"EU": {"sub-region": {"lab-1": {"hosts": [
            {"id": "media-down", "address": "127.0.0.1", "interfaces": ["lo"]}]}}}}}}}))
    params = {"environment": "LAB", "duration_minutes": 0.02, "hosts_file": str(hosts), "storage_mode": "local"}
    run = subprocess.run([sys.executable, "-c", RUN_CAPTURE, json.dumps(params)], cwd=REPO, env=ui_server.env,
                         capture_output=True, text=True, timeout=120)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("FLOW_RUN ")]
    assert lines, run.stdout[-3000:] + run.stderr[-3000:]
    flow_run = json.loads(lines[-1].removeprefix("FLOW_RUN "))
    assert flow_run["type"] == "FAILED"
    page = browser_page
    page.goto(f"{ui_server.url}/runs/flow-run/{flow_run['id']}")
    text = page.wait_for_text("Failed", "capture failed on 1 of 1 host", "connection refused")
    assert f"rpcap://127.0.0.1:{closed}" in text
    _shoot(page, "capture-session-failed.png")
