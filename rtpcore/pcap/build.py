"""Build and rewrite frames with correct lengths and checksums, so Wireshark shows them as real traffic."""
from __future__ import annotations

import hashlib
import ipaddress
import struct
from functools import lru_cache

from rtpcore.pcap.linktypes import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    linktype_name,
)

__all__ = [
    "build_udp",
    "build_tcp",
    "fragment_ip",
    "frame",
    "replace_udp_payload",
    "internet_checksum",
    "mac_for_address",
]

from rtpcore.pcap.layers import (  # noqa: E402  protocol numbers: one definition, shared with the parser
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ETHERTYPE_QINQ,
    ETHERTYPE_VLAN,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ROUTING,
    IPPROTO_TCP,
    IPPROTO_UDP,
)
from rtpcore.pcap.layers import IPV6_SKIPPABLE_EXT as _IPV6_CHAINED_HEADERS  # noqa: E402
from rtpcore.pcap.layers import VLAN_ETHERTYPES as _VLAN_ETHERTYPES  # noqa: E402

VLAN_ID_MAX = 4095

ARPHRD_ETHER = 1
LINUX_SLL_HOST = 0            # "sent to us": generated frames look like received traffic
SLL_ADDR_LEN = 6
SLL2_IF_INDEX = 1             # ifindex 0 does not exist on Linux
# BSD loopback address families. NULL is host-order (we write little-endian, as x86 BSD/macOS do);
# LOOP is network order. AF_INET6 differs per BSD (24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS); libpcap,
# Wireshark and scapy accept all three, we write 24 for both link types.
BSD_AF_INET = 2
BSD_AF_INET6 = 24

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
UDP_HEADER_LEN = 8
TCP_HEADER_LEN = 20
IPV6_FRAGMENT_HEADER_LEN = 8
IPV4_MAX_TOTAL_LEN = 0xFFFF
IPV4_FLAG_DF = 0x4000
IPV4_FLAG_MF = 0x2000
IPV4_OFFSET_MASK = 0x1FFF
IPV4_OPT_EOL = 0
IPV4_OPT_NOP = 1
IPV4_OPT_COPIED = 0x80
TCP_DEFAULT_WINDOW = 65535
DEFAULT_TTL = 64

_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")   # ver/ihl, tos, total len, id, flags/offset, ttl, proto, csum, src, dst
_IPV6_HEADER = struct.Struct("!IHBB16s16s")     # ver/tc/flow, payload len, next header, hop limit, src, dst
_UDP_HEADER = struct.Struct("!HHHH")
_TCP_HEADER = struct.Struct("!HHIIHHHH")
_IPV6_FRAGMENT = struct.Struct("!BBHI")         # next header, reserved, offset<<3 | M, ident
_ETH_HEADER = struct.Struct("!6s6sH")
_VLAN_TAG = struct.Struct("!HH")                # TCI, then the next ethertype
_SLL_HEADER = struct.Struct("!HHH8sH")          # packet type, ARPHRD, addr len, addr, protocol
_SLL2_HEADER = struct.Struct("!HHIHBB8s")       # protocol, reserved, if index, ARPHRD, packet type, addr len, addr


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum; the one's-complement word sum equals the big integer modulo 0xFFFF."""
    if len(data) & 1:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    folded = value % 0xFFFF
    if folded == 0 and value:
        folded = 0xFFFF
    return ~folded & 0xFFFF


@lru_cache(maxsize=1024)
def _packed(address: str) -> bytes:
    """Address string → network bytes (cached: a call generator repeats a handful of addresses)."""
    try:
        return ipaddress.ip_address(address).packed
    except ValueError:
        raise ValueError(f"{address!r} is not an IPv4 or IPv6 address") from None


def _address_pair(src: str, dst: str) -> tuple[bytes, bytes]:
    """Both addresses packed, and of the same family."""
    s, d = _packed(src), _packed(dst)
    if len(s) != len(d):
        raise ValueError(f"source {src} and destination {dst} are not the same IP version")
    return s, d


def _check_port(name: str, port: int) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"{name} {port} is outside 0..65535")


def _pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The IPv4 or IPv6 pseudo-header that UDP/TCP checksums cover."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def _ipv4_header(src: bytes, dst: bytes, proto: int, total_len: int, ip_id: int, flags_offset: int, ttl: int) -> bytes:
    """IPv4 header without options, checksum filled in."""
    header = _IPV4_HEADER.pack(0x45, 0, total_len, ip_id & 0xFFFF, flags_offset, ttl, proto, 0, src, dst)
    return _with_ipv4_checksum(header)


def _with_ipv4_checksum(header: bytes) -> bytes:
    """Return the IPv4 header with its checksum field recomputed."""
    zeroed = header[:10] + b"\x00\x00" + header[12:]
    return zeroed[:10] + struct.pack("!H", internet_checksum(zeroed)) + zeroed[12:]


def _ip_wrap(src: bytes, dst: bytes, proto: int, l4: bytes, ip_id: int, ttl: int) -> bytes:
    """Prefix an IPv4 or IPv6 header (by address length) to an L4 segment."""
    if not 0 <= ttl <= 0xFF:
        raise ValueError(f"ttl {ttl} is outside 0..255")
    if len(src) == 4:
        total = IPV4_HEADER_LEN + len(l4)
        if total > IPV4_MAX_TOTAL_LEN:
            raise ValueError(f"IPv4 packet of {total} bytes exceeds 65535")
        return _ipv4_header(src, dst, proto, total, ip_id, 0, ttl) + l4
    if len(l4) > 0xFFFF:
        raise ValueError(f"IPv6 payload of {len(l4)} bytes exceeds 65535 (jumbograms unsupported)")
    return _IPV6_HEADER.pack(6 << 28, len(l4), proto, ttl, src, dst) + l4


def _udp_segment(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """UDP header + payload with the checksum over the pseudo-header (0 is sent as 0xFFFF)."""
    length = UDP_HEADER_LEN + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} bytes exceeds 65535")
    header = _UDP_HEADER.pack(sport, dport, length, 0)
    checksum = internet_checksum(_pseudo_header(src, dst, IPPROTO_UDP, length) + header + payload) or 0xFFFF
    return _UDP_HEADER.pack(sport, dport, length, checksum) + payload


def build_udp(
    src: str, sport: int, dst: str, dport: int, payload: bytes, *, ip_id: int = 0, ttl: int = DEFAULT_TTL
) -> bytes:
    """IPv4 or IPv6 (by address family) UDP packet as L3 bytes, all checksums correct."""
    _check_port("source port", sport)
    _check_port("destination port", dport)
    s, d = _address_pair(src, dst)
    return _ip_wrap(s, d, IPPROTO_UDP, _udp_segment(s, d, sport, dport, payload), ip_id, ttl)


def build_tcp(
    src: str, sport: int, dst: str, dport: int, *, seq: int, ack: int, flags: int, payload: bytes, ip_id: int = 0
) -> bytes:
    """IPv4 or IPv6 TCP segment as L3 bytes (no options, window 65535), all checksums correct."""
    _check_port("source port", sport)
    _check_port("destination port", dport)
    if not 0 <= flags <= 0x1FF:
        raise ValueError(f"TCP flags {flags:#x} are outside 0..0x1ff")
    s, d = _address_pair(src, dst)
    offset_flags = (TCP_HEADER_LEN // 4) << 12 | flags
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    header = _TCP_HEADER.pack(sport, dport, seq, ack, offset_flags, TCP_DEFAULT_WINDOW, 0, 0)
    length = TCP_HEADER_LEN + len(payload)
    checksum = internet_checksum(_pseudo_header(s, d, IPPROTO_TCP, length) + header + payload)
    segment = _TCP_HEADER.pack(sport, dport, seq, ack, offset_flags, TCP_DEFAULT_WINDOW, checksum, 0) + payload
    return _ip_wrap(s, d, IPPROTO_TCP, segment, ip_id, DEFAULT_TTL)


# --- fragmentation -------------------------------------------------------------------------------


def fragment_ip(l3: bytes, mtu: int, *, ident: int) -> list[bytes]:
    """Split an IP packet into fragments of at most `mtu` bytes; a packet that fits is returned as is."""
    if not l3:
        raise ValueError("cannot fragment an empty packet")
    version = l3[0] >> 4
    if version == 4:
        return _fragment_ipv4(l3, mtu, ident)
    if version == 6:
        return _fragment_ipv6(l3, mtu, ident)
    raise ValueError(f"not an IP packet (version {version})")


def _copied_ipv4_options(options: bytes) -> bytes:
    """Options that RFC 791 says every fragment repeats (copy bit set), padded to 32 bits."""
    kept = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == IPV4_OPT_EOL:
            break
        if kind == IPV4_OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            raise ValueError(f"malformed IPv4 option {kind} at option byte {i}")
        length = options[i + 1]
        if kind & IPV4_OPT_COPIED:
            kept += options[i : i + length]
        i += length
    kept += b"\x00" * (-len(kept) % 4)
    return bytes(kept)


def _fragment_ipv4(l3: bytes, mtu: int, ident: int) -> list[bytes]:
    if len(l3) < IPV4_HEADER_LEN:
        raise ValueError(f"IPv4 packet of {len(l3)} bytes is shorter than its header")
    header_len = (l3[0] & 0x0F) * 4
    total = struct.unpack_from("!H", l3, 2)[0]
    if header_len < IPV4_HEADER_LEN or total < header_len or total > len(l3):
        raise ValueError(f"IPv4 header length {header_len} / total length {total} do not fit {len(l3)} bytes")
    if total <= mtu:
        return [l3[:total]]
    first_header = l3[:header_len]
    later_header = l3[:IPV4_HEADER_LEN] + _copied_ipv4_options(l3[IPV4_HEADER_LEN:header_len])
    flags_offset = struct.unpack_from("!H", l3, 6)[0]
    base_offset = (flags_offset & IPV4_OFFSET_MASK) * 8
    last_more = bool(flags_offset & IPV4_FLAG_MF)
    data = l3[header_len:total]
    fragments: list[bytes] = []
    pos = 0
    while pos < len(data):
        header = first_header if pos == 0 else later_header
        chunk_max = (mtu - len(header)) // 8 * 8
        if chunk_max < 8:
            raise ValueError(f"MTU {mtu} leaves no room for 8 data bytes after a {len(header)}-byte IPv4 header")
        chunk = data[pos : pos + chunk_max]
        more = pos + len(chunk) < len(data) or last_more
        word = ((base_offset + pos) // 8) | (IPV4_FLAG_MF if more else 0)
        fields = struct.pack("!HHH", len(header) + len(chunk), ident & 0xFFFF, word)
        new_header = bytes([0x40 | len(header) // 4]) + header[1:2] + fields + header[8:]
        fragments.append(_with_ipv4_checksum(new_header) + chunk)
        pos += len(chunk)
    return fragments


def _ipv6_unfragmentable_len(l3: bytes) -> tuple[int, int, int]:
    """(length of the per-fragment part, offset of the Next Header byte to patch, next header after it)."""
    next_header = l3[6]
    nh_pos = 6
    pos = IPV6_HEADER_LEN
    unfrag_end, unfrag_nh_pos, unfrag_next = pos, nh_pos, next_header
    while next_header in _IPV6_CHAINED_HEADERS:
        if pos + 2 > len(l3):
            raise ValueError("IPv6 extension header runs past the end of the packet")
        this_header = next_header
        nh_pos = pos
        next_header = l3[pos]
        pos += (l3[pos + 1] + 1) * 8
        # Hop-by-Hop and Routing (and Destination Options before Routing) stay in every fragment.
        if this_header in (IPPROTO_HOPOPTS, IPPROTO_ROUTING):
            unfrag_end, unfrag_nh_pos, unfrag_next = pos, nh_pos, next_header
    if next_header == IPPROTO_FRAGMENT:
        raise ValueError("IPv6 packet is already a fragment")
    return unfrag_end, unfrag_nh_pos, unfrag_next


def _fragment_ipv6(l3: bytes, mtu: int, ident: int) -> list[bytes]:
    if len(l3) < IPV6_HEADER_LEN:
        raise ValueError(f"IPv6 packet of {len(l3)} bytes is shorter than its header")
    total = IPV6_HEADER_LEN + struct.unpack_from("!H", l3, 4)[0]
    if total > len(l3):
        raise ValueError(f"IPv6 payload length says {total} bytes but the packet has {len(l3)}")
    if total <= mtu:
        return [l3[:total]]
    unfrag_len, nh_pos, next_header = _ipv6_unfragmentable_len(l3[:total])
    unfrag = bytearray(l3[:unfrag_len])
    unfrag[nh_pos] = IPPROTO_FRAGMENT
    data = l3[unfrag_len:total]
    chunk_max = (mtu - unfrag_len - IPV6_FRAGMENT_HEADER_LEN) // 8 * 8
    if chunk_max < 8:
        raise ValueError(f"MTU {mtu} leaves no room for 8 data bytes after {unfrag_len + 8} bytes of IPv6 headers")
    fragments: list[bytes] = []
    for pos in range(0, len(data), chunk_max):
        chunk = data[pos : pos + chunk_max]
        more = pos + len(chunk) < len(data)
        frag_header = _IPV6_FRAGMENT.pack(next_header, 0, pos | int(more), ident & 0xFFFFFFFF)
        payload_len = unfrag_len - IPV6_HEADER_LEN + IPV6_FRAGMENT_HEADER_LEN + len(chunk)
        struct.pack_into("!H", unfrag, 4, payload_len)
        fragments.append(bytes(unfrag) + frag_header + chunk)
    return fragments


# --- link layers ---------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def mac_for_address(address: bytes) -> bytes:
    """A stable locally-administered MAC per IP, so Wireshark's Ethernet conversations mirror the IP ones."""
    if len(address) == 4:
        return b"\x02\x00" + address           # 02:00:0a:00:00:01 for 10.0.0.1: readable
    return b"\x02" + hashlib.blake2s(address, digest_size=5).digest()


def _ip_info(l3: bytes) -> tuple[int, bytes, bytes]:
    """(ethertype, source address, destination address) of an L3 packet."""
    version = l3[0] >> 4 if l3 else 0
    if version == 4 and len(l3) >= IPV4_HEADER_LEN:
        return ETHERTYPE_IPV4, l3[12:16], l3[16:20]
    if version == 6 and len(l3) >= IPV6_HEADER_LEN:
        return ETHERTYPE_IPV6, l3[8:24], l3[24:40]
    raise ValueError(f"not an IPv4/IPv6 packet (first byte {l3[:1].hex() or 'missing'})")


def frame(linktype: int, l3: bytes, *, vlans: tuple[int, ...] = ()) -> bytes:
    """Wrap L3 bytes in the link-layer header of `linktype`; vlans (outermost first) only on Ethernet."""
    ethertype, src, dst = _ip_info(l3)
    if vlans and linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"VLAN tags need Ethernet framing, not {linktype_name(linktype)}")
    if linktype == LINKTYPE_ETHERNET:
        tags = b""
        for i, vid in enumerate(vlans):
            if not 0 <= vid <= VLAN_ID_MAX:
                raise ValueError(f"VLAN id {vid} is outside 0..{VLAN_ID_MAX}")
            inner = vlans[i + 1] if i + 1 < len(vlans) else None
            tags += _VLAN_TAG.pack(vid, ETHERTYPE_VLAN if inner is not None else ethertype)
        if vlans:
            outer_type = ETHERTYPE_QINQ if len(vlans) > 1 else ETHERTYPE_VLAN
            return _ETH_HEADER.pack(mac_for_address(dst), mac_for_address(src), outer_type) + tags + l3
        return _ETH_HEADER.pack(mac_for_address(dst), mac_for_address(src), ethertype) + l3
    if linktype == LINKTYPE_LINUX_SLL:
        addr = mac_for_address(src) + b"\x00\x00"
        return _SLL_HEADER.pack(LINUX_SLL_HOST, ARPHRD_ETHER, SLL_ADDR_LEN, addr, ethertype) + l3
    if linktype == LINKTYPE_LINUX_SLL2:
        addr = mac_for_address(src) + b"\x00\x00"
        return _SLL2_HEADER.pack(ethertype, 0, SLL2_IF_INDEX, ARPHRD_ETHER, LINUX_SLL_HOST, SLL_ADDR_LEN, addr) + l3
    if linktype == LINKTYPE_RAW:
        return l3
    if linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        wanted = ETHERTYPE_IPV4 if linktype == LINKTYPE_IPV4 else ETHERTYPE_IPV6
        if ethertype != wanted:
            version = 4 if ethertype == ETHERTYPE_IPV4 else 6
            raise ValueError(f"{linktype_name(linktype)} cannot carry an IPv{version} packet")
        return l3
    family = BSD_AF_INET if ethertype == ETHERTYPE_IPV4 else BSD_AF_INET6
    if linktype == LINKTYPE_NULL:
        return struct.pack("<I", family) + l3
    if linktype == LINKTYPE_LOOP:
        return struct.pack("!I", family) + l3
    raise ValueError(f"cannot build frames for link type {linktype} ({linktype_name(linktype)})")


def _l3_offset(linktype: int, data: bytes) -> int:
    """Where the IP header starts in a frame of `linktype` (after VLAN tags on Ethernet)."""
    if linktype == LINKTYPE_ETHERNET:
        pos = 12
        while pos + 2 <= len(data):
            ethertype = struct.unpack_from("!H", data, pos)[0]
            if ethertype in _VLAN_ETHERTYPES:
                pos += 4
                continue
            if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
                return pos + 2
            raise ValueError(f"Ethernet frame carries ethertype {ethertype:#06x}, not IP")
        raise ValueError(f"Ethernet frame of {len(data)} bytes is truncated before its ethertype")
    if linktype == LINKTYPE_LINUX_SLL:
        return _SLL_HEADER.size
    if linktype == LINKTYPE_LINUX_SLL2:
        return _SLL2_HEADER.size
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return 0
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return 4
    raise ValueError(f"cannot rewrite frames of link type {linktype} ({linktype_name(linktype)})")


def _udp_offset(data: bytes, ip_pos: int) -> int:
    """Offset of the UDP header in an unfragmented IPv4/IPv6 packet starting at ip_pos."""
    if ip_pos >= len(data):
        raise ValueError("frame ends before its IP header")
    version = data[ip_pos] >> 4
    if version == 4:
        if len(data) < ip_pos + IPV4_HEADER_LEN:
            raise ValueError("frame ends inside its IPv4 header")
        header_len = (data[ip_pos] & 0x0F) * 4
        flags_offset = struct.unpack_from("!H", data, ip_pos + 6)[0]
        if flags_offset & (IPV4_FLAG_MF | IPV4_OFFSET_MASK):
            raise ValueError("frame is an IPv4 fragment; reassemble it before replacing the UDP payload")
        if data[ip_pos + 9] != IPPROTO_UDP:
            raise ValueError(f"frame carries IP protocol {data[ip_pos + 9]}, not UDP")
        pos = ip_pos + header_len
    elif version == 6:
        next_header = data[ip_pos + 6] if len(data) > ip_pos + 6 else None
        pos = ip_pos + IPV6_HEADER_LEN
        while next_header in _IPV6_CHAINED_HEADERS and pos + 2 <= len(data):
            next_header, pos = data[pos], pos + (data[pos + 1] + 1) * 8
        if next_header == IPPROTO_FRAGMENT:
            raise ValueError("frame is an IPv6 fragment; reassemble it before replacing the UDP payload")
        if next_header != IPPROTO_UDP:
            raise ValueError(f"frame carries IP protocol {next_header}, not UDP")
    else:
        raise ValueError(f"frame carries IP version {version}, not 4 or 6")
    if pos + UDP_HEADER_LEN > len(data):
        raise ValueError("frame ends inside its UDP header")
    return pos


def replace_udp_payload(linktype: int, data: bytes, payload: bytes) -> bytes:
    """Same link/IP/UDP headers with a new payload: IP and UDP lengths and checksums recomputed."""
    ip_pos = _l3_offset(linktype, data)
    udp_pos = _udp_offset(data, ip_pos)
    udp_len = UDP_HEADER_LEN + len(payload)
    if udp_len > 0xFFFF:
        raise ValueError(f"UDP datagram of {udp_len} bytes exceeds 65535")
    out = bytearray(data[: udp_pos + UDP_HEADER_LEN])   # drops old payload and any Ethernet trailer
    ip_len = udp_pos + udp_len - ip_pos
    if data[ip_pos] >> 4 == 4:
        if ip_len > IPV4_MAX_TOTAL_LEN:
            raise ValueError(f"IPv4 packet of {ip_len} bytes exceeds 65535")
        struct.pack_into("!H", out, ip_pos + 2, ip_len)
        out[ip_pos + 10 : ip_pos + 12] = b"\x00\x00"
        header_end = ip_pos + (data[ip_pos] & 0x0F) * 4
        struct.pack_into("!H", out, ip_pos + 10, internet_checksum(bytes(out[ip_pos:header_end])))
        src, dst = bytes(out[ip_pos + 12 : ip_pos + 16]), bytes(out[ip_pos + 16 : ip_pos + 20])
    else:
        struct.pack_into("!H", out, ip_pos + 4, ip_len - IPV6_HEADER_LEN)
        # A Routing header would make the checksum use the final destination; media never carries one.
        src, dst = bytes(out[ip_pos + 8 : ip_pos + 24]), bytes(out[ip_pos + 24 : ip_pos + 40])
    struct.pack_into("!HH", out, udp_pos + 4, udp_len, 0)
    pseudo = _pseudo_header(src, dst, IPPROTO_UDP, udp_len)
    checksum = internet_checksum(pseudo + bytes(out[udp_pos:]) + payload) or 0xFFFF
    struct.pack_into("!H", out, udp_pos + 6, checksum)
    return bytes(out) + payload
