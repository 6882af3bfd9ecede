"""A real correlate-call flow run shows the call's verdicts and per-stream quality as artifacts (issue 11)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import load_truth
from tests.flows.test_correlation_flows import _artifacts_and_logs


def _table(data: object) -> list[dict]:
    """A table artifact's rows (Prefect stores them as a JSON string)."""
    return json.loads(data) if isinstance(data, str) else list(data)  # type: ignore[arg-type]


def test_flow_run_shows_verdicts_and_stream_quality(generated, tmp_path: Path) -> None:
    from flows.correlate_call import correlate_call

    folder = generated("dead-relay")
    truth = load_truth(folder)
    state = correlate_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound", media=[str(folder / "media")],
                           output_folder=str(tmp_path / "out"), return_state=True)
    assert state.is_completed(), state
    doc = state.result()
    verdicts = [v for leg in doc["legs"] for v in leg["verdicts"]]
    assert [(v["leg"], v["direction"], v["kind"]) for v in verdicts] == [
        (v["leg"], v["direction"], v["kind"]) for v in truth["verdicts"]]
    assert Path(doc["analysis_file"]).is_file()

    arts, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    tables = [_table(a.data) for a in arts if a.type == "table"]
    verdict_table = next(t for t in tables if t and "verdict" in t[0])
    assert [(r["severity"], r["leg"], r["direction"], r["kind"]) for r in verdict_table] == [
        ("error", "core", "relay->core", "not-relayed")]
    assert "received 309 RTP packets from the carrier but sent none to the core" in verdict_table[0]["verdict"]
    quality = next(t for t in tables if t and "mos" in t[0])
    rtp = [s for s in truth["streams"] if s["kind"] == "rtp"]
    assert len(quality) == len(rtp) == 3
    assert {(r["leg"], r["direction"]) for r in quality} == {
        ("carrier", "carrier->relay"), ("carrier", "relay->carrier"), ("core", "core->relay")}
    assert all(r["lost"] == 0 and 4.0 < r["mos"] <= 4.5 for r in quality)
    md = next(a.data for a in arts if a.type == "markdown" and a.data.startswith("# Call"))
    assert "## Verdicts" in md and "not-relayed" not in md and "Not relayed" in md
    assert any("Not relayed" in log.message for log in logs)
