"""Acceptance: generated calls with injected faults → the correlation's stats and verdicts equal the generator's truth."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtpcore.analysis.call import analyze_capture
from rtpcore.cli import main
from tests.conftest import load_truth

IMPAIRED = ["impaired-loss", "impaired-random-loss", "impaired-reorder-jitter", "one-way-core", "dead-relay",
            "ssrc-change", "dtmf", "dtmf-dead-relay", "hold"]
# Base variants whose faults the verdicts must also name (learned peers, wrong key, ambiguous senders), and clean ones.
OTHERS = ["latching-peer", "nat-carrier", "wrong-key", "two-senders-one-port", "inbound-proxy", "outbound-b2bua",
          "mid-call", "reinvite-rekey", "srtp-both-legs"]
FIGURES = ("expected", "lost", "max_delta_ms", "max_jitter_ms", "mean_jitter_ms", "mos")


def correlate_json(folder: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """`rtphelper correlate --json` of a generated call, parsed."""
    truth = load_truth(folder)
    argv = ["correlate", "--sip", str(folder / truth["sip"]), "--direction", truth["direction"], "--out", str(out),
            "--json", "--media", str(folder / "media")]
    select = truth.get("select") or {}
    argv += ["--call-id", select["call_id"]] if select else []
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _verdicts(doc: dict) -> list[tuple[str, str, str]]:
    return sorted((v["leg"], v["direction"], v["kind"]) for leg in doc["legs"] for v in leg["verdicts"])


@pytest.mark.parametrize("name", IMPAIRED + OTHERS)
def test_verdicts_and_stream_figures_equal_the_injected_truth(name: str, generated, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    doc = correlate_json(folder, tmp_path / "out", capsys)
    assert _verdicts(doc) == sorted((v["leg"], v["direction"], v["kind"]) for v in truth["verdicts"])
    for leg in doc["legs"]:
        for v in leg["verdicts"]:
            assert set(v) == {"leg", "direction", "kind", "severity", "text", "evidence"} and v["leg"] == leg["name"]
    streams = {(s["src"], s["dst"], s["ssrc"]): s for leg in doc["legs"] for s in leg["streams"] if s["kind"] == "rtp"}
    compared = 0
    for t in truth["streams"]:
        got = streams.get((t["src"], t["dst"], t["ssrc"]))
        if t["kind"] != "rtp" or got is None:
            continue
        compared += 1
        # media_decrypted.pcap holds each packet once: Wireshark's expected/lost equal the unique truth.
        assert (got["packets"], got["expected"], got["lost"]) == (t["packets"], t["expected"], t["lost"]), (name, t)
        assert set(FIGURES) <= set(got) and got["max_delta_ms"] > 0
        assert got["mos"] is None or 1.0 <= got["mos"] <= 4.5
    assert compared >= 2
    analysis = json.loads(Path(doc["analysis_file"]).read_text())
    assert analysis["verdicts"] == [v for leg in doc["legs"] for v in leg["verdicts"]]
    assert {(s["leg"], s["direction"]) for s in analysis["streams"] if s["leg"]} <= {
        (leg, d) for leg in ("carrier", "core") for d in (f"{leg}->relay", f"relay->{leg}")}


@pytest.mark.parametrize("name", ["impaired-loss", "impaired-random-loss", "impaired-reorder-jitter", "ssrc-change"])
def test_raw_media_stats_equal_the_injected_losses_duplicates_and_reordering(name: str, generated, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    doc = correlate_json(folder, tmp_path / "out", capsys)
    raw = analyze_capture(doc["outputs"]["media_raw"])
    ours = {(f"{s.stats.src}:{s.stats.sport}", f"{s.stats.dst}:{s.stats.dport}", f"0x{s.stats.ssrc:08x}"): s.stats
            for s in raw.streams}
    impaired = 0
    for t in truth["streams"]:
        if t["kind"] != "rtp":
            continue
        s = ours[(t["src"], t["dst"], t["ssrc"])]
        assert (s.packets - s.duplicates, s.unique_lost, s.duplicates, s.out_of_order) == (
            t["packets"], t["lost"], t["duplicates"], t["reordered"]), (name, t)
        impaired += bool(t["lost"] or t["duplicates"] or t["reordered"])
    assert impaired >= 1 or name == "ssrc-change"


def test_jitter_knob_raises_the_measured_jitter(generated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calm = correlate_json(generated("impaired-loss"), tmp_path / "calm", capsys)
    shaky = correlate_json(generated("impaired-reorder-jitter"), tmp_path / "shaky", capsys)

    def carrier_in(doc: dict) -> dict:
        return next(s for s in doc["legs"][0]["streams"] if s["kind"] == "rtp" and s["dst"].startswith("10.77.1.1:"))

    assert carrier_in(calm)["max_jitter_ms"] < 1.0 < carrier_in(shaky)["max_jitter_ms"]
    assert carrier_in(shaky)["mos"] <= carrier_in(calm)["mos"] + 0.5


def test_a_hold_explains_where_the_audio_stopped(generated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = correlate_json(generated("hold"), tmp_path / "out", capsys)
    stops = [v for leg in doc["legs"] for v in leg["verdicts"] if v["kind"] == "audio-stops"]
    assert sorted(v["direction"] for v in stops) == ["core->relay", "relay->carrier"]
    for v in stops:
        assert v["severity"] == "info" and "explained by a hold: 198.51.100.10:5060 sent a=sendonly" in v["text"]
        e = v["evidence"]
        assert e["hold"]["from"] == "198.51.100.10:5060" and e["resumed_at_s"] is None
        assert abs(e["hold"]["at_s"] - e["stopped_at_s"]) <= 0.03   # the core stops with its 200 OK (20 ms packets)
        assert e["bye_s"] - e["stopped_at_s"] > 3.5                  # hold 2 s after the ACK, BYE after 6 s of media


@pytest.mark.parametrize("name", ["dtmf", "dtmf-dead-relay"])
def test_each_key_press_is_said_to_cross_the_relay_or_not(name: str, generated, tmp_path: Path, capsys) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    correlate_json(folder, tmp_path / "out", capsys)
    doc = json.loads((tmp_path / "out" / "combined" / "analysis.json").read_text())
    carrier_peer = next(leg["peer"] for leg in truth["legs"]["legs"] if leg["name"] == "carrier")
    pressed = [d for d in truth["dtmf"] if d["src"].split(":")[0] == carrier_peer]
    relayed = [d for d in truth["dtmf"] if d not in pressed]          # what the generator's media host sent on
    crossings = doc["dtmf_relay"]
    assert [c["digit"] for c in crossings] == [d["digit"] for d in pressed] == list("159#")
    for c, out in zip(crossings, relayed or [None] * len(crossings)):
        assert c["from_leg"] == "carrier" and c["to_legs"] == ["core"]
        assert c["crossed"] is (out is not None), c
        if out is not None:
            assert c["via"] == "rfc4733" and out["digit"] == c["digit"] and 0 <= c["delay_ms"] < 500
    kinds = [v["kind"] for v in doc["verdicts"] if v["kind"] == "dtmf-not-relayed"]
    assert kinds == ([] if relayed else ["dtmf-not-relayed"])


def test_the_report_says_which_key_presses_crossed_the_media_host(generated, tmp_path: Path, capsys) -> None:
    folder = generated("dtmf-dead-relay")
    correlate_json(folder, tmp_path / "out", capsys)
    html = (tmp_path / "out" / "combined" / "report.html").read_text()
    assert html.count("NOT relayed to core") == 4          # the carrier's four key presses, none sent on
    assert "dtmf-not-relayed" in html
