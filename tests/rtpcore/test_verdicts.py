"""Verdict rules on streams built by the real statistics code from synthetic packets, and SIP holds from a real capture."""
from __future__ import annotations

from pathlib import Path

import pytest

from rtpcore.analysis.call import SrtpResult, StreamAnalysis
from rtpcore.analysis.emodel import stream_quality
from rtpcore.analysis.packets import RtpPacket
from rtpcore.analysis.sipevents import HoldEvent, SipTimeline, hold_of, timeline_of
from rtpcore.analysis.stats import stream_stats
from rtpcore.analysis.verdicts import (
    LATE_START_S, LegRef, PlacedStream, call_verdicts, peer_to_relay, relay_to_peer,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S          # the call's first SIP message; the capture starts here too
ANSWER = T0 + 2 * S
BYE = T0 + 30 * S
PACKET_NS = 20_000_000
CARRIER = LegRef("carrier", "10.0.0.1", "192.0.2.10")
CORE = LegRef("core", "10.0.1.1", "10.0.1.10")
ENDS = {peer_to_relay("carrier"): ("192.0.2.10", 4000, "10.0.0.1", 5000),
        relay_to_peer("carrier"): ("10.0.0.1", 5000, "192.0.2.10", 4000),
        peer_to_relay("core"): ("10.0.1.10", 6000, "10.0.1.1", 7000),
        relay_to_peer("core"): ("10.0.1.1", 7000, "10.0.1.10", 6000)}


def stream(direction: str, *, start_ns: int = ANSWER, stop_ns: int = BYE, ssrc: int = 0x1234,
           missing: frozenset[int] = frozenset(), pause: tuple[int, int] | None = None,
           srtp: SrtpResult | None = None) -> PlacedStream:
    """A G.711 stream of one direction from start to stop, 20 ms apart, analysed by the real statistics code."""
    src, sport, dst, dport = ENDS[direction]
    packets = []
    n = 0
    t = start_ns
    while t < stop_ns:
        if pause and pause[0] <= t < pause[1]:   # a sender that pauses keeps its sequence: no gap
            t += PACKET_NS
            continue
        if n not in missing:
            packets.append(RtpPacket(len(packets) + 1, t, src, sport, dst, dport, ssrc, 0, (1000 + n) % 65536,
                                     160 * n, n == 0, bytes(160)))
        n += 1
        t += PACKET_NS
    stats = stream_stats(packets, T0, None)
    return PlacedStream(direction.split("->")[0 if direction.endswith("relay") else 1], direction,
                        StreamAnalysis(stats, stream_quality(stats), (), True, srtp))


def full_call(**changes: PlacedStream) -> list[PlacedStream]:
    """All four directions flowing from the answer to the BYE, with some replaced."""
    return [changes.get(d.replace("->", "_").replace("relay_", "to_"), stream(d)) for d in ENDS]


def judge(streams: list[PlacedStream], holds: tuple[HoldEvent, ...] = ()) -> list[dict]:
    return [v.to_json() for v in call_verdicts([CARRIER, CORE], streams, SipTimeline(T0, BYE, ANSWER, BYE, holds), T0)]


def test_a_clean_call_has_no_verdict() -> None:
    assert judge(full_call()) == []


def test_verdict_json_has_exactly_the_shape_the_report_renders() -> None:
    streams = [s for s in full_call() if s.direction != "core->relay"]
    (v,) = judge(streams)
    assert list(v) == ["leg", "direction", "kind", "severity", "text", "evidence"]
    assert (v["leg"], v["direction"], v["kind"], v["severity"]) == ("core", "core->relay", "one-way-audio", "error")
    assert v["evidence"]["packets"] == 0 and v["evidence"]["opposite_packets"] == 1400
    assert v["text"].endswith(".") and "10.0.1.10" in v["text"]


def test_audio_that_stops_before_the_bye_is_explained_by_a_hold_or_is_a_warning() -> None:
    stopped = stream("carrier->relay", stop_ns=T0 + 10 * S)
    (bare,) = judge(full_call(carrier_relay=stopped))
    assert (bare["kind"], bare["severity"]) == ("audio-stops", "warning")
    assert bare["evidence"]["stopped_at_s"] == pytest.approx(10.0, abs=0.03) and bare["evidence"]["bye_s"] == 30.0
    hold = HoldEvent(T0 + 10 * S, "192.0.2.10:5060", "a=sendonly")
    (held,) = judge(full_call(carrier_relay=stopped), (hold,))
    assert (held["kind"], held["severity"]) == ("audio-stops", "info")
    assert held["evidence"]["hold"] == {"at_s": 10.0, "from": "192.0.2.10:5060", "how": "a=sendonly"}
    late_hold = HoldEvent(T0 + 15 * S, "192.0.2.10:5060", "a=sendonly")   # after the stop: it explains nothing
    assert judge(full_call(carrier_relay=stopped), (late_hold,))[0]["severity"] == "warning"


def test_a_silence_inside_a_stream_says_when_audio_stopped_and_came_back() -> None:
    paused = stream("relay->core", pause=(T0 + 12 * S, T0 + 15 * S))
    (v,) = judge(full_call(to_core=paused))
    assert (v["leg"], v["direction"], v["kind"]) == ("core", "relay->core", "audio-stops")
    assert v["evidence"]["stopped_at_s"] == pytest.approx(12.0, abs=0.11)
    assert v["evidence"]["resumed_at_s"] == pytest.approx(15.0, abs=0.11)


def test_late_start_counts_from_the_answer_and_the_calls_first_audio() -> None:
    late = stream("relay->carrier", start_ns=ANSWER + 4 * S)
    (v,) = judge(full_call(to_carrier=late))
    assert (v["kind"], v["direction"]) == ("late-start", "relay->carrier")
    assert v["evidence"]["late_by_s"] == pytest.approx(4.0, abs=0.001) and 4.0 > LATE_START_S
    # Every direction late by the same amount: the capture started late, the audio did not.
    assert judge([stream(d, start_ns=ANSWER + 4 * S) for d in ENDS]) == []


@pytest.mark.parametrize(("missing", "severity"), [
    (frozenset({100}), "info"),                          # one packet in 1400
    (frozenset({100, 101, 102}), "warning"),             # a burst of 3
    (frozenset(range(100, 1400, 10)), "error"),          # 10 %
])
def test_sequence_gaps_grade_by_loss_and_bursts(missing: frozenset[int], severity: str) -> None:
    (v,) = judge(full_call(carrier_relay=stream("carrier->relay", missing=missing)))
    assert (v["kind"], v["severity"], v["evidence"]["lost"]) == ("sequence-gaps", severity, len(missing))


def test_srtp_authentication_failures_are_an_error_when_nothing_decrypted() -> None:
    failed = stream("carrier->relay", srtp=SrtpResult("wrong key", 0, 1400))
    (v,) = judge(full_call(carrier_relay=failed))
    assert (v["kind"], v["severity"], v["evidence"]["auth_failed"]) == ("srtp-auth-failed", "error", 1400)
    some = stream("carrier->relay", srtp=SrtpResult("authenticated", 1390, 10))
    assert judge(full_call(carrier_relay=some))[0]["severity"] == "warning"


def test_one_way_on_one_leg_and_not_relayed_on_the_other_are_told_apart() -> None:
    dead = [s for s in full_call() if s.direction != "relay->core"]
    (v,) = judge(dead)
    assert (v["kind"], v["direction"], v["evidence"]["carrier_to_relay"]) == ("not-relayed", "relay->core", 1400)
    silent = [s for s in full_call() if s.direction not in ("core->relay", "relay->carrier")]
    assert sorted((v["direction"], v["kind"]) for v in judge(silent)) == [
        ("core->relay", "one-way-audio"), ("relay->carrier", "one-way-audio")]
    assert [v["kind"] for v in judge([s for s in full_call() if s.leg == "carrier"])] == ["no-media", "no-media"]


def test_hold_of_reads_direction_attributes_and_the_zero_address() -> None:
    assert hold_of(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n") == "a=sendonly"
    assert hold_of(b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n") == "c=IN IP4 0.0.0.0"
    assert hold_of(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n") is None


def test_timeline_of_a_real_call_with_a_hold(shared_pcaps: Path) -> None:
    from rtpcore.sip.capture import read_sip

    packets = read_sip(shared_pcaps / "heplify_erspan_sip_ipv4_udp.pcapng")
    call = "ddd141f1d982d8989fb73db754a8fbb7@192.168.1.191"
    first = min(p.ts_ns for p in packets if p.message.call_id == call)
    line = timeline_of(packets, [call], first, first)
    assert line.answer_ns is not None and line.bye_ns is not None
    assert round((line.bye_ns - line.answer_ns) / S, 1) == 14.5     # tshark: 200 OK 1526006132.0, BYE …146.48
    assert [h.how for h in line.holds][:2] == ["c=IN IP4 0.0.0.0", "c=IN IP4 0.0.0.0"]
    assert all(line.answer_ns < h.ts_ns < line.bye_ns for h in line.holds)
