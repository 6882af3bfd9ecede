"""build.py: frames that tshark and scapy (independent oracles) decode with good checksums."""
from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, TCP, UDP, IPOption_LSRR, IPOption_RR, defragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, defragment6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback, LoopbackOpenBSD

from rtpcore.pcap.build import (
    build_tcp,
    build_udp,
    fragment_ip,
    frame,
    internet_checksum,
    mac_for_address,
    replace_udp_payload,
)
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.linktypes import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter

EXPERT_ERROR = 0x00800000          # PI_ERROR in Wireshark's expert.h
CHECKSUM_GOOD = "1"
TS = 1_700_000_000_000_000_000
V4 = ("10.1.2.3", "192.0.2.77")
V6 = ("2001:db8::10", "2001:db8:ffff::20")
SPORT, DPORT = 41000, 41002        # no tshark dissector claims these
CHECK_ALL = ["-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]

LINK_CASES = [
    (LINKTYPE_ETHERNET, ()),
    (LINKTYPE_ETHERNET, (100,)),
    (LINKTYPE_ETHERNET, (300, 4000)),
    (LINKTYPE_LINUX_SLL, ()),
    (LINKTYPE_LINUX_SLL2, ()),
    (LINKTYPE_RAW, ()),
    (LINKTYPE_NULL, ()),
    (LINKTYPE_LOOP, ()),
]


def tshark_rows(tshark: str, path: Path, fields: list[str], extra: list[str] = ()) -> list[dict[str, str]]:
    """tshark field dump as dicts, one per frame."""
    args = [tshark, "-r", str(path), *extra, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines()]


def write_pcap(path: Path, linktype: int, frames: list[bytes]) -> Path:
    with PcapWriter(path, linktype) as w:
        for i, data in enumerate(frames):
            w.write(TS + i * 20_000_000, data)
    return path


def sample_l3() -> list[bytes]:
    """UDP and TCP packets over IPv4 and IPv6, payload sizes that exercise odd-length checksums."""
    return [
        build_udp(*V4[:1], SPORT, V4[1], DPORT, b"\x80\x08" + bytes(range(171)), ip_id=0x1234),
        build_udp(V6[0], SPORT, V6[1], DPORT, b"odd-length payload!", ttl=7),
        build_tcp(V4[0], 5060, V4[1], 40001, seq=1000, ack=2000, flags=0x18, payload=b"x" * 33, ip_id=9),
        build_tcp(V6[0], 5060, V6[1], 40001, seq=2**32 - 5, ack=7, flags=0x18, payload=b"abc"),
    ]


@pytest.mark.parametrize(("linktype", "vlans"), LINK_CASES)
def test_tshark_decodes_every_link_type_with_good_checksums(
    tmp_path: Path, tshark: str, linktype: int, vlans: tuple[int, ...]
) -> None:
    packets = sample_l3()
    path = write_pcap(tmp_path / "f.pcap", linktype, [frame(linktype, p, vlans=vlans) for p in packets])
    fields = ["_ws.malformed", "_ws.expert.severity", "ip.checksum.status", "udp.checksum.status",
              "tcp.checksum.status", "ip.src", "ipv6.src", "ipv6.dst", "ip.dst", "udp.srcport", "tcp.srcport",
              "ieee8021ad.id", "vlan.id", "frame.protocols"]
    rows = tshark_rows(tshark, path, fields, CHECK_ALL)
    assert len(rows) == 4
    for row in rows:
        assert row["_ws.malformed"] == ""
        assert all(int(s) < EXPERT_ERROR for s in row["_ws.expert.severity"].split(",") if s), row
        assert row["frame.protocols"].split(":")[-1] in ("udp", "tcp", "data")
    assert [r["ip.checksum.status"] for r in rows] == [CHECKSUM_GOOD, "", CHECKSUM_GOOD, ""]
    assert [r["udp.checksum.status"] for r in rows[:2]] == [CHECKSUM_GOOD] * 2
    assert [r["tcp.checksum.status"] for r in rows[2:]] == [CHECKSUM_GOOD] * 2
    assert [r["ip.src"] or r["ipv6.src"] for r in rows] == [V4[0], V6[0]] * 2
    assert [r["ip.dst"] or r["ipv6.dst"] for r in rows] == [V4[1], V6[1]] * 2
    assert [r["udp.srcport"] or r["tcp.srcport"] for r in rows] == [str(SPORT)] * 2 + ["5060"] * 2
    outer, inner = (vlans[0], vlans[1]) if len(vlans) == 2 else (None, vlans[0] if vlans else None)
    assert all(r["ieee8021ad.id"] == ("" if outer is None else str(outer)) for r in rows)     # 0x88a8 S-tag
    assert all(r["vlan.id"] == ("" if inner is None else str(inner)) for r in rows)            # 0x8100 C-tag


def test_scapy_agrees_on_udp_and_tcp_fields() -> None:
    udp4, udp6, tcp4, tcp6 = sample_l3()
    s = IP(udp4)
    assert (s.version, s.ihl, s.len, s.id, s.ttl, s.proto, s.flags, s.frag) == (4, 5, len(udp4), 0x1234, 64, 17, 0, 0)
    assert (s.src, s.dst, s[UDP].sport, s[UDP].dport, s[UDP].len) == (*V4, SPORT, DPORT, len(udp4) - 20)
    s6 = IPv6(udp6)
    assert (s6.src, s6.dst, s6.hlim, s6.nh, s6.plen) == (*V6, 7, 17, len(udp6) - 40)
    assert bytes(s6[UDP].payload) == b"odd-length payload!"
    t = IP(tcp4)[TCP]
    assert (t.seq, t.ack, int(t.flags), t.dataofs, t.window) == (1000, 2000, 0x18, 5, 65535)
    assert IPv6(tcp6)[TCP].seq == 2**32 - 5
    # scapy recomputes every checksum when the field is deleted: the bytes must not change.
    for pkt, cls, l4 in ((udp4, IP, UDP), (tcp4, IP, TCP), (udp6, IPv6, UDP), (tcp6, IPv6, TCP)):
        parsed = cls(pkt)
        del parsed[l4].chksum
        if cls is IP:
            del parsed[IP].chksum
        assert raw(parsed) == pkt


def test_udp_checksum_zero_is_sent_as_ffff() -> None:
    # A payload word equal to the checksum of an all-zero payload makes the one's-complement sum 0xffff.
    probe = build_udp("10.0.0.1", 1, "10.0.0.2", 2, b"\x00\x00")
    pkt = build_udp("10.0.0.1", 1, "10.0.0.2", 2, probe[26:28])
    assert pkt[26:28] == b"\xff\xff"
    scapy_pkt = IP(pkt)
    del scapy_pkt[UDP].chksum
    assert IP(raw(scapy_pkt))[UDP].chksum == 0xFFFF       # scapy applies the same RFC 768 rule
    assert internet_checksum(b"\x00\x00") == 0xFFFF and internet_checksum(b"\xff\xff") == 0


def test_link_headers_match_scapy() -> None:
    l3 = sample_l3()[0]
    l3v6 = sample_l3()[1]
    e = Ether(frame(LINKTYPE_ETHERNET, l3))
    assert e.src == "02:00:0a:01:02:03" and e.dst == "02:00:c0:00:02:4d" and e.type == 0x0800
    q = Ether(frame(LINKTYPE_ETHERNET, l3v6, vlans=(5,)))
    assert q.type == 0x8100 and q[Dot1Q].vlan == 5 and q[Dot1Q].type == 0x86DD and q[IPv6].src == V6[0]
    qq = Ether(frame(LINKTYPE_ETHERNET, l3, vlans=(10, 20)))
    assert qq.type == 0x88A8 and qq[Dot1AD].vlan == 10 and qq[Dot1AD].type == 0x8100
    assert qq[Dot1Q].vlan == 20 and qq[Dot1Q].type == 0x0800 and qq[IP].src == V4[0]
    sll = CookedLinux(frame(LINKTYPE_LINUX_SLL, l3))
    assert (sll.pkttype, sll.lladdrtype, sll.lladdrlen, sll.proto) == (0, 1, 6, 0x0800)
    assert sll.src[:6] == mac_for_address(bytes([10, 1, 2, 3]))
    sll2 = CookedLinuxV2(frame(LINKTYPE_LINUX_SLL2, l3v6))
    assert (sll2.proto, sll2.ifindex, sll2.lladdrtype, sll2.pkttype, sll2.lladdrlen) == (0x86DD, 1, 1, 0, 6)
    assert sll2[IPv6].dst == V6[1]
    assert len(frame(LINKTYPE_LINUX_SLL2, l3)) - len(l3) == 20
    assert Loopback(frame(LINKTYPE_NULL, l3)).type == 2          # little-endian host order, AF_INET
    assert Loopback(frame(LINKTYPE_NULL, l3v6)).type == 24       # BSD AF_INET6 (NetBSD/OpenBSD value)
    assert LoopbackOpenBSD(frame(LINKTYPE_LOOP, l3)).type == 2   # network order
    assert frame(LINKTYPE_LOOP, l3v6)[:4] == b"\x00\x00\x00\x18"
    assert frame(LINKTYPE_RAW, l3) == l3 == frame(LINKTYPE_IPV4, l3)
    assert frame(LINKTYPE_IPV6, l3v6) == l3v6


def test_link_payload_round_trip_and_mac_stability() -> None:
    for linktype, vlans in LINK_CASES:
        for pkt in sample_l3():
            assert link_payload(linktype, frame(linktype, pkt, vlans=vlans)) == pkt
    fwd = Ether(frame(LINKTYPE_ETHERNET, build_udp(V4[0], 1, V4[1], 2, b"")))
    back = Ether(frame(LINKTYPE_ETHERNET, build_udp(V4[1], 2, V4[0], 1, b"")))
    assert (fwd.src, fwd.dst) == (back.dst, back.src)
    six = Ether(frame(LINKTYPE_ETHERNET, sample_l3()[1]))
    mac_src, mac_dst = bytes.fromhex(six.src.replace(":", "")), bytes.fromhex(six.dst.replace(":", ""))
    assert mac_src != mac_dst and {mac_src[0] & 0x03, mac_dst[0] & 0x03} == {0x02}   # locally administered unicast
    assert mac_src == mac_for_address(ipaddress.ip_address(V6[0]).packed)


def test_frame_rejects_bad_input() -> None:
    l3 = sample_l3()[0]
    with pytest.raises(ValueError, match="VLAN tags need Ethernet"):
        frame(LINKTYPE_LINUX_SLL, l3, vlans=(1,))
    with pytest.raises(ValueError, match="VLAN id 4096"):
        frame(LINKTYPE_ETHERNET, l3, vlans=(4096,))
    with pytest.raises(ValueError, match="not an IPv4/IPv6 packet"):
        frame(LINKTYPE_ETHERNET, b"\x00" * 40)
    with pytest.raises(ValueError, match="cannot carry an IPv6 packet"):
        frame(LINKTYPE_IPV4, sample_l3()[1])
    with pytest.raises(ValueError, match="cannot build frames for link type 147"):
        frame(147, l3)
    with pytest.raises(ValueError, match="not the same IP version"):
        build_udp("10.0.0.1", 1, "::1", 2, b"")
    with pytest.raises(ValueError, match="'nonsense' is not an IPv4 or IPv6 address"):
        build_udp("nonsense", 1, "10.0.0.1", 2, b"")
    with pytest.raises(ValueError, match="destination port 70000"):
        build_udp("10.0.0.1", 1, "10.0.0.2", 70000, b"")


# --- fragmentation -------------------------------------------------------------------------------


def test_ipv4_fragments_reassemble_in_scapy_and_tshark(tmp_path: Path, tshark: str) -> None:
    payload = bytes(range(256)) * 12 + b"tail"
    pkt = build_udp(V4[0], SPORT, V4[1], DPORT, payload, ip_id=0x4242)
    frags = fragment_ip(pkt, 576, ident=0x4242)
    parsed = [IP(f) for f in frags]
    assert all(len(f) <= 576 for f in frags) and len(frags) == -(-(len(pkt) - 20) // 552)
    assert [p.frag * 8 for p in parsed] == [i * 552 for i in range(len(frags))]
    assert [int(p.flags) for p in parsed] == [1] * (len(frags) - 1) + [0]
    assert {p.id for p in parsed} == {0x4242}
    assert b"".join(bytes(p.payload) for p in parsed) == pkt[20:]
    whole = defragment(parsed)
    assert len(whole) == 1 and raw(whole[0]) == pkt

    path = write_pcap(tmp_path / "frag4.pcap", LINKTYPE_ETHERNET, [frame(LINKTYPE_ETHERNET, f) for f in frags])
    rows = tshark_rows(tshark, path, ["ip.checksum.status", "udp.checksum.status", "udp.length", "_ws.malformed"],
                       CHECK_ALL)
    assert [r["ip.checksum.status"] for r in rows] == [CHECKSUM_GOOD] * len(frags)
    assert rows[-1]["udp.checksum.status"] == CHECKSUM_GOOD and rows[-1]["udp.length"] == str(len(pkt) - 20)
    assert all(r["_ws.malformed"] == "" for r in rows)


def test_ipv6_fragments_reassemble_in_scapy_and_tshark(tmp_path: Path, tshark: str) -> None:
    payload = b"\x80" + bytes(range(255)) * 20
    pkt = build_udp(V6[0], SPORT, V6[1], DPORT, payload)
    frags = fragment_ip(pkt, 1280, ident=0xDEADBEEF)
    parsed = [IPv6(f) for f in frags]
    assert all(len(f) <= 1280 for f in frags) and len(frags) == 5
    hdrs = [p[IPv6ExtHdrFragment] for p in parsed]
    assert {h.id for h in hdrs} == {0xDEADBEEF} and {h.nh for h in hdrs} == {17} and {p.nh for p in parsed} == {44}
    assert [h.m for h in hdrs] == [1, 1, 1, 1, 0]
    assert [h.offset * 8 for h in hdrs] == [i * 1232 for i in range(5)]
    assert raw(defragment6(parsed)) == pkt

    path = write_pcap(tmp_path / "frag6.pcap", LINKTYPE_LINUX_SLL2, [frame(LINKTYPE_LINUX_SLL2, f) for f in frags])
    rows = tshark_rows(tshark, path, ["udp.checksum.status", "udp.length", "ipv6.fraghdr.ident", "_ws.malformed"],
                       CHECK_ALL)
    assert rows[-1]["udp.checksum.status"] == CHECKSUM_GOOD and rows[-1]["udp.length"] == str(len(payload) + 8)
    assert {r["ipv6.fraghdr.ident"] for r in rows} == {"0xdeadbeef"}
    assert all(r["_ws.malformed"] == "" for r in rows)


def test_ipv4_fragments_repeat_only_copied_options() -> None:
    options = [IPOption_RR(routers=["0.0.0.0"]), IPOption_LSRR(routers=["10.9.9.9"])]
    pkt = raw(IP(src=V4[0], dst=V4[1], id=7, options=options) / UDP(sport=SPORT, dport=DPORT) / (b"z" * 200))
    frags = fragment_ip(pkt, 100, ident=7)
    first, later = IP(frags[0]), IP(frags[1])
    assert [o.option for o in first.options if o.option] == [7, 3]
    assert [o.option for o in later.options if o.option] == [3]        # RR has no copy bit, LSRR has
    assert later.ihl * 4 % 4 == 0 and all(len(f) <= 100 for f in frags)
    assert b"".join(bytes(IP(f).payload) for f in frags) == pkt[IP(pkt).ihl * 4 :]


def test_fragment_edge_cases() -> None:
    pkt = build_udp(V4[0], 1, V4[1], 2, b"a" * 100)
    assert fragment_ip(pkt, 1500, ident=1) == [pkt]
    with pytest.raises(ValueError, match="MTU 24 leaves no room"):
        fragment_ip(pkt, 24, ident=1)
    frag6 = fragment_ip(build_udp(V6[0], 1, V6[1], 2, b"b" * 3000), 1280, ident=5)[0]
    with pytest.raises(ValueError, match="already a fragment"):
        fragment_ip(frag6, 100, ident=6)
    with pytest.raises(ValueError, match="not an IP packet"):
        fragment_ip(b"\x20" * 30, 10, ident=1)


# --- replace_udp_payload -------------------------------------------------------------------------


def first_udp_frames(path: Path, want: int, predicate=lambda udp: True) -> list[tuple[int, bytes]]:
    """(link type, data) of the first UDP frames in a real capture, found with the project reader."""
    found = []
    with open_capture(path) as reader:
        for fr in reader:
            l3 = link_payload(fr.linktype, fr.data)
            ip = parse_ip(l3) if l3 else None
            udp = parse_udp(ip) if ip and not ip.is_fragment else None
            if udp and predicate(udp):
                found.append((fr.linktype, fr.data))
                if len(found) == want:
                    break
    return found


@pytest.mark.parametrize(
    ("name", "predicate"),
    [
        ("heplify_rtp_rtcp_sip_ipv4_udp.pcap", lambda u: len(u.payload) == 172 and u.payload[0] >> 6 == 2),
        ("heplify_sip_ipv6_udp.pcap", lambda u: True),
        ("heplify_sip_ipv4_tcp_retrans.pcap", lambda u: u.dport == 5060 or u.sport == 5060),   # Linux SLL
    ],
)
def test_replace_udp_payload_on_real_frames(
    tmp_path: Path, tshark: str, shared_pcaps: Path, name: str, predicate
) -> None:
    (linktype, original), = first_udp_frames(shared_pcaps / name, 1, predicate)
    l3 = link_payload(linktype, original)
    old_ip = parse_ip(l3)
    link_len = len(original) - len(l3)
    new_payloads = [bytes(range(256)) + b"longer!", b"\x80\x00short", b""]
    frames = [replace_udp_payload(linktype, original, p) for p in new_payloads]
    path = write_pcap(tmp_path / "r.pcap", linktype, frames)
    fields = ["ip.checksum.status", "udp.checksum.status", "ip.len", "ipv6.plen", "udp.length", "ip.src",
              "ipv6.src", "udp.srcport", "udp.dstport", "_ws.malformed", "_ws.expert.severity"]
    rows = tshark_rows(tshark, path, fields, CHECK_ALL + ["--disable-protocol", "sip"])
    udp = parse_udp(old_ip)
    for row, payload, data in zip(rows, new_payloads, frames):
        assert data[:link_len] == original[:link_len]
        assert row["udp.checksum.status"] == CHECKSUM_GOOD
        assert row["udp.length"] == str(8 + len(payload))
        assert (row["ip.src"] or row["ipv6.src"]) == old_ip.src
        assert (int(row["udp.srcport"]), int(row["udp.dstport"])) == (udp.sport, udp.dport)
        assert row["_ws.malformed"] == ""
        assert all(int(s) < EXPERT_ERROR for s in row["_ws.expert.severity"].split(",") if s)
        new_ip = parse_ip(link_payload(linktype, data))
        assert parse_udp(new_ip).payload == payload
        if old_ip.version == 4:
            assert row["ip.checksum.status"] == CHECKSUM_GOOD and row["ip.len"] == str(28 + len(payload))
            assert IP(link_payload(linktype, data)).ttl == IP(l3).ttl and new_ip.ident == old_ip.ident
        else:
            assert row["ipv6.plen"] == str(8 + len(payload))


def test_replace_udp_payload_through_vlans_and_rejections(tmp_path: Path, tshark: str, shared_pcaps: Path) -> None:
    data = frame(LINKTYPE_ETHERNET, sample_l3()[1], vlans=(7, 8))
    out = replace_udp_payload(LINKTYPE_ETHERNET, data, b"N" * 99)
    parsed = Ether(out)
    assert parsed[Dot1AD].vlan == 7 and parsed[Dot1Q].vlan == 8 and bytes(parsed[UDP].payload) == b"N" * 99
    rows = tshark_rows(tshark, write_pcap(tmp_path / "v.pcap", LINKTYPE_ETHERNET, [out]),
                       ["udp.checksum.status"], CHECK_ALL)
    assert rows == [{"udp.checksum.status": CHECKSUM_GOOD}]

    tcp = frame(LINKTYPE_LINUX_SLL, sample_l3()[2])
    with pytest.raises(ValueError, match="IP protocol 6, not UDP"):
        replace_udp_payload(LINKTYPE_LINUX_SLL, tcp, b"")
    frag4 = fragment_ip(build_udp(V4[0], 1, V4[1], 2, b"q" * 2000), 1000, ident=3)[1]
    with pytest.raises(ValueError, match="IPv4 fragment"):
        replace_udp_payload(LINKTYPE_RAW, frag4, b"")
    with open_capture(shared_pcaps / "sngrep_ipv6frag.pcap") as reader:
        real_frag = next(f for f in reader if (ip := parse_ip(link_payload(f.linktype, f.data))) and ip.is_fragment)
    with pytest.raises(ValueError, match="IPv6 fragment"):
        replace_udp_payload(real_frag.linktype, real_frag.data, b"")
    with pytest.raises(ValueError, match="ethertype 0x0806, not IP"):
        replace_udp_payload(LINKTYPE_ETHERNET, b"\xff" * 12 + b"\x08\x06" + b"\x00" * 28, b"")


def test_ipv6_fragments_keep_a_hop_by_hop_header_unfragmentable() -> None:
    """RFC 8200: extension headers before the Fragment header are repeated in every fragment."""
    import struct as _struct

    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, defragment6

    from rtpcore.pcap.build import build_udp, fragment_ip

    l3 = build_udp("2001:db8::1", 5060, "2001:db8::2", 5060, bytes(range(256)) * 12)
    hop_by_hop = bytes([17, 0]) + b"\x01\x04\x00\x00\x00\x00"  # next header UDP, PadN
    with_hbh = l3[:6] + bytes([0]) + l3[7:40] + hop_by_hop + l3[40:]
    with_hbh = with_hbh[:4] + _struct.pack("!H", len(with_hbh) - 40) + with_hbh[6:]
    pieces = fragment_ip(with_hbh, 1280, ident=7)
    assert len(pieces) == 3 and all(len(p) <= 1280 for p in pieces)
    assert all(IPv6ExtHdrHopByHop in IPv6(p) for p in pieces)
    whole = defragment6([IPv6(p) for p in pieces])
    assert bytes(whole[IPv6].payload.payload) == bytes(IPv6(with_hbh)[IPv6].payload.payload)
