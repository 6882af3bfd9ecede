"""The RTP/RTCP the decrypt pass collects for the analysis equal what read_media reads back from media_decrypted.pcap."""
from __future__ import annotations

from pathlib import Path

import pytest

from rtpcore.analysis.packets import read_media
from rtpcore.pipeline import correlate
from tests.conftest import load_truth

# Ethernet, SLL2, VLAN, IPv6, SRTP both legs, a wrong key (undecrypted), ROC, duplicates, a DTMF stream, an SSRC change.
VARIANTS = ["inbound-proxy", "sll2", "vlan", "ipv6", "srtp-both-legs", "wrong-key", "mid-call", "duplicates",
            "dtmf", "ssrc-change", "rtcp-mux", "gcm"]


@pytest.mark.parametrize("name", VARIANTS)
def test_collected_media_equals_the_file_read_back(name: str, generated, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from rtpcore import pipeline

    folder = generated(name)
    truth = load_truth(folder)
    seen = {}
    real = pipeline.decrypt

    def keep(*args):  # the decrypt step's result, as the analysis step gets it
        seen["result"] = real(*args)
        return seen["result"]

    monkeypatch.setattr(pipeline, "decrypt", keep)
    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "out",
                       call_id=(truth.get("select") or {}).get("call_id"))
    collected = seen["result"].media
    back = read_media(report.outputs[1])
    assert collected is not None and len(back.rtp) > 500
    assert collected.first_ts_ns == back.first_ts_ns
    assert collected.rtp == back.rtp
    assert collected.rtcp == back.rtcp


@pytest.mark.parametrize("name", ["inbound-proxy", "duplicates", "ssrc-change"])
def test_correlation_wavs_come_from_the_collected_media_and_equal_the_file_read_back(
        name: str, generated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rtpcore.analysis import call

    folder = generated(name)
    truth = load_truth(folder)
    log = tmp_path / "reads.txt"   # a file: the analysis runs in another process, which appends to it too
    log.touch()
    real = call.read_media

    def counted(path):  # the report's WAVs must not read media_decrypted.pcap a second time
        with log.open("a") as f:
            f.write(f"{path}\n")
        return real(path)

    monkeypatch.setattr(call, "read_media", counted)
    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "out")
    assert log.read_text() == ""
    audio = tmp_path / "out" / "combined" / "audio"
    written = {p.name: p.read_bytes() for p in sorted(audio.glob("*.wav"))}
    from_file = {p.name: p.read_bytes() for p in call.write_audio(report.outputs[1], tmp_path / "back")}
    assert log.read_text().splitlines() == [str(report.outputs[1])]
    assert len(written) >= 2 and any(name.endswith("-stereo.wav") for name in written)
    assert written == from_file
