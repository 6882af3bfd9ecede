"""The BPF expression that keeps exactly one call's media out of a busy media host's capture."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from rtpcore.errors import BpfBuildError
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.plan import Endpoint, LegPlan, Negotiation

__all__ = ["Pair", "leg_filter", "leg_pairs", "negotiation_pairs", "relay_endpoints", "usable", "canonical_address"]

# (src ip, src port, dst ip, dst port), ip as `ipaddress` formats it: the key both BPF and routing use.
Pair = tuple[str, int, str, int]

# libpcap knows 802.1Q only on Ethernet-like links; on cooked (SLL/SLL2) captures the kernel has
# already stripped the tags, and a RAW capture has no link header at all.
VLAN_LINKTYPES = frozenset({LINKTYPE_ETHERNET})


MAX_PORT = 65535


def _address(ip: str) -> str:
    """Canonical text of an address, so SDP spellings ("2001:DB8::0:1") meet the decoder's; a zone id is dropped."""
    try:
        return str(ipaddress.ip_address(ip.partition("%")[0]))
    except ValueError:
        raise BpfBuildError(
            f"our media filter cannot use the address {ip!r} (not an IPv4/IPv6 address); this is a bug in "
            "rtphelper's leg plan, not in the capture — please report it with the SIP pcap"
        ) from None


def canonical_address(ip: str) -> str:
    """The address text routing compares: ipaddress's spelling, zone id dropped."""
    return _address(ip)


def usable(endpoint: Endpoint) -> bool:
    """A port a packet can carry: RTP on 65535 puts RTCP on 65536, which no UDP packet can have."""
    return 0 < endpoint.port <= MAX_PORT


def _pair(src: Endpoint, dst: Endpoint) -> Pair:
    return (_address(src.ip), src.port, _address(dst.ip), dst.port)


def negotiation_pairs(negotiation: Negotiation) -> Iterator[Pair]:
    """RTP and RTCP, both directions, of one offer/answer (rtcp-mux makes RTCP pairs equal the RTP ones).

    A pair with an impossible port (RTCP after RTP port 65535) is left out: no packet can match it.
    """
    peer, host = negotiation.peer, negotiation.host
    for a, b in ((peer.rtp, host.rtp), (peer.rtcp, host.rtcp)):
        if usable(a) and usable(b):
            yield _pair(a, b)
            yield _pair(b, a)


def leg_pairs(plan: LegPlan) -> list[Pair]:
    """Every distinct endpoint pair of every leg and negotiation, in plan order."""
    seen: dict[Pair, None] = {}
    for leg in plan.legs:
        for negotiation in leg.negotiations:
            for pair in negotiation_pairs(negotiation):
                seen.setdefault(pair, None)
    return list(seen)


def relay_endpoints(plan: LegPlan) -> list[tuple[str, int]]:
    """The media host's own (address, port) of every negotiation, RTP and RTCP: the exact half of every pair."""
    seen: dict[tuple[str, int], None] = {}
    for leg in plan.legs:
        for negotiation in leg.negotiations:
            for ep in (negotiation.host.rtp, negotiation.host.rtcp):
                if usable(ep):
                    seen.setdefault((_address(ep.ip), ep.port), None)
    return list(seen)


def leg_filter(plan: LegPlan, linktype: int = LINKTYPE_ETHERNET, *, vlan_tags: bool = True) -> str:
    """One expression for all legs; on Ethernet it also matches 802.1Q and QinQ (0x88a8/0x9100) frames.

    It passes packets to or from the media host's own addresses and ports with any peer (the host side is
    what matters, the peer may be learned: NAT, multi-homed phones, latching relays); routing in Python keeps
    the exact pairs and hands packets on the host's exact endpoints with other peers over as candidates.

    With vlan_tags=False (a file whose first frames carry no tag) the exact test is compiled
    once and any tagged frame is let through whole, to be routed exactly in Python: the nested VLAN
    copies triple the program, and every packet of the file pays for its length.
    """
    relays = relay_endpoints(plan)
    if not relays:
        raise ValueError(f"call {plan.call_id}: the leg plan has no media endpoints to filter on")
    # Ports first, then hosts: on a media host's capture nearly every packet has one of its addresses, so a
    # per-endpoint "host and port" clause tests the address of every packet (measured 1.25x slower on
    # 2 x 256 MiB); the port test rejects almost all at once. Routing checks the exact endpoint afterwards.
    ports = " or ".join(f"port {p}" for p in sorted({port for _, port in relays}))
    hosts = " or ".join(f"host {h}" for h in dict.fromkeys(host for host, _ in relays))
    core = f"udp and ({ports}) and ({hosts})"
    if linktype not in VLAN_LINKTYPES:
        return core
    if not vlan_tags:
        return f"({core}) or vlan"
    # libpcap's `vlan` shifts the offsets of everything after it in the expression, even across `or`,
    # so "(F) or (vlan and F) or (vlan and vlan and F)" would test a triple tag in its last term:
    # nest instead, each `vlan` adding one tag to the terms inside it.
    return f"({core}) or (vlan and (({core}) or (vlan and ({core}))))"
