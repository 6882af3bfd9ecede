"""DTMF: RFC 4733 events equal the generator's key presses and tshark's rtpevent fields; SIP INFO digits."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from rtpcore.analysis.dtmf import event_payload_types, rtp_events, sip_info_digits
from rtpcore.analysis.packets import read_media
from rtpcore.callgen import VARIANTS, render
from rtpcore.pcap import LINKTYPE_RAW
from rtpcore.pcap.build import build_udp
from rtpcore.pcap.writer import PcapWriter
from tests.conftest import load_truth
from tests.rtpcore.test_analysis_stats import assert_equal_to_tshark

KEYS = "15#*9D"


@pytest.mark.parametrize("srtp", [False, True])
def test_events_equal_the_generated_key_presses(tmp_path: Path, tshark: str, srtp: bool) -> None:
    from rtpcore.pipeline import correlate

    folder = tmp_path / "call"
    spec = dataclasses.replace(VARIANTS["inbound-proxy"], dtmf_digits=KEYS, media_seconds=8.0)
    render(spec if srtp else dataclasses.replace(spec, carrier_suite=None), folder)
    truth = load_truth(folder)
    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "out")
    decrypted = report.outputs[1]
    media = read_media(decrypted)
    src = truth["dtmf"][0]["src"]
    packets = [p for p in media.rtp if f"{p.src}:{p.sport}" == src]
    events = rtp_events(src, packets, media.first_ts_ns)
    assert [e.digit for e in events] == list(KEYS)
    sent_by_carrier = [d for d in truth["dtmf"] if d["src"] == src]     # the relay's copies to the core come too
    assert len(sent_by_carrier) == len(KEYS) and len(truth["dtmf"]) == 2 * len(KEYS)
    for event, sent in zip(events, sent_by_carrier):
        assert event.rtp_timestamp == sent["rtp_timestamp"]
        assert round(event.start_s * 1e6) == (sent["first_ns"] - media.first_ts_ns) // 1000   # pcap keeps µs
        assert event.duration_ms == sent["duration_samples"] / 8 == 100.0
        assert event.ended and event.volume_dbm0 == -10
        # The end packet's copies share one sequence number: correlation drops duplicates before decryption.
        copies = sent["end_packets"] - 1
        assert (event.packets, event.end_packets) == (sent["packets"] - copies, 1)
    if not srtp:  # media_raw keeps every copy, and plain RTP payloads are readable there
        raw = read_media(report.outputs[0])
        kept = rtp_events(src, [p for p in raw.rtp if f"{p.src}:{p.sport}" == src], raw.first_ts_ns)
        assert [(e.digit, e.packets, e.end_packets) for e in kept] == [
            (sent["digit"], sent["packets"], sent["end_packets"]) for sent in sent_by_carrier]
        assert_equal_to_tshark(tshark, report.outputs[0])   # duplicates: tshark's "lost" goes negative
    # The same file's statistics still equal tshark's (events carry no jitter: telephone-event clock 0).
    assert_equal_to_tshark(tshark, decrypted)


def test_events_equal_tshark_rtpevent_on_a_sipp_capture(shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / "sipp_dtmf_2833_1.pcap"
    out = subprocess.run([tshark, "-o", "rtp.heuristic_rtp:TRUE", "-r", str(path), "-Y", "rtpevent", "-T", "fields",
                          "-e", "rtp.timestamp", "-e", "rtpevent.event_id", "-e", "rtpevent.end_of_event",
                          "-e", "rtpevent.volume", "-e", "rtpevent.duration"],
                         capture_output=True, text=True, check=True).stdout
    theirs: dict[int, dict] = {}
    for line in out.splitlines():
        ts, event, end, volume, duration = (int(x) for x in line.split("\t"))
        e = theirs.setdefault(ts, {"event": event, "volume": volume, "duration": 0, "packets": 0, "ends": 0})
        e["duration"] = max(e["duration"], duration)
        e["packets"] += 1
        e["ends"] += end
    media = read_media(path)
    events = rtp_events("sipp", media.rtp, media.first_ts_ns)
    assert len(events) == len(theirs) == 1
    (event,) = events
    t = theirs[event.rtp_timestamp]
    assert event.digit == "0123456789*#ABCD"[t["event"]] == "1"
    assert (event.duration_ms, event.volume_dbm0) == (t["duration"] / 8, -t["volume"])
    assert (event.packets, event.end_packets) == (t["packets"], t["ends"]) == (10, 3)


def test_event_payload_type_comes_from_the_sdp_map() -> None:
    assert event_payload_types({96: ("opus", 48000), 110: ("telephone-event", 8000)}) == frozenset({110})
    assert event_payload_types(None) == frozenset({101})


def _info(call_id: str, cseq: int, content_type: str, body: str) -> bytes:
    return (f"INFO sip:core@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{cseq}\r\n"
            f"From: <sip:a@10.0.0.1>;tag=1\r\nTo: <sip:b@10.0.0.2>;tag=2\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} INFO\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def test_sip_info_digits_in_both_body_formats(tmp_path: Path) -> None:
    path = tmp_path / "info.pcap"
    messages = [_info("c1", 2, "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
                _info("c1", 3, "application/dtmf-relay", "Signal=#\r\nDuration=250\r\n"),
                _info("c1", 4, "application/dtmf", "7"),
                _info("c1", 5, "application/media_control+xml", "<x/>")]
    with PcapWriter(path, LINKTYPE_RAW) as w:
        for n, data in enumerate(messages):
            w.write(1_000_000_000 * (n + 1), build_udp("10.0.0.1", 5060, "10.0.0.2", 5060, data, ip_id=n))
    digits = sip_info_digits(path)
    assert [(d.digit, d.duration_ms, d.time_s) for d in digits] == [("5", 160, 0.0), ("#", 250, 1.0), ("7", None, 2.0)]
    assert digits[0].call_id == "c1" and digits[0].src == "10.0.0.1:5060"
