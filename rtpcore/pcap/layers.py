"""Decode captured frames down to UDP/TCP: link layers, IPv4/IPv6, tunnels; pure struct parsing."""
from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from functools import lru_cache

from rtpcore.errors import UnsupportedLinkTypeError
from rtpcore.pcap.linktypes import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    SUPPORTED_LINKTYPES,
    linktype_name,
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8
ETHERTYPE_QINQ_OLD = 0x9100
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging (Ethernet inside GRE)
ETHERTYPE_ERSPAN_II = 0x88BE
ETHERTYPE_ERSPAN_III = 0x22EB
VLAN_ETHERTYPES = frozenset({ETHERTYPE_VLAN, ETHERTYPE_QINQ, ETHERTYPE_QINQ_OLD})
IP_ETHERTYPES = frozenset({ETHERTYPE_IPV4, ETHERTYPE_IPV6})
ETH_HEADER_LEN = 14
VLAN_TAG_LEN = 4
SLL_HEADER_LEN = 16
SLL2_HEADER_LEN = 20
NULL_HEADER_LEN = 4

AF_INET = 2
AF_INET6_VALUES = frozenset({10, 24, 28, 30})  # Linux, NetBSD/OpenBSD, FreeBSD, macOS

IPPROTO_HOPOPTS = 0
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_DSTOPTS = 60
IPV6_SKIPPABLE_EXT = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS})

IPV4_MIN_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
IPV6_FRAGMENT_HEADER_LEN = 8
IPV4_MF = 0x2000
IPV4_OFFSET_MASK = 0x1FFF
IPV6_OFFSET_MASK = 0xFFF8
IPV6_MF = 0x0001
UDP_HEADER_LEN = 8
TCP_MIN_HEADER_LEN = 20

GRE_CHECKSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQUENCE = 0x1000
GRE_VERSION_MASK = 0x0007
GRE_HEADER_LEN = 4
ERSPAN_II_HEADER_LEN = 8
ERSPAN_III_HEADER_LEN = 12
ERSPAN_III_SUBHEADER_LEN = 8
ERSPAN_III_FRAME_TYPE_IP = 2
MAX_TUNNEL_DEPTH = 8

_SUPPORTED_NAMES = ", ".join(linktype_name(lt) for lt in sorted(SUPPORTED_LINKTYPES))

_u16 = struct.Struct("!H").unpack_from
_u32 = struct.Struct("!I").unpack_from
_ipv4_header = struct.Struct("!BBHHHBBH4s4s").unpack_from
_ipv6_header = struct.Struct("!IHBB16s16s").unpack_from
_udp_header = struct.Struct("!HHH").unpack_from
_tcp_header = struct.Struct("!HHIIBB").unpack_from


@dataclass(frozen=True, slots=True)
class IpPacket:
    """An IPv4/IPv6 packet reduced to what the upper layers and the reassembler need."""

    version: int
    src: str
    dst: str
    proto: int
    payload: bytes
    ident: int
    frag_offset: int
    more_fragments: bool

    @property
    def is_fragment(self) -> bool:
        """True for any piece of a fragmented datagram (first, middle or last)."""
        return self.more_fragments or self.frag_offset != 0


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """A UDP datagram with its endpoints, payload trimmed to the UDP length."""

    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """A TCP segment with what stream reassembly needs."""

    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes


_v4_str = socket.inet_ntoa


@lru_cache(maxsize=4096)
def _v6_str(raw: bytes) -> str:
    """Format IPv6 as ipaddress does (inet_ntop differs for v4-mapped addresses); cached, few peers per file."""
    return str(ipaddress.IPv6Address(raw))


# -- link layer ------------------------------------------------------------------------------


def _ethertype_payload(ethertype: int, data: bytes, at: int) -> bytes | None:
    """Skip any stack of VLAN tags and return the IP bytes, or None for other protocols."""
    while ethertype in VLAN_ETHERTYPES:
        if len(data) < at + VLAN_TAG_LEN:
            return None
        ethertype = _u16(data, at + 2)[0]
        at += VLAN_TAG_LEN
    if ethertype in IP_ETHERTYPES:
        return data[at:]
    return None


def _raw_ip(data: bytes, versions: tuple[int, ...]) -> bytes | None:
    """Accept the bytes as IP when the version nibble is one we were told to expect."""
    if data and data[0] >> 4 in versions:
        return data
    return None


def link_payload(linktype: int, data: bytes) -> bytes | None:
    """Strip the link-layer header and return the IPv4/IPv6 bytes, or None for non-IP frames."""
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < ETH_HEADER_LEN:
            return None
        return _ethertype_payload(_u16(data, 12)[0], data, ETH_HEADER_LEN)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < SLL_HEADER_LEN:
            return None
        return _ethertype_payload(_u16(data, 14)[0], data, SLL_HEADER_LEN)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < SLL2_HEADER_LEN:
            return None
        return _ethertype_payload(_u16(data, 0)[0], data, SLL2_HEADER_LEN)
    if linktype == LINKTYPE_RAW:
        return _raw_ip(data, (4, 6))
    if linktype == LINKTYPE_IPV4:
        return _raw_ip(data, (4,))
    if linktype == LINKTYPE_IPV6:
        return _raw_ip(data, (6,))
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < NULL_HEADER_LEN:
            return None
        family = _u32(data, 0)[0]
        if linktype == LINKTYPE_NULL and family > 0xFFFF:
            family = struct.unpack_from("<I", data, 0)[0]  # written in the capturing host's byte order
        if family == AF_INET:
            return _raw_ip(data[NULL_HEADER_LEN:], (4,))
        if family in AF_INET6_VALUES:
            return _raw_ip(data[NULL_HEADER_LEN:], (6,))
        return None
    raise UnsupportedLinkTypeError(
        f"link type {linktype} ({linktype_name(linktype)}) is not supported; supported: {_SUPPORTED_NAMES}",
        linktype=linktype,
    )


# -- IP ----------------------------------------------------------------------------------------


def ipv6_upper_layer(next_header: int, data: bytes) -> tuple[int, bytes] | None:
    """Skip hop-by-hop/routing/destination-options headers; None when one runs past the data."""
    at = 0
    while next_header in IPV6_SKIPPABLE_EXT:
        if len(data) < at + 2:
            return None
        ext_len = (data[at + 1] + 1) * 8
        if len(data) < at + ext_len:
            return None
        next_header = data[at]
        at += ext_len
    return next_header, (data[at:] if at else data)


def _parse_ipv4(l3: bytes) -> IpPacket | None:
    """Parse IPv4: options skipped, payload cut at total length (drops Ethernet padding)."""
    if len(l3) < IPV4_MIN_HEADER_LEN:
        return None
    vihl, _, total_len, ident, frag, _, proto, _, src, dst = _ipv4_header(l3, 0)
    header_len = (vihl & 0x0F) * 4
    if header_len < IPV4_MIN_HEADER_LEN or len(l3) < header_len:
        return None
    if total_len == 0:
        total_len = len(l3)  # TCP segmentation offload on the capturing host leaves it 0
    elif total_len < header_len or total_len > len(l3):
        return None
    return IpPacket(
        4,
        _v4_str(src),
        _v4_str(dst),
        proto,
        l3[header_len:total_len],
        ident,
        (frag & IPV4_OFFSET_MASK) * 8,
        bool(frag & IPV4_MF),
    )


def _parse_ipv6(l3: bytes) -> IpPacket | None:
    """Parse IPv6: walk extension headers to the upper layer or the Fragment header."""
    if len(l3) < IPV6_HEADER_LEN:
        return None
    _, payload_len, next_header, _, src, dst = _ipv6_header(l3, 0)
    if payload_len == 0:
        payload_len = len(l3) - IPV6_HEADER_LEN  # jumbogram or segmentation offload
    elif IPV6_HEADER_LEN + payload_len > len(l3):
        return None
    rest = l3[IPV6_HEADER_LEN : IPV6_HEADER_LEN + payload_len]
    ident = frag_offset = 0
    more = False
    upper = ipv6_upper_layer(next_header, rest)
    if upper is None:
        return None
    next_header, rest = upper
    if next_header == IPPROTO_FRAGMENT:
        if len(rest) < IPV6_FRAGMENT_HEADER_LEN:
            return None
        next_header = rest[0]
        offset_flags = _u16(rest, 2)[0]
        ident = _u32(rest, 4)[0]
        frag_offset = offset_flags & IPV6_OFFSET_MASK
        more = bool(offset_flags & IPV6_MF)
        rest = rest[IPV6_FRAGMENT_HEADER_LEN:]
        if frag_offset == 0 and not more:
            # An atomic fragment is a whole packet: keep walking to the upper layer.
            upper = ipv6_upper_layer(next_header, rest)
            if upper is None:
                return None
            next_header, rest = upper
    return IpPacket(6, _v6_str(src), _v6_str(dst), next_header, rest, ident, frag_offset, more)


def parse_ip(l3: bytes) -> IpPacket | None:
    """Parse an IPv4 or IPv6 packet; None when it is malformed or cut short by the snaplen."""
    if not l3:
        return None
    version = l3[0] >> 4
    if version == 4:
        return _parse_ipv4(l3)
    if version == 6:
        return _parse_ipv6(l3)
    return None


# -- tunnels -----------------------------------------------------------------------------------


def _gre_inner(payload: bytes) -> bytes | None:
    """Return the inner L3 bytes of a GRE packet (plain, TEB, ERSPAN I/II/III), or None."""
    if len(payload) < GRE_HEADER_LEN:
        return None
    flags, proto = struct.unpack_from("!HH", payload, 0)
    if flags & GRE_VERSION_MASK or flags & GRE_ROUTING:
        return None  # PPTP enhanced GRE / RFC 1701 source routing: not tunnels we follow
    at = GRE_HEADER_LEN
    at += 4 if flags & GRE_CHECKSUM else 0
    at += 4 if flags & GRE_KEY else 0
    at += 4 if flags & GRE_SEQUENCE else 0
    if len(payload) < at:
        return None
    if proto in IP_ETHERTYPES:
        return payload[at:]
    if proto == ETHERTYPE_TEB:
        return link_payload(LINKTYPE_ETHERNET, payload[at:])
    if proto == ETHERTYPE_ERSPAN_II:
        # Type I has no sequence number and no ERSPAN header; type II carries both.
        if flags & GRE_SEQUENCE:
            at += ERSPAN_II_HEADER_LEN
        return link_payload(LINKTYPE_ETHERNET, payload[at:])
    if proto == ETHERTYPE_ERSPAN_III:
        if len(payload) < at + ERSPAN_III_HEADER_LEN:
            return None
        last = payload[at + ERSPAN_III_HEADER_LEN - 1]
        frame_type = (payload[at + ERSPAN_III_HEADER_LEN - 2] >> 2) & 0x1F
        at += ERSPAN_III_HEADER_LEN
        if last & 0x01:  # O flag: an optional platform-specific subheader follows
            at += ERSPAN_III_SUBHEADER_LEN
        if frame_type == ERSPAN_III_FRAME_TYPE_IP:
            return payload[at:]
        return link_payload(LINKTYPE_ETHERNET, payload[at:])
    return None


def unwrap_tunnels(ip: IpPacket) -> IpPacket:
    """Peel IP-in-IP, IPv6-in-IP and GRE/ERSPAN layers until the innermost IP packet; fragments stay."""
    for _ in range(MAX_TUNNEL_DEPTH):
        if ip.is_fragment:
            return ip
        if ip.proto in (IPPROTO_IPIP, IPPROTO_IPV6):
            inner_l3: bytes | None = ip.payload
        elif ip.proto == IPPROTO_GRE:
            inner_l3 = _gre_inner(ip.payload)
        else:
            return ip
        inner = parse_ip(inner_l3) if inner_l3 else None
        if inner is None or (ip.proto == IPPROTO_IPIP and inner.version != 4):
            return ip
        if ip.proto == IPPROTO_IPV6 and inner.version != 6:
            return ip
        ip = inner
    return ip


# -- transport ---------------------------------------------------------------------------------


def parse_udp(ip: IpPacket) -> UdpDatagram | None:
    """Parse UDP from a whole (non-fragment) packet; None when not UDP or malformed."""
    payload = ip.payload
    if ip.proto != IPPROTO_UDP or ip.is_fragment or len(payload) < UDP_HEADER_LEN:
        return None
    sport, dport, length = _udp_header(payload, 0)
    if length == 0:
        length = len(payload)  # IPv6 jumbogram
    elif length < UDP_HEADER_LEN or length > len(payload):
        return None
    return UdpDatagram(ip.src, sport, ip.dst, dport, payload[UDP_HEADER_LEN:length])


def parse_tcp(ip: IpPacket) -> TcpSegment | None:
    """Parse TCP from a whole (non-fragment) packet; None when not TCP or malformed."""
    payload = ip.payload
    if ip.proto != IPPROTO_TCP or ip.is_fragment or len(payload) < TCP_MIN_HEADER_LEN:
        return None
    sport, dport, seq, ack, offset_byte, flag_byte = _tcp_header(payload, 0)
    header_len = (offset_byte >> 4) * 4
    if header_len < TCP_MIN_HEADER_LEN or header_len > len(payload):
        return None
    flags = ((offset_byte & 0x01) << 8) | flag_byte
    return TcpSegment(ip.src, sport, ip.dst, dport, seq, ack, flags, payload[header_len:])
