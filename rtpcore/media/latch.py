"""Decide, across all raw files of a call, which candidate packets are the call's: learned peers and late RTCP.

The media host's own endpoint from its SDP is authoritative; the peer's is not (NAT, multi-homed phones,
carriers that answer from one media address and send from another; the relay latches onto the real
source — symmetric RTP / "comedia"). When the SDP peer sent nothing to the media host's endpoint in the
window but exactly one other address:port did, that one is the peer of that stream. Two or more other
senders are never merged: the ambiguity is reported. RTCP after a negotiation's window (final reports
after the BYE) is the call's when its SSRC is one of the leg's streams.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rtpcore.fsutil import atomic_output
from rtpcore.media.candidates import CANDIDATE_LATCH, endpoint_text, is_rtcp, sender_ssrc
from rtpcore.media.demux import DEFAULT_MIN_PACKETS, FileResult, LegFile, output_name
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.plan import Endpoint, Leg, LegPlan, MediaSide, Negotiation

__all__ = ["Adoption", "LearnedPeer", "adopt"]

log = logging.getLogger(__name__)

_Record = tuple[int, int, bytes, int]
UNRESOLVED = ("0.0.0.0:", "[::]:")  # rtpcore.sip.legs puts a c= name's side there


@dataclass(frozen=True, slots=True)
class LearnedPeer:
    """A stream whose peer was learned from the media: where it really came from, and what its SDP said."""

    leg: str
    kind: str          # "RTP" | "RTCP" (the media host endpoint's role)
    relay: str
    sdp_peer: str
    peer: str
    packets: int

    def note(self) -> str:
        """The report line a support engineer reads."""
        what = "" if self.kind == "RTP" else " RTCP"
        if self.sdp_peer.startswith(UNRESOLVED):
            return (f"{self.leg} peer{what} sent from {self.peer}; its SDP gave a name, not an address "
                    f"({self.packets} packets to the media host's {self.relay}, decrypted with the SDP keys)")
        return (f"{self.leg} peer{what} sent from {self.peer}; its SDP said {self.sdp_peer} — NAT or multi-homed "
                f"({self.packets} packets to the media host's {self.relay}, decrypted with the SDP keys)")


@dataclass(frozen=True, slots=True)
class Adoption:
    """The plan with learned peers substituted, the results with adopted packets, and what to report."""

    plan: LegPlan
    results: tuple[FileResult, ...]
    learned: tuple[LearnedPeer, ...]
    findings: tuple[str, ...]
    warnings: tuple[str, ...]
    late_rtcp: int     # RTCP packets adopted after a window's end


def _sdp_peers(plan: LegPlan) -> dict[tuple[str, str], tuple[str, set[str]]]:
    """(leg, media host endpoint) → (its role, the SDP peer endpoints it negotiated with)."""
    peers: dict[tuple[str, str], tuple[str, set[str]]] = {}
    for leg in plan.legs:
        for n in leg.negotiations:
            for kind, host, peer in (("RTP", n.host.rtp, n.peer.rtp), ("RTCP", n.host.rtcp, n.peer.rtcp)):
                role, found = peers.setdefault((leg.name, str(host)), (kind, set()))
                found.add(str(peer))
    return peers


def _decide(
    plan: LegPlan, results: Sequence[FileResult]
) -> tuple[dict[tuple[str, str], str], list[LearnedPeer], list[str], list[str]]:
    """(src, dst) → leg of every accepted learned flow, the learned peers, findings, warnings."""
    exact_in: dict[tuple[str, str, str], int] = {}
    for r in results:
        for leg, src, dst, n in r.exact_flows:
            exact_in[(leg, src, dst)] = exact_in.get((leg, src, dst), 0) + n
    senders: dict[tuple[str, str], dict[str, int]] = {}
    for r in results:
        for f in r.candidates:
            if f.kind == CANDIDATE_LATCH and not f.tail and f.dst == f.relay:
                per = senders.setdefault((f.leg, f.relay), {})
                per[f.src] = per.get(f.src, 0) + f.packets
    accepted: dict[tuple[str, str], str] = {}
    learned: list[LearnedPeer] = []
    findings: list[str] = []
    warnings: list[str] = []
    sdp = _sdp_peers(plan)
    for (leg, relay), others in senders.items():
        kind, sdp_peers = sdp.get((leg, relay), ("RTP", set()))
        said = " / ".join(sorted(sdp_peers)) or "?"
        heard = sum(exact_in.get((leg, p, relay), 0) for p in sdp_peers)
        listing = ", ".join(f"{src} ({n} packets)" for src, n in sorted(others.items()))
        if heard:
            warnings.append(f"{leg} leg: the media host's {relay} also received {kind} from {listing}, not its SDP "
                            f"peer {said}; not merged (the SDP peer sent {heard} packets)")
            continue
        if len(others) > 1:
            findings.append(f"{leg} leg: the media host's {relay} received {kind} from {len(others)} addresses "
                            f"({listing}) and none from its SDP peer {said}: ambiguous, nothing merged — two "
                            "devices on one port, or a NAT that changed the source; check the capture")
            continue
        (peer, n), = others.items()
        learned.append(LearnedPeer(leg, kind, relay, said, peer, n))
        accepted[(peer, relay)] = accepted[(relay, peer)] = leg
    return accepted, learned, findings, warnings


def _substitute(plan: LegPlan, learned: Sequence[LearnedPeer]) -> LegPlan:
    """The plan with each learned peer endpoint in place of the SDP's, keys kept (the SDP keys still apply)."""
    if not learned:
        return plan
    by_relay = {(lp.leg, lp.relay): Endpoint.parse(lp.peer) for lp in learned}
    legs: list[Leg] = []
    for leg in plan.legs:
        negotiations: list[Negotiation] = []
        for n in leg.negotiations:
            rtp = by_relay.get((leg.name, str(n.host.rtp)), n.peer.rtp)
            rtcp = by_relay.get((leg.name, str(n.host.rtcp)), rtp if n.peer.rtcp_mux else n.peer.rtcp)
            peer: MediaSide = replace(n.peer, rtp=rtp, rtcp=rtcp)
            negotiations.append(replace(n, peer=peer))
        legs.append(replace(leg, negotiations=tuple(negotiations)))
    return replace(plan, legs=tuple(legs))


def _pairs(plan: LegPlan) -> dict[tuple[str, str], str]:
    """(src, dst) endpoint texts → leg, for every negotiated pair, RTP and RTCP, both directions."""
    pairs: dict[tuple[str, str], str] = {}
    for leg in plan.legs:
        for n in leg.negotiations:
            for a, b in ((n.peer.rtp, n.host.rtp), (n.peer.rtcp, n.host.rtcp)):
                pairs[(str(a), str(b))] = pairs[(str(b), str(a))] = leg.name
    return pairs


def _flow(record: _Record) -> tuple[str, str, int | None, bool] | None:
    """(src, dst, sender SSRC, is RTCP) of a candidate record."""
    _, linktype, data, _ = record
    l3 = link_payload(linktype, data)
    ip = parse_ip(l3) if l3 else None
    udp = parse_udp(ip) if ip else None
    if udp is None:
        return None
    payload = udp.payload
    return endpoint_text(udp.src, udp.sport), endpoint_text(udp.dst, udp.dport), sender_ssrc(payload), is_rtcp(payload)


def _leg_ssrcs(results: Sequence[FileResult]) -> dict[str, set[int]]:
    """Sender SSRCs of every RTP/RTCP packet in the legs' files: what late RTCP must belong to."""
    ssrcs: dict[str, set[int]] = {}
    for r in results:
        for lf in r.legs:
            if lf.output is None or not lf.output.exists():
                continue
            found = ssrcs.setdefault(lf.leg, set())
            for record in _read(lf.output)[0]:
                flow = _flow(record)
                if flow is not None and flow[2] is not None:
                    found.add(flow[2])
    return ssrcs


def _read(path: Path) -> tuple[list[_Record], int]:
    """A small per-leg or candidates pcap, whole: these hold one call's packets only."""
    with open_capture(path) as reader:
        return list(reader.records()), reader.linktype


def _merge_into(leg_file: LegFile, records: list[_Record], linktype: int, output: Path, min_packets: int) -> LegFile:
    """The leg's file of this raw file, rewritten with the adopted records in time order."""
    existing: list[_Record] = []
    if leg_file.output is not None and leg_file.output.exists():
        existing, linktype = _read(leg_file.output)
    merged = sorted(existing + records, key=lambda r: r[0])
    total = leg_file.packets + len(records)
    if total <= min_packets:
        return replace(leg_file, packets=total)
    with atomic_output(output, overwrite=True) as temp, PcapWriter(temp, linktype, nanosecond=True) as writer:
        writer.write_many((ts, data, orig_len) for ts, _, data, orig_len in merged)
    return LegFile(leg_file.leg, output, total, True)


def adopt(
    plan: LegPlan, results: Sequence[FileResult], *, min_packets: int = DEFAULT_MIN_PACKETS
) -> Adoption:
    """Decide on every file's candidates at once, move the adopted packets into the legs' files, drop the rest."""
    accepted, learned, findings, warnings = _decide(plan, results)
    ssrcs: dict[str, set[int]] = {}
    if any(f.tail for r in results for f in r.candidates):
        ssrcs = _leg_ssrcs(results)  # only late RTCP needs them: the common case reads nothing more
    for r in results:
        for f in r.candidates:
            if f.kind == CANDIDATE_LATCH and not f.tail and (f.src, f.dst) in accepted:
                ssrcs.setdefault(f.leg, set()).update(f.ssrcs)
    new_plan = _substitute(plan, learned)
    exact_leg = _pairs(plan) | _pairs(new_plan)
    late = 0
    out: list[FileResult] = []
    for r in results:
        if r.candidates_file is None or not r.candidates_file.exists():
            out.append(r)
            continue
        records, linktype = _read(r.candidates_file)
        by_leg: dict[str, list[_Record]] = {}
        for record in records:
            flow = _flow(record)
            if flow is None:
                continue
            src, dst, ssrc, rtcp = flow
            leg = accepted.get((src, dst))
            if leg is None:
                leg = exact_leg.get((src, dst))
                if leg is None or not rtcp:
                    continue
            if rtcp and ssrc not in ssrcs.get(leg, set()):
                continue  # late RTCP of another call that reuses the ports, or an unknown stream
            by_leg.setdefault(leg, []).append(record)
            late += int(rtcp and (src, dst) not in accepted)
        legs = list(r.legs)
        for leg, adopted in by_leg.items():
            i = next(i for i, lf in enumerate(legs) if lf.leg == leg)
            legs[i] = _merge_into(legs[i], adopted, linktype, r.candidates_file.parent / output_name(r.source, leg),
                                  min_packets)
        times = [t for t in (r.first_ns, r.last_ns) if t is not None]
        times += [rec[0] for recs in by_leg.values() for rec in recs]
        first, last = (min(times), max(times)) if times else (None, None)
        r.candidates_file.unlink(missing_ok=True)
        out.append(replace(r, legs=tuple(legs), first_ns=first, last_ns=last, candidates_file=None))
    notes = [lp.note() for lp in learned] + findings
    for line in notes + warnings:
        log.warning(line)
    if notes or warnings:
        new_plan = replace(new_plan, findings=tuple(dict.fromkeys(new_plan.findings + tuple(notes))),
                           warnings=tuple(dict.fromkeys(new_plan.warnings + tuple(warnings))))
    return Adoption(new_plan, tuple(out), tuple(learned), tuple(notes), tuple(warnings), late)
