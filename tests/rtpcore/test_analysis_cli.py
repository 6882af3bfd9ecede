"""`rtphelper analyze`: the figures users read, the files it writes, and exit code 2 with a clear message on bad input."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from rtpcore.analysis.call import analyze_capture
from rtpcore.cli import main
from tests.conftest import load_truth


@pytest.fixture(scope="module")
def decrypted(generated, tmp_path_factory) -> Path:
    from rtpcore.pipeline import correlate

    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path_factory.mktemp("cli"))
    return report.outputs[1]


def test_json_lists_every_stream_with_its_figures_and_mos(decrypted: Path, capsys, tmp_path: Path) -> None:
    assert main(["analyze", str(decrypted), "--json", "--wav-dir", str(tmp_path / "wav")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["streams"]) == 4 and doc["undecodable_codecs"] == []
    for s in doc["streams"]:
        assert s["codec"] == "g711U" and s["expected"] == s["packets"] and s["lost"] == 0
        assert s["mos"] == 4.41 and s["max_delta_ms"] > 19 and 0 < s["mean_jitter_ms"] <= s["max_jitter_ms"]
        assert sum(s["per_100ms"]) == s["packets"]
    assert doc["rtcp"] == []               # the generator's SRs carry no report blocks
    wavs = [Path(p) for p in doc["wav_files"]]
    assert len(wavs) == 6 and sum(p.name.endswith("-stereo.wav") for p in wavs) == 2
    with wave.open(str(wavs[0])) as w:
        assert w.getframerate() == 8000 and w.getnframes() > 8000 * 5


def test_api_is_one_call(decrypted: Path) -> None:
    result = analyze_capture(decrypted)
    assert json.loads(json.dumps(result.to_json()))["streams"][0]["quality"]["r_factor"] == 93.2


def test_human_output_shows_dtmf(shared_pcaps: Path, capsys) -> None:
    assert main(["analyze", str(shared_pcaps / "sipp_dtmf_2833_1.pcap")]) == 0
    out = capsys.readouterr().out
    assert "DTMF '1' at 0.000 s, 280 ms, -10 dBm0" in out
    assert "-2 (-25.0%)" in out            # Wireshark's figure: the three end copies count as negative loss


@pytest.mark.parametrize(("args", "message"), [
    (["--jitter-buffer-ms", "0"], "--jitter-buffer-ms: jitter_buffer_ms must be positive, got 0.0"),
    (["--delay-ms", "-5"], "--delay-ms: one_way_delay_ms must not be negative, got -5.0"),
])
def test_bad_options_exit_2_naming_the_option(decrypted: Path, capsys, args: list[str], message: str) -> None:
    assert main(["analyze", str(decrypted), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_or_non_pcap_file_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.pcap"
    assert main(["analyze", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    assert main(["analyze", str(text)]) == 2
    assert str(text) in capsys.readouterr().err


def test_capture_without_rtp_says_so(tmp_path: Path, capsys, generated) -> None:
    sip = generated("inbound-proxy") / "sip.pcap"
    assert main(["analyze", str(sip)]) == 0
    assert f"no RTP streams in {sip}" in capsys.readouterr().out


def test_rtcp_receiver_reports_of_a_decrypted_call(generated, tmp_path: Path) -> None:
    from rtpcore.pipeline import correlate

    folder = generated("srtcp-single-report")
    truth = load_truth(folder)
    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "out")
    blocks = analyze_capture(report.outputs[1]).rtcp
    # The generator's peers send RRs alone: jitter 12 timestamp units (1.5 ms at 8 kHz), DLSR 65536 (1 s).
    rr = [b for b in blocks if b.kind == "RR"]
    assert rr and all(b.jitter_ms == 1.5 and b.dlsr_ms == 1000.0 and b.fraction_lost_pct == 0 for b in rr)
    assert all(b.cumulative_lost == b.highest_seq for b in rr)   # it reports its packet count in both fields
