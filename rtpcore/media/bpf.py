"""The BPF expression that keeps exactly one call's media out of a busy media host's capture."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.plan import Endpoint, LegPlan, Negotiation

__all__ = ["Pair", "leg_filter", "leg_pairs", "negotiation_pairs"]

# (src ip, src port, dst ip, dst port), ip as `ipaddress` formats it: the key both BPF and routing use.
Pair = tuple[str, int, str, int]

# libpcap knows 802.1Q only on Ethernet-like links; on cooked (SLL/SLL2) captures the kernel has
# already stripped the tags, and a RAW capture has no link header at all.
VLAN_LINKTYPES = frozenset({LINKTYPE_ETHERNET})


def _address(ip: str) -> str:
    """Canonical text of an address, so SDP spellings ("2001:DB8::0:1") meet the decoder's."""
    return str(ipaddress.ip_address(ip))


def _pair(src: Endpoint, dst: Endpoint) -> Pair:
    return (_address(src.ip), src.port, _address(dst.ip), dst.port)


def negotiation_pairs(negotiation: Negotiation) -> Iterator[Pair]:
    """RTP and RTCP, both directions, of one offer/answer (rtcp-mux makes RTCP pairs equal the RTP ones)."""
    peer, host = negotiation.peer, negotiation.host
    yield _pair(peer.rtp, host.rtp)
    yield _pair(host.rtp, peer.rtp)
    yield _pair(peer.rtcp, host.rtcp)
    yield _pair(host.rtcp, peer.rtcp)


def leg_pairs(plan: LegPlan) -> list[Pair]:
    """Every distinct endpoint pair of every leg and negotiation, in plan order."""
    seen: dict[Pair, None] = {}
    for leg in plan.legs:
        for negotiation in leg.negotiations:
            for pair in negotiation_pairs(negotiation):
                seen.setdefault(pair, None)
    return list(seen)


def _clause(pair: Pair) -> str:
    src, sport, dst, dport = pair
    return f"(src host {src} and src port {sport} and dst host {dst} and dst port {dport})"


def leg_filter(plan: LegPlan, linktype: int = LINKTYPE_ETHERNET, *, vlan_tags: bool = True) -> str:
    """One expression for all legs; on Ethernet it also matches 802.1Q and QinQ (0x88a8/0x9100) frames.

    With vlan_tags=False (a file whose first frames carry no tag) the exact per-pair test is compiled
    once and any tagged frame is let through whole, to be routed exactly in Python: the nested VLAN
    copies triple the program, and every packet of the file pays for its length.
    """
    pairs = leg_pairs(plan)
    if not pairs:
        raise ValueError(f"call {plan.call_id}: the leg plan has no media endpoints to filter on")
    core = f"udp and ({' or '.join(_clause(p) for p in pairs)})"
    if linktype not in VLAN_LINKTYPES:
        return core
    if not vlan_tags:
        return f"({core}) or vlan"
    # libpcap's `vlan` shifts the offsets of everything after it in the expression, even across `or`,
    # so "(F) or (vlan and F) or (vlan and vlan and F)" would test a triple tag in its last term:
    # nest instead, each `vlan` adding one tag to the terms inside it.
    return f"({core}) or (vlan and (({core}) or (vlan and ({core}))))"
