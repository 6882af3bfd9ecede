"""Verdicts per leg and direction — did audio flow, did the relay pass it, where did it stop or break — with evidence.

Input is what the correlation already knows: the legs (media host, peer, the SDP's peer endpoints, learned peers
from media/latch.py), the analysed streams placed on a leg and direction, and the SIP timeline (answer, holds,
BYE). Times in the evidence are seconds from the call's first SIP message. Thresholds are the constants below
(README "Verdicts" lists them).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rtpcore.analysis.call import StreamAnalysis
from rtpcore.analysis.sipevents import NS_PER_S, HoldEvent, SipTimeline
from rtpcore.analysis.stats import BIN_MS, MS_PER_S
from rtpcore.media.latch import LearnedPeer

Severity = Literal["error", "warning", "info"]
ERROR: Severity = "error"
WARNING: Severity = "warning"
INFO: Severity = "info"
RELAY = "relay"

KIND_NO_MEDIA = "no-media"
KIND_ONE_WAY = "one-way-audio"
KIND_NOT_RELAYED = "not-relayed"
KIND_STOPS = "audio-stops"
KIND_LATE_START = "late-start"
KIND_SSRC_CHANGE = "ssrc-change"
KIND_GAPS = "sequence-gaps"
KIND_OTHER_SOURCE = "unexpected-source"
KIND_SRTP_AUTH = "srtp-auth-failed"

LATE_START_S = 1.0            # first RTP of a direction this long after the 200 OK and the call's first RTP: late start
STOP_BEFORE_END_S = 2.0       # last RTP this long before the BYE: audio stopped while the call went on
SILENCE_S = 2.0               # no packet for this long inside a stream: audio stopped at T and came back
HOLD_WINDOW_S = 1.0           # a hold SDP up to this long after the stop (or any time before it) explains it
BYE_WINDOW_S = 1.0            # a stop this close to the BYE is the BYE's
LOSS_WARN_PCT = 1.0           # loss at or above this is a warning, below it only info
LOSS_ERROR_PCT = 5.0          # … and at or above this an error
BURST_PACKETS = 3             # a gap of this many consecutive packets or more is a burst (always a warning)
EVIDENCE_GAPS = 10            # gaps listed in the evidence (the count is always complete)


def peer_to_relay(leg: str) -> str:
    """The direction of a leg's peer sending to the media host."""
    return f"{leg}->{RELAY}"


def relay_to_peer(leg: str) -> str:
    """The direction of the media host sending to a leg's peer."""
    return f"{RELAY}->{leg}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One finding about one leg direction: what a support engineer reads, and the figures that prove it."""

    leg: str
    direction: str
    kind: str
    severity: Severity
    text: str
    evidence: tuple[tuple[str, Any], ...]   # ordered (name, value) pairs: the JSON keeps their order

    def to_json(self) -> dict[str, Any]:
        """The shape the report renders: leg, direction, kind, severity, text, evidence."""
        return {"leg": self.leg, "direction": self.direction, "kind": self.kind, "severity": self.severity,
                "text": self.text, "evidence": dict(self.evidence)}


def verdict(leg: str, direction: str, kind: str, severity: Severity, text: str, **evidence: Any) -> Verdict:
    """A Verdict with its evidence given as keywords."""
    return Verdict(leg, direction, kind, severity, text, tuple(evidence.items()))


@dataclass(frozen=True, slots=True)
class LegRef:
    """One media leg as the verdicts need it: names and addresses, and the peers the SDP announced."""

    name: str
    media_host: str
    peer: str
    sdp_peers: tuple[str, ...] = ()          # the peer's RTP endpoints from the SDP
    learned: tuple[LearnedPeer, ...] = ()    # media/latch.py: RTP really came from another address
    notes: tuple[str, ...] = ()              # the correlation's findings about this leg (ambiguous senders, …)


@dataclass(frozen=True, slots=True)
class PlacedStream:
    """An analysed stream put on its leg and direction, with the capture time origin of its figures."""

    leg: str
    direction: str
    analysis: StreamAnalysis

    @property
    def is_audio(self) -> bool:
        """Streams that carry sound (not only telephone-events)."""
        return self.analysis.quality is not None


@dataclass(frozen=True, slots=True)
class _Clock:
    """Turns capture-relative seconds and absolute ns into seconds from the call's first SIP message."""

    capture_origin_ns: int
    call_origin_ns: int

    def capture_s(self, rel_s: float) -> float:
        return round(rel_s + (self.capture_origin_ns - self.call_origin_ns) / NS_PER_S, 3)

    def at_s(self, ns: int) -> float:
        return round((ns - self.call_origin_ns) / NS_PER_S, 3)

    def abs_s(self, ns: int | None) -> float | None:
        return None if ns is None else self.at_s(ns)


def call_verdicts(legs: Sequence[LegRef], streams: Sequence[PlacedStream], sip: SipTimeline,
                  capture_origin_ns: int) -> tuple[Verdict, ...]:
    """Every verdict of the call, leg by leg, direction by direction, in the legs' order."""
    clock = _Clock(capture_origin_ns, sip.start_ns)
    audio_starts = [s.analysis.stats.first_s for s in streams if s.is_audio]
    media_start_s = clock.capture_s(min(audio_starts)) if audio_starts else None
    rtp = {d: [s for s in streams if s.direction == d] for leg in legs for d in (peer_to_relay(leg.name),
                                                                                    relay_to_peer(leg.name))}
    packets = {d: sum(s.analysis.stats.packets for s in group) for d, group in rtp.items()}
    out: list[Verdict] = []
    for leg in legs:
        out += _flow_verdicts(leg, legs, packets)
        for direction in (peer_to_relay(leg.name), relay_to_peer(leg.name)):
            group = sorted(rtp[direction], key=lambda s: s.analysis.stats.first_s)
            audio = [s for s in group if s.is_audio]
            if audio:
                out += _timing_verdicts(leg.name, direction, audio, sip, clock, media_start_s)
                out += _ssrc_verdicts(leg.name, direction, audio, clock)
            for s in group:
                out += _stream_verdicts(leg.name, direction, s, sip, clock)
        out += _source_verdicts(leg)
    return tuple(out)


def _flow_verdicts(leg: LegRef, legs: Sequence[LegRef], packets: dict[str, int]) -> list[Verdict]:
    """No media, one-way audio, and audio the media host received on the other leg but did not send on."""
    inbound, outbound = peer_to_relay(leg.name), relay_to_peer(leg.name)
    if not packets[inbound] and not packets[outbound]:
        text = (f"No RTP at all on the {leg.name} leg between {leg.peer} and the media host {leg.media_host}: "
                + ("the correlation kept none of it — see its findings about this leg (in the evidence)." if leg.notes
                   else "check that the capture covers this host and the call's time."))
        return [verdict(leg.name, d, KIND_NO_MEDIA, ERROR, text, packets=0, notes=list(leg.notes))
                for d in (inbound, outbound)]
    out: list[Verdict] = []
    if not packets[inbound]:
        out.append(verdict(
            leg.name, inbound, KIND_ONE_WAY, ERROR,
            f"One-way audio: the {leg.name} ({leg.peer}) sent no RTP to the media host {leg.media_host}, which sent it "
            f"{packets[outbound]} packets — the {leg.name} side is not sending (mute, firewall or NAT).",
            packets=0, opposite_packets=packets[outbound]))
    if not packets[outbound]:
        sources = {o.name: packets[peer_to_relay(o.name)] for o in legs if o.name != leg.name}
        arrived = sum(sources.values())
        if arrived:
            names = " and ".join(f"the {n}" for n, n_pk in sources.items() if n_pk)
            out.append(verdict(
                leg.name, outbound, KIND_NOT_RELAYED, ERROR,
                f"Not relayed: the media host {leg.media_host} received {arrived} RTP packets from {names} but sent "
                f"none to the {leg.name} ({leg.peer}) — the relay dropped this direction.",
                packets=0, arrived_on_other_leg=arrived, **{f"{n}_to_relay": n_pk for n, n_pk in sources.items()}))
        else:
            out.append(verdict(
                leg.name, outbound, KIND_ONE_WAY, ERROR,
                f"One-way audio: the media host {leg.media_host} sent no RTP to the {leg.name} ({leg.peer}); it had "
                "nothing to relay, since no other leg sent it audio either.",
                packets=0, arrived_on_other_leg=0))
    return out


def _timing_verdicts(leg: str, direction: str, audio: Sequence[PlacedStream], sip: SipTimeline,
                     clock: _Clock, media_start_s: float | None) -> list[Verdict]:
    """Late start after the 200 OK; audio that stopped well before the BYE (and whether a hold explains it).

    Late is judged against the 200 OK and the call's first RTP in any direction: when every direction starts
    late, the capture started late (mid-call), not the audio.
    """
    out: list[Verdict] = []
    first_s = clock.capture_s(min(s.analysis.stats.first_s for s in audio))
    last_s = clock.capture_s(max(s.analysis.stats.last_s for s in audio))
    answer_s = clock.abs_s(sip.answer_ns)
    if answer_s is not None and media_start_s is not None:
        late_by = first_s - max(answer_s, media_start_s)
        if late_by > LATE_START_S:
            out.append(verdict(
                leg, direction, KIND_LATE_START, WARNING,
                f"Audio {direction} started at {first_s:.1f} s, {first_s - answer_s:.1f} s after the 200 OK and "
                f"{late_by:.1f} s after audio flowed the other ways: the start of the conversation was not heard.",
                answer_s=answer_s, call_media_start_s=media_start_s, first_packet_s=first_s, late_by_s=round(late_by, 3)))
    bye_s = clock.abs_s(sip.bye_ns)
    if bye_s is not None and bye_s - last_s > STOP_BEFORE_END_S:
        out.append(_stop(leg, direction, last_s, None, sip, clock, bye_s=bye_s))
    return out


def _stop(leg: str, direction: str, at_s: float, resumed_s: float | None, sip: SipTimeline, clock: _Clock,
          *, bye_s: float | None) -> Verdict:
    """'Audio stops at T': explained by a hold (info) or not (warning); with when it came back, if it did."""
    hold = _explaining_hold(sip.holds, at_s, resumed_s, clock)
    back = f", and came back at {resumed_s:.1f} s" if resumed_s is not None else ""
    until = f" while the call went on until the BYE at {bye_s:.1f} s" if bye_s is not None and resumed_s is None else ""
    evidence: dict[str, Any] = {"stopped_at_s": at_s, "resumed_at_s": resumed_s, "bye_s": bye_s}
    if hold is not None:
        evidence["hold"] = hold.to_json(clock.call_origin_ns)
        text = (f"Audio {direction} stopped at {at_s:.1f} s{back}{until}; explained by a hold: {hold.src} sent "
                f"{hold.how} at {clock.at_s(hold.ts_ns):.1f} s.")
        return verdict(leg, direction, KIND_STOPS, INFO, text, **evidence)
    text = (f"Audio {direction} stopped at {at_s:.1f} s{back}{until}; no re-INVITE put the call on hold and no BYE "
            "explains it.")
    return verdict(leg, direction, KIND_STOPS, WARNING, text, **evidence)


def _explaining_hold(holds: Sequence[HoldEvent], at_s: float, resumed_s: float | None,
                     clock: _Clock) -> HoldEvent | None:
    """The hold that explains a stop: the last hold offer sent before it (or within HOLD_WINDOW_S after it, not after
    the audio resumed) — of a re-INVITE forwarded hop by hop, its first message (who put the call on hold)."""
    before = [h for h in holds if clock.at_s(h.ts_ns) <= at_s + HOLD_WINDOW_S
              and (resumed_s is None or clock.at_s(h.ts_ns) <= resumed_s)]
    if not before:
        return None
    last = before[-1].ts_ns
    return next(h for h in before if last - h.ts_ns <= HOLD_WINDOW_S * NS_PER_S)


def _ssrc_verdicts(leg: str, direction: str, audio: Sequence[PlacedStream], clock: _Clock) -> list[Verdict]:
    """A sender that changed SSRC on the same addresses (a new stream mid-call: some endpoints mute it)."""
    out: list[Verdict] = []
    by_flow: dict[tuple[str, int, str, int], list[PlacedStream]] = {}
    for s in audio:
        st = s.analysis.stats
        by_flow.setdefault((st.src, st.sport, st.dst, st.dport), []).append(s)
    for flow, group in by_flow.items():
        for old, new in zip(group, group[1:]):
            a, b = old.analysis.stats, new.analysis.stats
            at = clock.capture_s(b.first_s)
            out.append(verdict(
                leg, direction, KIND_SSRC_CHANGE, WARNING,
                f"The sender {flow[0]}:{flow[1]} changed SSRC from 0x{a.ssrc:08X} to 0x{b.ssrc:08X} at {at:.1f} s "
                "without a new SDP; a receiver that locks on the first SSRC goes silent.",
                from_ssrc=f"0x{a.ssrc:08X}", to_ssrc=f"0x{b.ssrc:08X}", at_s=at, packets_before=a.packets,
                packets_after=b.packets))
    return out


def _silences(s: PlacedStream, clock: _Clock) -> list[tuple[float, float]]:
    """(stopped, resumed) seconds of every run of empty 100 ms bins of at least SILENCE_S inside the stream."""
    st = s.analysis.stats
    bins = st.per_100ms
    first = int(st.first_s * MS_PER_S // BIN_MS)
    need = int(SILENCE_S * MS_PER_S // BIN_MS)
    out = []
    run_start = None
    for i in range(first, len(bins)):
        if bins[i] == 0:
            run_start = i if run_start is None else run_start
        elif run_start is not None:
            if i - run_start >= need:
                out.append((clock.capture_s(run_start * BIN_MS / MS_PER_S), clock.capture_s(i * BIN_MS / MS_PER_S)))
            run_start = None
    return out


def _stream_verdicts(leg: str, direction: str, s: PlacedStream, sip: SipTimeline, clock: _Clock) -> list[Verdict]:
    """Per stream: silences inside it, sequence gaps (bursts), SRTP authentication failures."""
    st = s.analysis.stats
    out: list[Verdict] = []
    if s.is_audio:
        out += [_stop(leg, direction, stop, back, sip, clock, bye_s=None) for stop, back in _silences(s, clock)]
    if st.unique_lost:
        longest = max(g.missing for g in st.gaps)
        pct = 100.0 * st.unique_lost / max(1, st.unique_lost + st.packets - st.duplicates)
        severity: Severity = (ERROR if pct >= LOSS_ERROR_PCT else
                              WARNING if pct >= LOSS_WARN_PCT or longest >= BURST_PACKETS else INFO)
        bursts = sum(1 for g in st.gaps if g.missing >= BURST_PACKETS)
        out.append(verdict(
            leg, direction, KIND_GAPS, severity,
            f"{st.unique_lost} RTP packets missing ({pct:.1f} %) from 0x{st.ssrc:08X} in {len(st.gaps)} gap(s), the "
            f"longest {longest} packets; {bursts} burst(s) of {BURST_PACKETS} or more.",
            ssrc=f"0x{st.ssrc:08X}", lost=st.unique_lost, loss_pct=round(pct, 2), gaps=len(st.gaps),
            bursts=bursts, longest_gap=longest,
            first_gaps=[{"at_s": clock.capture_s(g.after_s), "missing": g.missing} for g in st.gaps[:EVIDENCE_GAPS]]))
    srtp = s.analysis.srtp
    if srtp is not None and srtp.auth_failed:
        severity = ERROR if not srtp.decrypted else WARNING
        out.append(verdict(
            leg, direction, KIND_SRTP_AUTH, severity,
            f"{srtp.auth_failed} of {st.packets} SRTP packets from 0x{st.ssrc:08X} failed authentication "
            f"({srtp.decrypted} decrypted): {'wrong key or the SDP of another call' if not srtp.decrypted else 'corrupted or replayed packets'}.",
            ssrc=f"0x{st.ssrc:08X}", auth_failed=srtp.auth_failed, decrypted=srtp.decrypted, status=srtp.status))
    return out


def _source_verdicts(leg: LegRef) -> list[Verdict]:
    """RTP from an address other than the SDP's: the learned peer media/latch.py adopted (NAT, multi-homed)."""
    return [verdict(leg.name, peer_to_relay(leg.name), KIND_OTHER_SOURCE, WARNING, f"The {lp.note()}.",
                    sdp=lp.sdp_peer, real=lp.peer, relay=lp.relay, packets=lp.packets, what=lp.kind)
            for lp in leg.learned]
