"""The correlation's analysis step: analyse media_decrypted.pcap once, place each stream on its leg, judge the legs.

Kept apart from the pipeline so the correlation core only calls `call_insight(...)` and writes its JSON.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rtpcore.analysis.call import CallAnalysis, SrtpResult, StreamAnalysis, analyze_capture
from rtpcore.analysis.dtmfrelay import DtmfCrossing, dtmf_crossings, dtmf_verdicts
from rtpcore.analysis.packets import RtpPacket
from rtpcore.analysis.sipevents import SipTimeline, timeline_of
from rtpcore.analysis.stats import StreamId
from rtpcore.analysis.verdicts import LegRef, PlacedStream, Verdict, call_verdicts, peer_to_relay, relay_to_peer
from rtpcore.fsutil import atomic_output
from rtpcore.pcap.reader import NS_PER_S
from rtpcore.media.decrypt import DecryptResult
from rtpcore.media.decrypt import StreamStats as DecryptStats
from rtpcore.media.latch import LearnedPeer
from rtpcore.plan import Endpoint, LegPlan

ANALYSIS_FILE = "analysis.json"
_Key = tuple[str, str, int]      # src endpoint, dst endpoint, SSRC


@dataclass(frozen=True, slots=True)
class CallInsight:
    """The analysis of the call's decrypted media, each stream on its leg and direction, and the verdicts."""

    analysis: CallAnalysis
    placed: tuple[PlacedStream, ...]
    verdicts: tuple[Verdict, ...]
    sip: SipTimeline
    dtmf_relay: tuple[DtmfCrossing, ...] = ()

    def stream_of(self, leg: str, src: str, dst: str, ssrc: int) -> StreamAnalysis | None:
        """The analysed stream a decrypt-stage stream (leg, src/dst endpoint texts, SSRC) corresponds to."""
        return next((p.analysis for p in self.placed if p.leg == leg and _key(p.analysis) == (src, dst, ssrc)), None)

    def leg_verdicts(self, leg: str) -> list[dict[str, Any]]:
        """The verdicts of one leg, JSON form."""
        return [v.to_json() for v in self.verdicts if v.leg == leg]

    def to_json(self) -> dict[str, Any]:
        """combined/analysis.json: `rtphelper analyze --json`'s document plus leg/direction per stream and verdicts."""
        doc = self.analysis.to_json()
        where = {_key(p.analysis): (p.leg, p.direction) for p in self.placed}
        for stream, s in zip(doc["streams"], self.analysis.streams):
            stream["leg"], stream["direction"] = where.get(_key(s), (None, None))
        doc["call_start_epoch_s"] = self.sip.start_ns / 1e9
        doc["verdicts"] = [v.to_json() for v in self.verdicts]
        doc["dtmf_relay"] = [c.to_json() for c in self.dtmf_relay]
        return doc

    def write(self, path: Path, facts: Mapping[str, Any] | None = None) -> Path:
        """Write the JSON document whole (staged, then renamed); facts (sip, direction, call_id) let `rtphelper report` rebuild."""
        with atomic_output(path, overwrite=True) as temp:
            temp.write_text(json.dumps({**(facts or {}), **self.to_json()}, indent=1) + "\n", encoding="utf-8")
        return path


def _key(s: StreamAnalysis) -> _Key:
    st = s.stats
    return str(Endpoint(st.src, st.sport)), str(Endpoint(st.dst, st.dport)), st.ssrc


def learned_peers(sdp_plan: LegPlan, plan: LegPlan, streams: Sequence[DecryptStats]) -> dict[str, list[LearnedPeer]]:
    """Per leg, the RTP peers media/latch.py substituted for the SDP's (the plans before and after learning)."""
    found: dict[str, list[LearnedPeer]] = {}
    for before, after in zip(sdp_plan.legs, plan.legs):
        for old, new in zip(before.negotiations, after.negotiations):
            if old.peer.rtp == new.peer.rtp:
                continue
            real, relay = str(new.peer.rtp), str(new.host.rtp)
            packets = sum(s.packets for s in streams if s.kind == "rtp" and (s.src, s.dst) == (real, relay))
            peer = LearnedPeer(after.name, "RTP", relay, str(old.peer.rtp), real, packets)
            if peer not in found.setdefault(after.name, []):
                found[after.name].append(peer)
    return found


def leg_refs(sdp_plan: LegPlan, plan: LegPlan, streams: Sequence[DecryptStats]) -> tuple[LegRef, ...]:
    """The legs as the verdicts see them."""
    learned = learned_peers(sdp_plan, plan, streams)
    return tuple(
        LegRef(leg.name, leg.media_host, leg.peer,
               tuple(dict.fromkeys(str(n.peer.rtp) for n in sdp_leg.negotiations)), tuple(learned.get(leg.name, ())),
               tuple(f for f in plan.findings if f.startswith(f"{leg.name} leg: ")))
        for sdp_leg, leg in zip(sdp_plan.legs, plan.legs))


def place(analysis: CallAnalysis, plan: LegPlan, streams: Sequence[DecryptStats]) -> tuple[PlacedStream, ...]:
    """Each analysed stream on the leg decryption filed it under, with its direction and SRTP result."""
    by_key: Mapping[_Key, DecryptStats] = {(s.src, s.dst, s.ssrc): s for s in streams if s.kind == "rtp"}
    hosts = {leg.name: {leg.media_host} | {str(n.host.rtp) for n in leg.negotiations} for leg in plan.legs}
    placed = []
    for s in analysis.streams:
        key = _key(s)
        found = by_key.get(key)
        if found is None:
            continue
        from_relay = key[0] in hosts.get(found.leg, set()) or s.stats.src in hosts.get(found.leg, set())
        direction = relay_to_peer(found.leg) if from_relay else peer_to_relay(found.leg)
        srtp = SrtpResult(found.key, found.decrypted, found.auth_failed)
        placed.append(PlacedStream(found.leg, direction, replace(s, srtp=srtp)))
    return tuple(placed)


def call_insight(sip: Path, sdp_plan: LegPlan, plan: LegPlan, decrypted: DecryptResult,
                 media_decrypted: Path, *, final_name: Path | None = None,
                 groups: Mapping[StreamId, Sequence[RtpPacket]] | None = None) -> CallInsight:
    """Analyse the decrypted media once (payload names from the SIP's SDP), place its streams, judge each leg.

    final_name: the path the capture will have once the staged results are committed (what the JSON names);
    groups: the collected RTP already grouped per stream (analyze_capture's groups).
    """
    from rtpcore.sip.capture import read_sip

    messages = read_sip(sip)
    analysis = analyze_capture(media_decrypted, sip=messages, media=decrypted.media, groups=groups)
    placed = place(analysis, plan, decrypted.streams)
    srtp = {_key(p.analysis): p.analysis.srtp for p in placed}
    analysis = replace(analysis, capture=final_name or media_decrypted,
                       streams=tuple(replace(s, srtp=srtp.get(_key(s))) for s in analysis.streams))
    timeline = timeline_of(messages, plan.call_ids, plan.start_ns, plan.end_ns)
    legs = leg_refs(sdp_plan, plan, decrypted.streams)
    crossings = dtmf_crossings(placed, analysis.sip_dtmf)
    order = {leg.name: n for n, leg in enumerate(legs)}
    verdicts = tuple(sorted(   # stable: each leg's verdicts stay together, in the legs' order
        call_verdicts(legs, placed, timeline, analysis.first_ts_ns)
        + dtmf_verdicts(crossings, (analysis.first_ts_ns - timeline.start_ns) / NS_PER_S),
        key=lambda v: order.get(v.leg, len(order))))
    return CallInsight(analysis, placed, verdicts, timeline, crossings)
