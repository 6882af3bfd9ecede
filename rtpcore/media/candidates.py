"""Packets the exact routing left out but that may still be the call's: learned peers and late RTCP.

Files are filtered in parallel processes, so no single file can decide whether a peer that is not in the SDP
is the call's (another file may show the SDP peer sending) or whether an RTCP report after the call's end
belongs to one of its streams (its RTP may be in an earlier chunk). Each file therefore hands these packets
over as *candidates* — a summary per flow plus a small pcap of the packets — and `rtpcore.media.latch`
decides across all files.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rtpcore.media.bpf import Pair, canonical_address, usable
from rtpcore.media.rtp import RTCP_APP, RTCP_SR, RTP_VERSION
from rtpcore.pcap.layers import UdpDatagram
from rtpcore.plan import Endpoint, LegPlan

__all__ = [
    "CANDIDATE_LATCH", "CANDIDATE_TAIL", "RTCP_TAIL_NS", "CandidateFlow", "CandidateCollector", "endpoint_text",
    "is_rtcp", "sender_ssrc",
]

# Final RTCP reports (an SR/BYE after the call's BYE) come later than media: how long after a negotiation's
# window (which already has DEFAULT_MARGIN_NS) an RTCP packet of one of the call's SSRCs is still the call's.
RTCP_TAIL_NS = 5 * 10**9
CANDIDATE_LATCH = "latch"   # to/from the media host's endpoint, with a peer the SDP did not name
CANDIDATE_TAIL = "tail"     # RTCP on the call's exact pair, after the window
RTCP_PT_FIRST, RTCP_PT_LAST = RTCP_SR, RTCP_APP   # SR, RR, SDES, BYE, APP: what a compound RTCP starts with
RTP_SSRC = slice(8, 12)
RTCP_SSRC = slice(4, 8)


def is_rtcp(payload: bytes) -> bool:
    """Version 2 and an RTCP packet type: SRTCP keeps this header in clear."""
    return len(payload) >= 8 and payload[0] >> 6 == RTP_VERSION and RTCP_PT_FIRST <= payload[1] <= RTCP_PT_LAST


def sender_ssrc(payload: bytes) -> int | None:
    """The sender's SSRC of an RTP or RTCP packet (clear in SRTP/SRTCP too); None when it is neither."""
    if len(payload) < 12 or payload[0] >> 6 != RTP_VERSION:
        return None if not is_rtcp(payload) else int.from_bytes(payload[RTCP_SSRC], "big")
    return int.from_bytes(payload[RTCP_SSRC if is_rtcp(payload) else RTP_SSRC], "big")


def endpoint_text(ip: str, port: int) -> str:
    """'ip:port' or '[v6]:port', as Endpoint prints it."""
    return str(Endpoint(ip, port))


@dataclass(frozen=True, slots=True)
class CandidateFlow:
    """One flow of candidate packets in one raw file: what the cross-file decision needs."""

    kind: str          # CANDIDATE_LATCH | CANDIDATE_TAIL
    leg: str
    src: str           # endpoint text
    dst: str
    relay: str         # the media host's endpoint of the flow
    packets: int
    first_ns: int
    last_ns: int
    ssrcs: tuple[int, ...]
    tail: bool = False  # a latch candidate seen only after the window (RTCP): accepted with the tail rule


@dataclass(slots=True)
class _Flow:
    """Counters of one candidate flow while a file is read."""

    packets: int = 0
    first_ns: int = 0
    last_ns: int = 0
    ssrcs: dict[int, None] = field(default_factory=dict)


_Window = tuple[str, int, int]  # leg, start, end


class CandidateCollector:
    """Classify the packets exact routing did not take; keep those that may be the call's, with their flow."""

    def __init__(self, plan: LegPlan, exact: dict[Pair, list[_Window]]) -> None:
        self._exact = exact
        self._relays: dict[tuple[str, int], list[_Window]] = {}
        for leg in plan.legs:
            for n in leg.negotiations:
                for ep in dict.fromkeys((n.host.rtp, n.host.rtcp)):
                    if usable(ep):
                        key = (canonical_address(ep.ip), ep.port)
                        self._relays.setdefault(key, []).append((leg.name, n.start_ns, n.end_ns))
        self._flows: dict[tuple[str, str, str, str, str, bool], _Flow] = {}
        self.records: list[tuple[int, int, bytes, int]] = []

    def offer(self, record: tuple[int, int, bytes, int], udp: UdpDatagram) -> None:
        """Keep the record when it is a candidate (see the module docstring); ignore it otherwise."""
        ts = record[0]
        payload = udp.payload
        rtcp = is_rtcp(payload)
        pair = (udp.src, udp.sport, udp.dst, udp.dport)
        windows = self._exact.get(pair)
        if windows:
            if rtcp:
                leg = next((name for name, _, end in windows if end < ts <= end + RTCP_TAIL_NS), None)
                if leg is not None:
                    relay = (udp.dst, udp.dport) if (udp.dst, udp.dport) in self._relays else (udp.src, udp.sport)
                    self._keep(record, CANDIDATE_TAIL, leg, udp, relay, payload, tail=True)
            return
        for relay in ((udp.dst, udp.dport), (udp.src, udp.sport)):
            for name, start, end in self._relays.get(relay, ()):
                if start <= ts <= end:
                    self._keep(record, CANDIDATE_LATCH, name, udp, relay, payload, tail=False)
                    return
                if rtcp and end < ts <= end + RTCP_TAIL_NS:
                    self._keep(record, CANDIDATE_LATCH, name, udp, relay, payload, tail=True)
                    return

    def _keep(
        self, record: tuple[int, int, bytes, int], kind: str, leg: str, udp: UdpDatagram, relay: tuple[str, int],
        payload: bytes, *, tail: bool,
    ) -> None:
        """Count the record under its flow and hold it for the candidates pcap."""
        key = (kind, leg, endpoint_text(udp.src, udp.sport), endpoint_text(udp.dst, udp.dport),
               endpoint_text(*relay), tail)
        flow = self._flows.get(key)
        ts = record[0]
        if flow is None:
            flow = self._flows[key] = _Flow(first_ns=ts, last_ns=ts)
        flow.packets += 1
        flow.first_ns, flow.last_ns = min(flow.first_ns, ts), max(flow.last_ns, ts)
        ssrc = sender_ssrc(payload)
        if ssrc is not None:
            flow.ssrcs.setdefault(ssrc, None)
        self.records.append(record)

    def flows(self) -> tuple[CandidateFlow, ...]:
        """The per-flow summary, in first-seen order."""
        return tuple(
            CandidateFlow(kind, leg, src, dst, relay, f.packets, f.first_ns, f.last_ns, tuple(f.ssrcs), tail)
            for (kind, leg, src, dst, relay, tail), f in self._flows.items()
        )
