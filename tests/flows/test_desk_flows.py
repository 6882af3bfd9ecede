"""The desk's flows as real runs (shared harness): sessions by folder/run name, URLs for the SIP pcap, links, listing."""
from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import load_truth

SECRET = "desk-flow-test-secret-0001"


def _run(flow_id) -> tuple[dict, list, list]:  # type: ignore[no-untyped-def]
    """(flow run as JSON, its artifacts, its logs) read back through the Prefect API."""
    from tests.flows.test_correlation_flows import _artifacts_and_logs

    return _artifacts_and_logs(flow_id)  # type: ignore[return-value]


def _flow_run(flow_run_id):  # type: ignore[no-untyped-def]
    import asyncio

    from prefect.client.orchestration import get_client

    async def read():  # type: ignore[no-untyped-def]
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    return asyncio.run(read())


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A capture root the flows use (RTPHELPER_CAPTURE_ROOT), and no developer settings."""
    for key in ("RTPHELPER_SERVE_URL", "RTPHELPER_SERVE_SECRET", "RTPHELPER_STORAGE_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    captures = tmp_path / "captures"
    captures.mkdir()
    monkeypatch.setenv("RTPHELPER_CAPTURE_ROOT", str(captures))
    monkeypatch.setenv("RTPHELPER_STORAGE_MODE", "local")
    return captures


@pytest.fixture()
def http_files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server over a folder (the "ticket system" a SIP pcap link points at)."""
    folder = tmp_path / "web"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _capture_session(root: Path, folder: Path, ticket: str) -> Path:
    """A session folder as capture-session leaves it: <root>/<ticket>/<timestamp>/raw/ with the chunks."""
    from rtpcore.session import import_media, new_session

    paths = new_session(root, ticket)
    import_media(paths, sorted((folder / "media").glob("*.pcap")))
    return paths.root


def test_forms_have_no_optional_toggles_and_the_job_timeout() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.correlate_call import correlate_call
    from flows.get_links import get_links
    from flows.list_sessions import list_sessions
    from flows.process_call import process_call
    from rtpcore.settings import load_settings

    for fl in (correlate_call, process_call, get_links, list_sessions):
        schema = json.dumps(parameter_schema(fl.fn).model_dump())
        assert '"null"' not in schema, f"{fl.name}: an Optional parameter renders as a type toggle"
    assert correlate_call.timeout_seconds == load_settings().correlation_job_timeout_seconds
    assert process_call.timeout_seconds == load_settings().correlation_job_timeout_seconds


def test_process_call_on_the_session_root_named_and_tagged(generated, root: Path) -> None:
    from flows.process_call import process_call

    folder = generated("rolling")
    truth = load_truth(folder)
    captured = _capture_session(root, folder, "ticket-41")
    state = process_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound", media_directory=str(captured),
                         output_folder="ticket-42", return_state=True)
    assert state.is_completed(), state
    doc = state.result()
    session = Path(doc["session"])
    assert session.parent == root / "ticket-42"
    assert sorted(p.name for p in (session / "raw").iterdir() if p.suffix == ".pcap") == sorted(
        Path(m).name for m in truth["media"])   # raw/ also caches each chunk's index (.idx.json)
    run = _flow_run(state.state_details.flow_run_id)
    assert run.name == "correlate-ticket-42" and "ticket-42" in run.tags
    arts, _ = _run(state.state_details.flow_run_id)
    keys = {a.key for a in arts if a.key}
    assert f"correlation-ticket-42-{session.name.replace('_', '-')}" in keys


def test_failed_process_call_leaves_no_orphan_folder(generated, root: Path, shared_pcaps: Path) -> None:
    from flows.process_call import process_call

    folder = generated("inbound-proxy")
    state = process_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound",
                         media_directory=str(shared_pcaps / "sipp_g711a.pcap"), output_folder="ticket-43",
                         return_state=True)
    assert state.is_failed()
    assert not (root / "ticket-43").exists(), "a failed run leaves no empty session (or ticket) folder"
    state = process_call(sip_pcap=str(root / "laptop-only" / "sip.pcap"), direction="inbound",
                         media_directory=str(folder / "media"), output_folder="ticket-44", return_state=True)
    assert state.is_failed() and "not found on the worker" in str(state.message)
    assert sorted(p.name for p in root.iterdir()) == []


def test_correlate_a_session_with_the_sip_pcap_from_a_url(generated, root: Path, http_files) -> None:  # type: ignore[no-untyped-def]
    from flows.correlate_call import correlate_call

    web, base = http_files
    folder = generated("rolling")
    truth = load_truth(folder)
    captured = _capture_session(root, folder, "ticket-45")
    (web / "call.pcap").write_bytes((folder / "sip.pcap").read_bytes())
    state = correlate_call(sip_pcap=f"{base}/call.pcap", direction="inbound", session=str(captured),
                           return_state=True)
    assert state.is_completed(), state
    doc = state.result()
    assert (captured / "uploads" / "call.pcap").read_bytes() == (folder / "sip.pcap").read_bytes()
    assert Path(doc["outputs"]["sip_plus_media_decrypted"]).parent == captured / "combined"
    got = {(s["src"], s["dst"], s["kind"]): s["packets"] for leg in doc["legs"] for s in leg["streams"]}
    assert got == {(s["src"], s["dst"], s["kind"]): s["packets"] for s in truth["streams"]}
    assert _flow_run(state.state_details.flow_run_id).name == "correlate-ticket-45"


def test_session_by_capture_run_name_get_links_and_listing(generated, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact

    from flows.correlate_call import correlate_call
    from flows.get_links import get_links
    from flows.list_sessions import list_sessions
    from rtpcore.desk.serve import OutputServer, ServeConfig

    folder = generated("rolling")
    captured = _capture_session(root, folder, "ticket-46")

    @flow(name="capture-session-standin", flow_run_name="capture-prd-ticket-46")
    def standin() -> None:  # what capture-session leaves behind: a summary naming its session folder
        create_markdown_artifact(f"# Capture session `{captured}`\n", key="capture-summary-ticket-46")

    standin()
    state = correlate_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound", session="capture-prd-ticket-46",
                           return_state=True)
    assert state.is_completed(), state
    assert Path(state.result()["session"]) == captured

    server = OutputServer("127.0.0.1:0", ServeConfig(root, SECRET, 1 << 20)).start()
    try:
        monkeypatch.setenv("RTPHELPER_SERVE_URL", server.url)
        monkeypatch.setenv("RTPHELPER_SERVE_SECRET", SECRET)
        links_state = get_links(session=str(captured), return_state=True)
        assert links_state.is_completed(), links_state
        links = links_state.result()["links"]
        assert set(links) >= {"combined/media_raw.pcap", "combined/media_decrypted.pcap",
                              "combined/SIP_plus_media_decrypted.pcap"}
        for name, url in links.items():
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.read() == (captured / name).read_bytes()
        arts, logs = _run(links_state.state_details.flow_run_id)
        assert any(a.key == f"links-ticket-46-{captured.name.replace('_', '-')}" for a in arts)
        # Output links carry ?token=…; the report's folder link carries it in its path (/report/<expires>/<token>/…).
        tokens = [url.split("token=")[1] if "token=" in url else url.split("/")[5] for url in links.values()]
        assert tokens and not any(token in log.message for log in logs for token in tokens)
    finally:
        server.stop()

    rows_state = list_sessions(return_state=True)
    rows = rows_state.result()
    assert rows[0]["session"] == str(captured) and rows[0]["state"] == "correlated"
    arts, _ = _run(rows_state.state_details.flow_run_id)
    assert any(a.key == "sessions" and a.type == "table" for a in arts)


def test_get_links_of_an_s3_session_presigns_with_the_expiry_setting(moto_server, generated, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.parse import parse_qs, urlsplit

    from flows.correlate_call import correlate_call
    from flows.get_links import get_links
    from tests.storage.conftest import BUCKET, point_cli_at

    point_cli_at(monkeypatch, moto_server.endpoint)
    monkeypatch.setenv("RTPHELPER_LINK_EXPIRES_SECONDS", "900")
    monkeypatch.setenv("RTPHELPER_CAPTURE_ROOT", str(tmp_path / "captures"))
    monkeypatch.chdir(tmp_path)
    folder = generated("rolling")
    prefix = "captures/PRD/ticket-47/20260101_131313"
    client = moto_server.client()
    for chunk in sorted((folder / "media").glob("*.pcap")):
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/raw/{chunk.name}", Body=chunk.read_bytes())
    state = correlate_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound", session=f"s3://{BUCKET}/{prefix}",
                           return_state=True)
    assert state.is_completed(), state
    doc = state.result()
    assert Path(doc["session"]) == tmp_path / "captures" / "ticket-47" / "20260101_131313"
    assert all(parse_qs(urlsplit(u).query)["X-Amz-Expires"] == ["900"] for u in doc["urls"].values())
    links = get_links(session=f"s3://{BUCKET}/{prefix}/")["links"]
    assert {"combined/media_raw.pcap", "combined/SIP_plus_media_decrypted.pcap"} <= set(links)
    for name, url in links.items():
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["900"]
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == client.get_object(Bucket=BUCKET, Key=f"{prefix}/{name}")["Body"].read()
