"""Layer decoding tests: real captures against tshark's dissection, synthetic frames built with scapy."""
from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.layers.inet import GRE, IP, TCP, UDP, IPOption_RR, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether

from rtpcore.errors import UnsupportedLinkTypeError
from rtpcore.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    Frame,
    IpPacket,
    IpReassembler,
    TcpSegment,
    UdpDatagram,
    link_payload,
    open_capture,
    parse_ip,
    parse_tcp,
    parse_udp,
    unwrap_tunnels,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "pcaps"
REAL_FILES = sorted(p.name for p in SHARED.glob("*.pcap*")) if SHARED.is_dir() else []
SIP_PAYLOAD = b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: abc@host\r\nContent-Length: 0\r\n\r\n"

TSHARK_FIELDS = [
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.len",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.flags",
]

Decoded = tuple[object, ...] | None


# -- helpers ---------------------------------------------------------------------------------


def tshark_rows(tshark: str, path: Path, *extra: str) -> list[dict[str, str]]:
    """One dict per frame of the listed fields; repeated fields (tunnels) joined with '|'."""
    fields = TSHARK_FIELDS + list(extra)
    cmd = [tshark, "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]


def tshark_expected(row: dict[str, str]) -> Decoded | str:
    """What tshark says the innermost IP and transport of a frame are."""
    protocols = row["frame.protocols"].split(":")
    if "icmp" in protocols or "icmpv6" in protocols:
        return "skip"  # tshark also dissects the IP/UDP headers quoted inside ICMP errors
    ip_layers = [p for p in protocols if p in ("ip", "ipv6")]
    if not ip_layers:
        return None
    innermost = ip_layers[-1]
    nth = ip_layers.count(innermost) - 1
    src = row[f"{innermost}.src"].split("|")[nth]
    dst = row[f"{innermost}.dst"].split("|")[nth]
    if row["udp.srcport"]:
        first = {k: row[k].split("|")[0] for k in ("udp.srcport", "udp.dstport", "udp.length")}
        return ("udp", src, int(first["udp.srcport"]), dst, int(first["udp.dstport"]), int(first["udp.length"]) - 8)
    if row["tcp.srcport"]:
        return (
            "tcp",
            src,
            int(row["tcp.srcport"]),
            dst,
            int(row["tcp.dstport"]),
            int(row["tcp.len"]),
            int(row["tcp.seq_raw"]),
            int(row["tcp.ack_raw"]),
            int(row["tcp.flags"], 16) & 0x1FF,
        )
    return ("ip", src, dst)


def innermost(frame: Frame, reassembler: IpReassembler) -> IpPacket | None:
    """Decode a frame the way a consumer should: reassemble, unwrap, reassemble the inner packet again."""
    l3 = link_payload(frame.linktype, frame.data)
    ip = parse_ip(l3) if l3 is not None else None
    if ip is None:
        return None
    for _ in range(2):
        whole = reassembler.feed(ip, frame.ts_ns)
        if whole is None:
            return None
        ip = unwrap_tunnels(whole)
        if not ip.is_fragment:
            return ip
    return None


def decode(frame: Frame, reassembler: IpReassembler) -> Decoded | str:
    l3 = link_payload(frame.linktype, frame.data)
    if l3 is None or parse_ip(l3) is None:
        return None
    ip = innermost(frame, reassembler)
    if ip is None:
        return "fragment"
    udp = parse_udp(ip)
    if udp is not None:
        return ("udp", udp.src, udp.sport, udp.dst, udp.dport, len(udp.payload))
    tcp = parse_tcp(ip)
    if tcp is not None:
        return ("tcp", tcp.src, tcp.sport, tcp.dst, tcp.dport, len(tcp.payload), tcp.seq, tcp.ack, tcp.flags)
    return ("ip", ip.src, ip.dst)


def one_udp(linktype: int, data: bytes) -> UdpDatagram:
    l3 = link_payload(linktype, data)
    assert l3 is not None
    ip = parse_ip(l3)
    assert ip is not None
    udp = parse_udp(unwrap_tunnels(ip))
    assert udp is not None
    return udp


# -- real captures against tshark ----------------------------------------------------------------


@pytest.mark.tshark
@pytest.mark.shared
@pytest.mark.parametrize("name", REAL_FILES)
def test_every_frame_matches_tshark(shared_pcaps: Path, tshark: str, name: str) -> None:
    path = shared_pcaps / name
    rows = tshark_rows(tshark, path)
    reassembler = IpReassembler()
    compared = 0
    with open_capture(path) as reader:
        frames = list(reader)
    assert len(frames) == len(rows)
    for frame, row in zip(frames, rows, strict=True):
        expected = tshark_expected(row)
        got = decode(frame, reassembler)
        if expected == "skip":
            continue
        if got == "fragment":
            # A non-final fragment: tshark shows only the IP layer until the datagram completes.
            assert expected is not None and expected[0] == "ip", f"frame {frame.index + 1}"
            continue
        assert got == expected, f"frame {frame.index + 1}"
        compared += 1
    assert compared >= len(frames) // 2


@pytest.mark.tshark
@pytest.mark.shared
def test_sll_tcp_register(shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / "heplify_sip_ipv4_tcp_retrans.pcap"
    rows = tshark_rows(tshark, path, "sip.Method")
    expected = {
        (r["ip.src"], int(r["tcp.srcport"]), r["ip.dst"], int(r["tcp.dstport"]))
        for r in rows
        if "REGISTER" in r["sip.Method"].split("|") and r["tcp.srcport"]
    }
    assert expected
    found = set()
    with open_capture(path) as reader:
        for frame in reader:
            assert frame.linktype == LINKTYPE_LINUX_SLL
            l3 = link_payload(frame.linktype, frame.data)
            ip = parse_ip(l3) if l3 else None
            tcp = parse_tcp(ip) if ip else None
            if tcp and tcp.payload.startswith(b"REGISTER sip:"):
                found.add((tcp.src, tcp.sport, tcp.dst, tcp.dport))
    assert found == expected


@pytest.mark.tshark
@pytest.mark.shared
def test_ipv6_fragmented_invite_reassembles_like_tshark(shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / "sngrep_ipv6frag.pcap"
    rows = tshark_rows(tshark, path, "ipv6.reassembled.length", "ipv6.reassembled.data", "sip.Method")
    tshark_reassembled = {
        i: (int(r["ipv6.reassembled.length"]), bytes.fromhex(r["ipv6.reassembled.data"]))
        for i, r in enumerate(rows)
        if r["ipv6.reassembled.length"]
    }
    assert len(tshark_reassembled) == 2
    reassembler = IpReassembler()
    ours = {}
    with open_capture(path) as reader:
        for frame in reader:
            ip = parse_ip(link_payload(frame.linktype, frame.data) or b"")
            assert ip is not None
            whole = reassembler.feed(ip, frame.ts_ns)
            if ip.is_fragment and whole is not None:
                assert not whole.is_fragment and whole.proto == 17
                ours[frame.index] = whole
    assert ours.keys() == tshark_reassembled.keys()
    for index, whole in ours.items():
        length, data = tshark_reassembled[index]
        assert len(whole.payload) == length
        assert whole.payload == data
        udp = parse_udp(whole)
        assert udp is not None and udp.payload.startswith(b"INVITE sip:")
        assert rows[index]["sip.Method"] == "INVITE"
        assert (udp.src, udp.dst) == (rows[index]["ipv6.src"], rows[index]["ipv6.dst"])
    assert reassembler.pending == 0


@pytest.mark.tshark
@pytest.mark.shared
def test_ip_in_ip_tunnel(shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / "sngrep_ipip.pcap"
    rows = tshark_rows(tshark, path)
    tunnelled = [i for i, r in enumerate(rows) if r["frame.protocols"].split(":").count("ip") == 2]
    assert len(tunnelled) == 2
    with open_capture(path) as reader:
        frames = list(reader)
    for i in tunnelled:
        outer = parse_ip(link_payload(frames[i].linktype, frames[i].data) or b"")
        assert outer is not None and outer.proto == 4
        inner = unwrap_tunnels(outer)
        tcp = parse_tcp(inner)
        assert tcp is not None
        assert (outer.src, outer.dst) == tuple(rows[i]["ip.src"].split("|")[0:1] + rows[i]["ip.dst"].split("|")[0:1])
        assert (tcp.src, tcp.dst) == (rows[i]["ip.src"].split("|")[1], rows[i]["ip.dst"].split("|")[1])
        assert tcp.payload.startswith((b"INVITE ", b"SIP/2.0 ", b"BYE "))


@pytest.mark.tshark
@pytest.mark.shared
def test_erspan_sip(shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / "heplify_erspan_sip_ipv4_udp.pcapng"
    rows = tshark_rows(tshark, path, "sip.Method", "sip.Status-Code")
    with open_capture(path) as reader:
        frames = list(reader)
    assert len(frames) == len(rows) == 140
    on_5060 = 0
    for frame, row in zip(frames, rows, strict=True):
        outer = parse_ip(link_payload(frame.linktype, frame.data) or b"")
        assert outer is not None and outer.proto == 47
        udp = parse_udp(unwrap_tunnels(outer))
        assert udp is not None
        assert (udp.src, udp.sport, udp.dst, udp.dport) == (
            row["ip.src"].split("|")[-1],
            int(row["udp.srcport"]),
            row["ip.dst"].split("|")[-1],
            int(row["udp.dstport"]),
        )
        start = f"SIP/2.0 {row['sip.Status-Code']} " if row["sip.Status-Code"] else f"{row['sip.Method']} sip:"
        assert udp.payload.startswith(start.encode())
        on_5060 += 5060 in (udp.sport, udp.dport)
    assert on_5060 > 0


# -- link layers (scapy-built) --------------------------------------------------------------------


MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def eth(**fields: int) -> Ether:
    """Ethernet with explicit MACs: scapy would otherwise resolve them by sending ARP/ND."""
    return Ether(src=MAC_A, dst=MAC_B, **fields)


def arp() -> ARP:
    """An ARP request with explicit fields, so scapy looks nothing up."""
    return ARP(hwsrc=MAC_A, psrc="10.0.0.1", pdst="10.0.0.2")


def udp4() -> IP:
    return IP(src="192.0.2.10", dst="198.51.100.20", id=77) / UDP(sport=5062, dport=5060) / SIP_PAYLOAD


def udp6() -> IPv6:
    return IPv6(src="2001:db8::1", dst="2001:db8:0:1::2") / UDP(sport=5060, dport=5080) / SIP_PAYLOAD


@pytest.mark.parametrize(
    "frame",
    [
        eth() / udp4(),
        eth() / Dot1Q(vlan=100) / udp4(),
        eth() / Dot1AD(vlan=10) / Dot1Q(vlan=20) / udp4(),
        eth(type=0x9100) / Dot1Q(vlan=10) / Dot1Q(vlan=20) / udp4(),
        eth() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / Dot1Q(vlan=4) / udp4(),
        eth() / Dot1AD(vlan=7) / Dot1Q(vlan=8) / udp6(),
    ],
    ids=["plain", "dot1q", "qinq-88a8", "qinq-9100", "four-tags", "qinq-ipv6"],
)
def test_ethernet_vlan_stacks(frame: Ether) -> None:
    inner = frame.getlayer(UDP)
    ip_layer = frame.getlayer(IP) or frame.getlayer(IPv6)
    udp = one_udp(LINKTYPE_ETHERNET, bytes(frame))
    assert (udp.src, udp.sport, udp.dst, udp.dport) == (ip_layer.src, inner.sport, ip_layer.dst, inner.dport)
    assert udp.payload == SIP_PAYLOAD


def test_ethernet_padding_is_trimmed() -> None:
    frame = bytes(eth() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"hi")
    padded = frame + b"\xee" * (60 - len(frame))
    ip = parse_ip(link_payload(LINKTYPE_ETHERNET, padded) or b"")
    assert ip is not None and len(ip.payload) == 10
    udp = parse_udp(ip)
    assert udp is not None and udp.payload == b"hi"


@pytest.mark.parametrize(
    "frame",
    [eth() / arp(), eth() / Dot1Q(vlan=5) / arp(), eth(type=0x88CC) / (b"\0" * 40), eth(type=0x8100)],
    ids=["arp", "vlan-arp", "lldp", "cut-vlan-tag"],
)
def test_non_ip_ethernet_is_none(frame: Ether) -> None:
    assert link_payload(LINKTYPE_ETHERNET, bytes(frame)) is None


@pytest.mark.parametrize("payload", [udp4(), udp6()], ids=["ipv4", "ipv6"])
def test_linux_sll_and_sll2(payload: IP | IPv6) -> None:
    for linktype, header in (
        (LINKTYPE_LINUX_SLL, CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6)),
        (LINKTYPE_LINUX_SLL2, CookedLinuxV2(ifindex=3, pkttype=4, lladdrlen=6)),
    ):
        frame = header / payload
        assert link_payload(linktype, bytes(frame)) == bytes(payload)
        udp = one_udp(linktype, bytes(frame))
        assert (udp.src, udp.dst, udp.payload) == (payload.src, payload.dst, SIP_PAYLOAD)


def test_sll2_non_ip_is_none() -> None:
    frame = CookedLinuxV2(proto=0x0806) / arp()
    assert link_payload(LINKTYPE_LINUX_SLL2, bytes(frame)) is None


def test_raw_ip_link_types() -> None:
    v4, v6 = bytes(udp4()), bytes(udp6())
    assert link_payload(LINKTYPE_RAW, v4) == v4
    assert link_payload(LINKTYPE_RAW, v6) == v6
    assert link_payload(LINKTYPE_IPV4, v4) == v4
    assert link_payload(LINKTYPE_IPV4, v6) is None
    assert link_payload(LINKTYPE_IPV6, v6) == v6
    assert link_payload(LINKTYPE_IPV6, v4) is None
    assert link_payload(LINKTYPE_RAW, b"") is None


@pytest.mark.parametrize("family", [10, 24, 28, 30])
@pytest.mark.parametrize("order", ["<", ">"])
def test_null_loopback_both_byte_orders(family: int, order: str) -> None:
    v4, v6 = bytes(udp4()), bytes(udp6())
    assert link_payload(LINKTYPE_NULL, struct.pack(order + "I", 2) + v4) == v4
    assert link_payload(LINKTYPE_NULL, struct.pack(order + "I", family) + v6) == v6
    assert link_payload(LINKTYPE_NULL, struct.pack(order + "I", 7) + v4) is None


def test_openbsd_loop_is_network_order() -> None:
    v4, v6 = bytes(udp4()), bytes(udp6())
    assert link_payload(LINKTYPE_LOOP, struct.pack(">I", 2) + v4) == v4
    assert link_payload(LINKTYPE_LOOP, struct.pack(">I", 24) + v6) == v6
    assert link_payload(LINKTYPE_LOOP, struct.pack("<I", 2) + v4) is None


def test_unsupported_link_type_message() -> None:
    with pytest.raises(UnsupportedLinkTypeError) as info:
        link_payload(127, b"\0" * 40)
    assert info.value.linktype == 127
    assert str(info.value) == (
        "link type 127 (IEEE 802.11 radiotap) is not supported; supported: BSD loopback (NULL), Ethernet, raw IP, "
        "OpenBSD loopback (LOOP), Linux SLL, raw IPv4, raw IPv6, Linux SLL2"
    )


# -- IP ------------------------------------------------------------------------------------------


def test_ipv4_fields_against_scapy() -> None:
    pkt = IP(src="10.1.2.3", dst="10.3.2.1", id=4242, flags="MF", frag=185, proto=17) / (b"z" * 64)
    ip = parse_ip(bytes(pkt))
    assert ip == IpPacket(4, "10.1.2.3", "10.3.2.1", 17, b"z" * 64, 4242, 185 * 8, True)
    assert ip.is_fragment


def test_ipv4_options_are_skipped() -> None:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_RR(routers=["1.2.3.4", "5.6.7.8"])]) / UDP(
        sport=9, dport=10
    ) / b"payload"
    raw = bytes(pkt)
    assert raw[0] & 0x0F > 5
    udp = parse_udp(parse_ip(raw))  # type: ignore[arg-type]
    assert udp is not None and (udp.sport, udp.dport, udp.payload) == (9, 10, b"payload")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes(udp4())[:19],
        b"\x44" + bytes(udp4())[1:],  # IHL 4 < 5
        bytes(udp4())[:-1],  # total length runs past the data (snaplen cut)
        b"\x4f" + bytes(udp4())[1:30],  # IHL 15 past the data
        bytes(udp6())[:39],
        bytes(udp6())[:-1],
        b"\x50" + bytes(udp4())[1:],  # version 5
        bytes(IPv6(nh=0) / b"\x11\x05"),  # hop-by-hop header claims 48 bytes
    ],
)
def test_malformed_ip_is_none(raw: bytes) -> None:
    assert parse_ip(raw) is None


def test_ipv4_total_length_zero_means_offloaded() -> None:
    raw = bytearray(bytes(udp4()))
    raw[2:4] = b"\0\0"
    ip = parse_ip(bytes(raw))
    assert ip is not None and ip.payload == bytes(udp4())[20:]


def test_ipv6_extension_headers_are_walked() -> None:
    pkt = (
        IPv6(src="fe80::1", dst="ff02::1:2")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=["2001:db8::9"])
        / IPv6ExtHdrDestOpt()
        / UDP(sport=5060, dport=5060)
        / SIP_PAYLOAD
    )
    padded = bytes(pkt) + b"\0" * 6  # trailing bytes past the payload length are dropped
    ip = parse_ip(padded)
    assert ip is not None
    assert (ip.version, ip.src, ip.dst, ip.proto, ip.is_fragment) == (6, "fe80::1", "ff02::1:2", 17, False)
    assert ip.payload == bytes(pkt[UDP])
    udp = parse_udp(ip)
    assert udp is not None and udp.payload == SIP_PAYLOAD


def test_ipv6_atomic_fragment_is_whole() -> None:
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=9, m=0, offset=0) / udp6()[UDP]
    ip = parse_ip(bytes(pkt))
    assert ip is not None and not ip.is_fragment and ip.ident == 9
    assert parse_udp(ip) is not None


def test_ipv6_mapped_address_formatted_like_ipaddress() -> None:
    import ipaddress

    pkt = IPv6(src="::ffff:10.0.0.1", dst="2001:db8::1") / UDP(sport=1, dport=2)
    ip = parse_ip(bytes(pkt))
    assert ip is not None and ip.src == str(ipaddress.ip_address("::ffff:10.0.0.1"))


# -- tunnels ---------------------------------------------------------------------------------------


OUTER = IP(src="172.16.0.1", dst="172.16.0.2")


@pytest.mark.parametrize(
    "packet",
    [
        OUTER / udp4(),
        OUTER / udp6(),
        IPv6(src="2001:db8::aa", dst="2001:db8::bb") / udp4(),
        OUTER / GRE() / udp4(),
        OUTER / GRE(chksum_present=1, key_present=1, seqnum_present=1, key=99, sequence_number=5) / udp6(),
        OUTER / GRE(proto=0x6558) / eth() / Dot1Q(vlan=3) / udp4(),
        OUTER / GRE(proto=0x88BE) / eth() / udp4(),  # ERSPAN type I: no ERSPAN header
        OUTER / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II(session_id=5) / eth() / udp4(),
        OUTER / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(o=0) / eth() / udp6(),
        OUTER / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(o=1) / ERSPAN_PlatformSpecific() / eth() / udp4(),
        OUTER / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(o=0, ft=2) / udp4(),
        OUTER / GRE() / IP(src="10.9.9.9", dst="10.8.8.8") / udp4(),  # two levels
    ],
    ids=[
        "ipip",
        "6in4",
        "4in6",
        "gre",
        "gre-ck-key-seq-v6",
        "gre-teb",
        "erspan-1",
        "erspan-2",
        "erspan-3",
        "erspan-3-platform",
        "erspan-3-ip",
        "nested",
    ],
)
def test_tunnels_unwrap_to_innermost(packet: IP | IPv6) -> None:
    innermost_ip = packet.getlayer(UDP).underlayer
    outer = parse_ip(bytes(packet))
    assert outer is not None
    inner = unwrap_tunnels(outer)
    assert (inner.src, inner.dst) == (innermost_ip.src, innermost_ip.dst)
    udp = parse_udp(inner)
    assert udp is not None and udp.payload == SIP_PAYLOAD


def test_unwrap_leaves_non_tunnels_and_fragments_alone() -> None:
    plain = parse_ip(bytes(udp4()))
    assert plain is not None and unwrap_tunnels(plain) is plain
    fragmented = parse_ip(bytes(IP(flags="MF", proto=4) / udp4()))
    assert fragmented is not None and unwrap_tunnels(fragmented) is fragmented
    pptp = parse_ip(bytes(OUTER / GRE(version=1, proto=0x880B) / (b"\0" * 40)))
    assert pptp is not None and unwrap_tunnels(pptp) is pptp
    broken = parse_ip(bytes(OUTER / GRE() / b"\x45\0\0"))
    assert broken is not None and unwrap_tunnels(broken) is broken


# -- transport -------------------------------------------------------------------------------------


def test_tcp_against_scapy() -> None:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(
        sport=40000, dport=5060, seq=123456789, ack=987654321, flags="PA", options=[("MSS", 1460), ("NOP", None)]
    ) / SIP_PAYLOAD
    pkt = IP(bytes(pkt))
    raw = bytes(pkt) + b"\0" * 4  # Ethernet-style padding beyond the IP total length
    tcp = parse_tcp(parse_ip(raw))  # type: ignore[arg-type]
    flags = int(pkt[TCP].flags)
    assert tcp == TcpSegment("10.0.0.1", 40000, "10.0.0.2", 5060, 123456789, 987654321, flags, SIP_PAYLOAD)
    assert pkt[TCP].dataofs > 5


def test_transport_parsers_reject_wrong_or_malformed() -> None:
    udp_ip = parse_ip(bytes(udp4()))
    tcp_ip = parse_ip(bytes(IP() / TCP()))
    assert udp_ip is not None and tcp_ip is not None
    assert parse_tcp(udp_ip) is None and parse_udp(tcp_ip) is None
    long_udp = IpPacket(4, "1.1.1.1", "2.2.2.2", 17, struct.pack("!HHHH", 1, 2, 50, 0) + b"x", 0, 0, False)
    assert parse_udp(long_udp) is None
    bad_offset = IpPacket(4, "1.1.1.1", "2.2.2.2", 6, bytes(TCP(dataofs=15)), 0, 0, False)
    assert parse_tcp(bad_offset) is None
    first_fragment = IpPacket(4, "1.1.1.1", "2.2.2.2", 17, bytes(UDP() / b"abc"), 1, 0, True)
    assert parse_udp(first_fragment) is None


# -- fragment reassembly ---------------------------------------------------------------------------


def big_udp4(size: int = 3000, ident: int = 321) -> IP:
    payload = bytes(random.Random(size).randrange(256) for _ in range(size))
    return IP(src="192.0.2.1", dst="192.0.2.2", id=ident) / UDP(sport=5060, dport=5060) / payload


def test_ipv4_fragments_shuffled_reassemble() -> None:
    original = big_udp4()
    pieces = [parse_ip(bytes(f)) for f in fragment(original, fragsize=500)]
    assert len(pieces) == 7 and all(p is not None and p.is_fragment for p in pieces)
    random.Random(1).shuffle(pieces)
    reassembler = IpReassembler()
    results = [reassembler.feed(p, 1000 + i) for i, p in enumerate(pieces)]  # type: ignore[arg-type]
    assert results[:-1] == [None] * 6
    whole = results[-1]
    assert whole is not None and not whole.is_fragment
    assert (whole.src, whole.dst, whole.proto, whole.ident) == ("192.0.2.1", "192.0.2.2", 17, 321)
    assert whole.payload == bytes(original[UDP])
    udp = parse_udp(whole)
    assert udp is not None and udp.payload == bytes(original[UDP].payload)
    assert reassembler.pending == 0


def test_ipv6_fragments_shuffled_reassemble() -> None:
    payload = bytes(random.Random(6).randrange(256) for _ in range(3000))
    original = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=0xABCDEF) / UDP(
        sport=5060, dport=5061
    ) / payload
    pieces = [parse_ip(bytes(f)) for f in fragment6(original, 1280)]
    assert len(pieces) == 3
    random.Random(2).shuffle(pieces)
    reassembler = IpReassembler()
    results = [reassembler.feed(p, 0) for p in pieces]  # type: ignore[arg-type]
    whole = results[-1]
    assert results[:-1] == [None, None] and whole is not None
    udp = parse_udp(whole)
    assert udp is not None and (udp.sport, udp.dport, udp.payload) == (5060, 5061, payload)


def test_duplicates_and_overlaps_keep_first_bytes() -> None:
    src, dst = "10.0.0.1", "10.0.0.2"

    def piece(offset: int, data: bytes, more: bool) -> IpPacket:
        return IpPacket(4, src, dst, 17, data, 7, offset, more)

    reassembler = IpReassembler()
    assert reassembler.feed(piece(0, b"A" * 16, True), 0) is None
    assert reassembler.feed(piece(0, b"A" * 16, True), 0) is None  # duplicate (capture on two interfaces)
    assert reassembler.feed(piece(8, b"B" * 16, True), 0) is None  # overlaps the first piece's last 8 bytes
    whole = reassembler.feed(piece(24, b"C" * 8, False), 0)
    assert whole is not None and whole.payload == b"A" * 16 + b"B" * 8 + b"C" * 8


def test_other_ident_or_proto_do_not_mix() -> None:
    reassembler = IpReassembler()
    assert reassembler.feed(IpPacket(4, "1.1.1.1", "2.2.2.2", 17, b"a" * 8, 1, 0, True), 0) is None
    assert reassembler.feed(IpPacket(4, "1.1.1.1", "2.2.2.2", 17, b"b" * 8, 2, 8, False), 0) is None
    assert reassembler.feed(IpPacket(4, "1.1.1.1", "2.2.2.2", 6, b"c" * 8, 1, 8, False), 0) is None
    assert reassembler.pending == 3


def test_stale_datagrams_expire_and_pending_is_bounded() -> None:
    reassembler = IpReassembler(timeout_ns=1000, max_pending=3)
    first = IpPacket(4, "1.1.1.1", "2.2.2.2", 17, b"a" * 8, 1, 0, True)
    assert reassembler.feed(first, 0) is None
    last = IpPacket(4, "1.1.1.1", "2.2.2.2", 17, b"b" * 8, 1, 8, False)
    assert reassembler.feed(last, 5000) is None  # the first piece expired
    for ident in range(10, 20):
        reassembler.feed(IpPacket(4, "1.1.1.1", "2.2.2.2", 17, b"x" * 8, ident, 0, True), 5000)
    assert reassembler.pending == 3
    completed = reassembler.feed(IpPacket(4, "1.1.1.1", "2.2.2.2", 17, b"y" * 8, 19, 8, False), 5000)
    assert completed is not None and completed.payload == b"x" * 8 + b"y" * 8


def test_non_fragment_passes_through_and_oversize_is_dropped() -> None:
    reassembler = IpReassembler()
    whole = parse_ip(bytes(udp4()))
    assert whole is not None and reassembler.feed(whole, 0) is whole
    oversize = IpPacket(4, "1.1.1.1", "2.2.2.2", 17, b"x" * 16, 3, 65528, False)
    assert reassembler.feed(oversize, 0) is None and reassembler.pending == 0
    with pytest.raises(ValueError, match="timeout_ns must be positive, got 0"):
        IpReassembler(timeout_ns=0)
