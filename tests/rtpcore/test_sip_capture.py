"""read_sip on real captures, cross-checked message by message against tshark's SIP/SDP dissectors."""
from __future__ import annotations

import ipaddress
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtpcore.errors import UnsupportedLinkTypeError
from rtpcore.pcap.build import build_udp, frame
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.writer import PcapWriter
from rtpcore.sip.capture import SipPacket, read_sip, scan_sip
from rtpcore.sip.sdp import SessionDescription

pytestmark = [pytest.mark.shared, pytest.mark.tshark]

# file → extra tshark options (decode-as for SIP on a non-standard TCP port)
TSHARK_FILES: dict[str, tuple[str, ...]] = {
    "heplify_sip_ipv4_tcp.pcap": (),
    "heplify_sip_ipv4_tcp_fragmented.pcap": ("-d", "tcp.port==6060,sip"),
    "heplify_FAX-Call-t38-CA-TDM-SIP-FB-1.pcap": (),
    "sngrep_aaa.pcap": (),
    "sngrep_ipv6frag.pcap": (),
    "sngrep_ipip.pcap": (),
    "heplify_erspan_sip_ipv4_udp.pcapng": (),
    "heplify_sip_ipv6_udp.pcap": (),
    "heplify_rtp_rtcp_sip_ipv4_udp.pcap": (),
    "heplify_sip_sctp.pcap": (),
    "heplify_sip_ipv4_tcp_retrans.pcap": (),
}

Key = tuple[str, int, str, str]   # Call-ID, CSeq number, CSeq method, request method or status code


@dataclass(frozen=True)
class TsharkSip:
    """One SIP PDU as tshark decoded it, with the audio endpoint its SDP (if any) names."""

    frame: int
    key: Key
    audio: tuple[str | None, int] | None


def _audio_from_tshark_sdp(sdp: ET.Element) -> tuple[str | None, int] | None:
    """First m=audio with port != 0 and its c= address (media-level, else session-level), in field order."""
    session_c: str | None = None
    media: list[list] = []   # [kind, port, media-level c]
    for f in sdp.iter("field"):
        name, show = f.get("name"), f.get("show")
        if name == "sdp.connection_info.address":
            if media:
                media[-1][2] = show
            else:
                session_c = show
        elif name == "sdp.media.media":
            media.append([show, None, None])
        elif name == "sdp.media.port" and media and media[-1][1] is None:
            media[-1][1] = int(show)
    for kind, port, conn in media:
        if kind == "audio" and port:
            # tshark shows the address as written; the contract formats it as ipaddress does.
            address = conn or session_c
            return (None if address is None else str(ipaddress.ip_address(address)), port)
    return None


def tshark_sip(tshark: str, path: Path, extra: tuple[str, ...]) -> list[TsharkSip]:
    """Every SIP PDU tshark finds (several per frame for TCP), via PDML."""
    out = subprocess.run(
        [tshark, "-r", str(path), *extra, "-Y", "sip", "-T", "pdml", "-J", "frame sip"],
        check=True, capture_output=True,
    ).stdout
    found: list[TsharkSip] = []
    for packet in ET.fromstring(out).iter("packet"):
        number = int(next(f.get("show") for f in packet.iter("field") if f.get("name") == "frame.number"))
        for sip in packet.iter("proto"):
            if sip.get("name") != "sip":
                continue
            fields: dict[str, str] = {}
            for f in sip.iter("field"):
                fields.setdefault(f.get("name"), f.get("show"))
            kind = fields.get("sip.Method") or fields["sip.Status-Code"]
            key = (fields["sip.Call-ID"], int(fields["sip.CSeq.seq"]), fields["sip.CSeq.method"], kind)
            sdp = next((p for p in sip.iter("proto") if p.get("name") == "sdp"), None)
            found.append(TsharkSip(number, key, None if sdp is None else _audio_from_tshark_sdp(sdp)))
    return found


def our_key(packet: SipPacket) -> Key:
    """Same key from our parse."""
    m = packet.message
    return (m.call_id, m.cseq_number, m.cseq_method, m.method if m.is_request else str(m.status))


def our_audio(packet: SipPacket) -> tuple[str | None, int] | None:
    """Audio endpoint named by our SDP parse."""
    text = packet.message.sdp()
    if text is None:
        return None
    sdp = SessionDescription.parse(text)
    audio = sdp.audio()
    return None if audio is None else (sdp.media_address(audio), audio.port)


@pytest.fixture(scope="module", params=sorted(TSHARK_FILES))
def both(request: pytest.FixtureRequest, shared_pcaps: Path, tshark: str) -> tuple[str, list[SipPacket], list[TsharkSip]]:
    """(file name, our packets, tshark's PDUs) for one capture."""
    name = request.param
    path = shared_pcaps / name
    return name, read_sip(path), tshark_sip(tshark, path, TSHARK_FILES[name])


def test_messages_equal_tsharks(both: tuple[str, list[SipPacket], list[TsharkSip]]) -> None:
    name, ours, theirs = both
    assert theirs, f"tshark found no SIP in {name}"
    assert Counter(our_key(p) for p in ours) == Counter(t.key for t in theirs)


def test_completing_frame_equals_tsharks(both: tuple[str, list[SipPacket], list[TsharkSip]]) -> None:
    """A message spread over TCP segments / IP fragments is reported at the frame that completes it."""
    _, ours, theirs = both
    assert Counter((p.frame_index + 1, our_key(p)) for p in ours) == Counter((t.frame, t.key) for t in theirs)


def test_sdp_audio_endpoint_equals_tsharks(both: tuple[str, list[SipPacket], list[TsharkSip]]) -> None:
    """Same audio c=/m= as tshark, except bodies without Content-Type (tshark leaves those undecoded)."""
    _, ours, theirs = both
    untyped = {(p.frame_index + 1, our_key(p)) for p in ours if p.message.header("content-type") is None}
    mine = Counter((p.frame_index + 1, our_key(p), our_audio(p)) for p in ours if (p.frame_index + 1, our_key(p)) not in untyped)
    assert mine == Counter((t.frame, t.key, t.audio) for t in theirs if (t.frame, t.key) not in untyped)
    assert all(t.audio is None for t in theirs if (t.frame, t.key) in untyped)


def test_untyped_v0_body_is_sdp(shared_pcaps: Path, tshark: str) -> None:
    """The IPv6 200 OK has an SDP body but no Content-Type: tshark shows it as an opaque body, we read it."""
    path = shared_pcaps / "heplify_sip_ipv6_udp.pcap"
    ok = next(p for p in read_sip(path) if p.message.status == 200 and p.message.cseq_method == "INVITE")
    assert ok.message.header("content-type") is None
    theirs = [t for t in tshark_sip(tshark, path, ()) if t.frame == ok.frame_index + 1]
    assert [t.audio for t in theirs] == [None]
    lines = ok.message.body.decode().splitlines()
    c_line = next(line for line in lines if line.startswith("c="))
    m_line = next(line for line in lines if line.startswith("m=audio"))
    assert our_audio(ok) == (str(ipaddress.ip_address(c_line.split()[2])), int(m_line.split()[1]))


def test_packets_time_ordered(both: tuple[str, list[SipPacket], list[TsharkSip]]) -> None:
    _, ours, _ = both
    assert [p.ts_ns for p in ours] == sorted(p.ts_ns for p in ours)


def test_tcp_fragmented_file_counts(shared_pcaps: Path, tshark: str) -> None:
    """The README's numbers for the port-6060 capture, and how many messages span segments."""
    path = shared_pcaps / "heplify_sip_ipv4_tcp_fragmented.pcap"
    result = scan_sip(path)
    assert len(result.packets) == 406
    assert {p.transport for p in result.packets} == {"tcp"}
    invite_ids = {p.message.call_id for p in result.packets if p.message.method == "INVITE"}
    assert len(invite_ids) == 37
    assert result.stats.parse_errors == 0 and result.stats.tcp_gaps == 0
    reassembled = subprocess.run(
        [tshark, "-r", str(path), "-d", "tcp.port==6060,sip", "-Y", "sip && tcp.reassembled.length",
         "-T", "fields", "-e", "frame.number"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert len(reassembled) == 234
    # A frame where tshark reassembled a PDU is one where we completed a message too.
    completing = {p.frame_index + 1 for p in result.packets}
    assert {int(n) for n in reassembled} <= completing


def test_sctp_multipart_invite(shared_pcaps: Path) -> None:
    """The SIP-I INVITE spans two SCTP DATA chunks (B, then E) and carries SDP + ISUP."""
    packets = read_sip(shared_pcaps / "heplify_sip_sctp.pcap")
    assert [p.transport for p in packets] == ["sctp"] * 4
    invite = packets[0].message
    assert invite.method == "INVITE" and packets[0].frame_index == 1
    assert invite.header("content-type").lower().startswith("multipart/mixed")
    sdp = SessionDescription.parse(invite.sdp())
    assert (sdp.media_address(sdp.audio()), sdp.audio().port) == ("10.249.30.145", 38060)
    assert b"application/isup" in invite.body.lower()


def test_ipip_tunnel_addresses_are_inner(shared_pcaps: Path, tshark: str) -> None:
    """Messages inside IP-in-IP are reported with the inner packet's addresses."""
    path = shared_pcaps / "sngrep_ipip.pcap"
    lines = subprocess.run(
        [tshark, "-r", str(path), "-Y", "sip", "-T", "fields", "-E", "occurrence=l",
         "-e", "frame.number", "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport", "-e", "tcp.dstport"],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    expected = [(int(n) - 1, s, d, int(sp), int(dp)) for n, s, d, sp, dp in (line.split("\t") for line in lines)]
    ours = [(p.frame_index, p.src, p.dst, p.sport, p.dport) for p in read_sip(path)]
    assert ours == expected


def test_non_sip_udp_and_unparsable_sip_are_counted(tmp_path: Path) -> None:
    """A datagram that looks like SIP but has no Call-ID is counted, not fatal; others are ignored."""
    good = (b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    bad = b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n"
    noise = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    path = tmp_path / "mixed.pcap"
    with PcapWriter(path, LINKTYPE_ETHERNET) as writer:
        for i, payload in enumerate((noise, bad, good)):
            writer.write(1_000_000_000 + i * 1000, frame(LINKTYPE_ETHERNET, build_udp("10.0.0.1", 5060, "10.0.0.2", 5070, payload)))
    result = scan_sip(path)
    assert [p.message.call_id for p in result.packets] == ["x1"]
    assert result.packets[0].frame_index == 2
    assert result.stats.parse_errors == 1
    assert result.stats.errors == ["frame 2 (udp): no Call-ID header"]


def test_unsupported_link_type_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dlt147.pcap"
    with PcapWriter(path, 147) as writer:
        writer.write(1_000_000_000, b"\x00" * 40)
    with pytest.raises(UnsupportedLinkTypeError) as info:
        read_sip(path)
    assert str(path) in str(info.value)
    assert "147" in str(info.value)
    assert info.value.linktype == 147
