"""Real Prefect flow runs (under the session harness) of correlate-call and process-call."""
from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

import pytest

from tests.conftest import load_truth


def _artifacts_and_logs(flow_run_id: UUID) -> tuple[list, list]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs reach the API in batches; wait for this run's

    async def read():
        async with get_client() as client:
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            return arts, logs

    return asyncio.run(read())


def test_correlate_call_flow_run(generated, tmp_path: Path) -> None:
    from flows.correlate_call import correlate_call

    folder = generated("inbound-b2bua")
    truth = load_truth(folder)
    out = tmp_path / "out"
    state = correlate_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound", media=[str(folder / "media")],
                           output_folder=str(out), return_state=True)
    assert state.is_completed(), state
    doc = state.result()
    assert doc["call_ids"] == truth["legs"]["call_ids"]
    for path in doc["outputs"].values():
        assert Path(path).is_file() and Path(path).stat().st_size > 24
    streams = {(s["src"], s["dst"], s["kind"]): s for leg in doc["legs"] for s in leg["streams"]}
    for s in truth["streams"]:
        got = streams[(s["src"], s["dst"], s["kind"])]
        assert got["packets"] == s["packets"]
        if s["encrypted"]:
            assert got["decrypted"] == s["packets"]

    arts, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    # Prefect stores link artifacts as markdown "[text](url)"
    links = {a.data.split("](", 1)[1].rstrip(")") for a in arts if a.data.startswith("[") and "](" in a.data}
    assert {Path(p).resolve().as_uri() for p in doc["outputs"].values()} <= links
    assert any(a.type == "table" for a in arts)
    md = next(a.data for a in arts if a.type == "markdown" and a.data.startswith("# Call"))
    assert truth["legs"]["call_id"] in md and "| carrier |" in md and "media_raw.pcap" in md
    text = "\n".join(log.message for log in logs)
    assert "Direction: inbound" in text
    everything = md + text + "".join(str(a.data) for a in arts)
    for s in truth["streams"]:
        if s.get("key"):
            assert s["key"][:16] not in everything, "SDES keys never reach logs or artifacts"


def test_process_call_imports_into_a_new_session(generated, tmp_path: Path) -> None:
    from flows.process_call import process_call

    folder = generated("rolling")
    truth = load_truth(folder)
    state = process_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound", media_directory=str(folder / "media"),
                         output_folder="ticket-123", capture_root=str(tmp_path), return_state=True)
    assert state.is_completed(), state
    doc = state.result()
    session = Path(doc["session"])
    assert session.parent == tmp_path / "ticket-123"
    # the imported chunks, plus the indexes the correlation built for those it read (issue 12)
    raw = sorted(p.name for p in (session / "raw").iterdir())
    assert [n for n in raw if not n.endswith(".idx.json")] == sorted(Path(m).name for m in truth["media"])
    assert all(n[: -len(".idx.json")] in raw for n in raw if n.endswith(".idx.json"))
    assert [p.name for p in (session / "uploads").iterdir()] == ["sip.pcap"]
    assert (session / "combined" / "SIP_plus_media_decrypted.pcap").is_file()
    assert any((session / "decrypted").glob("*-decrypted.pcap"))
    assert any((session / "combined" / "filtered").glob("*-carrier-filtered.pcap"))


def test_failed_flow_leaves_no_outputs(generated, shared_pcaps: Path, tmp_path: Path) -> None:
    from flows.correlate_call import correlate_call

    folder = generated("inbound-proxy")
    out = tmp_path / "out"
    state = correlate_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound",
                           media=[str(shared_pcaps / "sipp_g711a.pcap")], output_folder=str(out), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="sipp_g711a.pcap"):
        state.result()
    assert not list((out / "combined").glob("*.pcap"))
