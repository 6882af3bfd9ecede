"""RTP/RTCP parsing: constructed packets, scapy as an oracle, and tshark field dumps of real captures."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from rtpcore.callgen.media import rtcp_sender_report, rtp_packet
from rtpcore.media.rtp import (
    RTCP_BYE,
    RTCP_RR,
    RTCP_SDES,
    RTCP_SR,
    RtpHeader,
    classify,
    looks_like_clear_rtcp,
    parse_rtcp_compound,
    rtcp_sender_ssrc,
    srtcp_index,
)
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture

HEPLIFY = "heplify_rtp_rtcp_sip_ipv4_udp.pcap"
DTMF = "sipp_dtmf_2833_1.pcap"


def _udp_payloads(path: Path) -> dict[int, bytes]:
    """UDP payload per 1-based frame number (tshark's numbering)."""
    out: dict[int, bytes] = {}
    with open_capture(path) as reader:
        for frame in reader:
            l3 = link_payload(frame.linktype, frame.data)
            ip = parse_ip(l3) if l3 is not None else None
            udp = parse_udp(ip) if ip is not None else None
            if udp is not None:
                out[frame.index + 1] = udp.payload
    return out


def _tshark_fields(tshark: str, path: Path, decode_as: list[str], display: str, fields: list[str]) -> list[list[str]]:
    args = [tshark, "-r", str(path), "-Y", display, "-T", "fields"]
    for rule in decode_as:
        args += ["-d", rule]
    for field in fields:
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def _full_header() -> bytes:
    """An RTP header with padding, 2 CSRCs and a one-word extension, built by hand."""
    first = 0x80 | 0x20 | 0x10 | 2
    fixed = struct.pack("!BBHII", first, 0x80 | 96, 65535, 0xDEADBEEF, 0x01020304)
    csrc = struct.pack("!II", 0xAAAA0001, 0xBBBB0002)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\x42\x00\x00"
    return fixed + csrc + extension


def test_header_fields_of_a_full_header() -> None:
    data = _full_header() + b"payload" + b"\x00\x03"
    header = RtpHeader.parse(data)
    assert header.marker is True
    assert header.payload_type == 96
    assert header.sequence == 65535
    assert header.timestamp == 0xDEADBEEF
    assert header.ssrc == 0x01020304
    assert header.csrc == (0xAAAA0001, 0xBBBB0002)
    assert header.extension_profile == 0xBEDE
    assert header.extension_data == b"\x10\x42\x00\x00"
    assert header.padding is True
    assert header.header_length == 12 + 8 + 8
    assert data[header.header_length:] == b"payload\x00\x03"
    assert bytes(header) == _full_header()


def test_header_matches_scapy() -> None:
    rtp_layer = pytest.importorskip("scapy.layers.rtp")
    data = _full_header() + bytes(20)
    decoded = rtp_layer.RTP(data)
    header = RtpHeader.parse(data)
    assert (header.sequence, header.timestamp, header.ssrc) == (decoded.sequence, decoded.timestamp, decoded.sourcesync)
    assert (header.payload_type, int(header.marker), int(header.padding)) == (decoded.payload_type, decoded.marker, decoded.padding)
    assert list(header.csrc) == list(decoded.sync)
    built = bytes(rtp_layer.RTP(sequence=7, timestamp=99, sourcesync=0x1234, payload_type=8, marker=1))
    assert bytes(RtpHeader.parse(built)) == built[:12]


def test_plain_header_round_trip() -> None:
    packet = rtp_packet(0, 4242, 160_000, 0xCAFEBABE, b"\x55" * 160, marker=True)
    header = RtpHeader.parse(packet)
    assert header == RtpHeader(True, 0, 4242, 160_000, 0xCAFEBABE)
    assert header.header_length == 12
    assert bytes(header) + b"\x55" * 160 == packet


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "RTP packet of 3 bytes is shorter than the 12-byte fixed header"),
        (b"\x40" + bytes(11), "RTP version is 1, expected 2"),
        (b"\x83" + bytes(11) + bytes(8), "RTP header announces 3 CSRCs but the packet has only 20 bytes"),
        (b"\x90" + bytes(11) + b"\xbe\xde", "RTP extension header at byte 12 runs past the packet end (14 bytes)"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "RTP extension of 2 words runs past the packet end (20 bytes)"),
    ],
)
def test_header_errors_are_precise(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        RtpHeader.parse(data)
    assert str(info.value) == message


def test_bytes_rejects_unencodable_headers() -> None:
    with pytest.raises(ValueError, match="16 CSRCs"):
        bytes(RtpHeader(False, 0, 1, 2, 3, csrc=tuple(range(16))))
    with pytest.raises(ValueError, match="3 bytes is not a whole number of words"):
        bytes(RtpHeader(False, 0, 1, 2, 3, extension_profile=1, extension_data=b"abc"))


def test_classify_by_first_and_second_byte() -> None:
    rtp = rtp_packet(8, 1, 2, 3, bytes(160))
    sr = rtcp_sender_report(3, 1_700_000_000 * 10**9, 160, 1, 160, "a@b")
    stun = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + bytes(12)      # binding request
    dtls = bytes([22, 0xFE, 0xFD]) + bytes(20)                            # handshake record
    turn_channel = struct.pack("!HH", 0x4000, 16) + bytes(16)
    zrtp = bytes([0x10]) + bytes(15)
    assert classify(rtp) == "rtp"
    assert classify(sr) == "rtcp"
    # RTP with marker and PT 64..95 would be 192..223 in the second byte: RFC 5761 treats it as RTCP.
    assert classify(b"\x80" + bytes([0x80 | 64]) + bytes(10)) == "rtcp"
    assert classify(b"\x80" + bytes([0x80 | 95]) + bytes(10)) == "rtcp"
    assert classify(b"\x80" + bytes([0x80 | 63]) + bytes(10)) == "rtp"
    assert classify(b"\x80" + bytes([0x80 | 96]) + bytes(10)) == "rtp"
    assert classify(b"\x80" + bytes([72]) + bytes(10)) == "rtp"
    for other in (stun, dtls, turn_channel, zrtp, b"\x40" + bytes(20), b"\xc0" + bytes(20), b"\x80\x00\x00", b""):
        assert classify(other) is None
    assert classify(b"\x80\x00" + bytes(8)) is None      # 10 bytes: too short for an RTP header


def test_rtcp_sender_ssrc_and_errors() -> None:
    sr = rtcp_sender_report(0x5EED1234, 1_700_000_000 * 10**9, 160, 1, 160, "x@y")
    assert rtcp_sender_ssrc(sr) == 0x5EED1234
    with pytest.raises(ValueError, match="RTCP packet of 7 bytes is shorter than the 8 bytes holding its SSRC"):
        rtcp_sender_ssrc(sr[:7])
    with pytest.raises(ValueError, match="RTCP version is 0"):
        rtcp_sender_ssrc(bytes(8))


def test_srtcp_index_reads_the_trailer_with_and_without_mki() -> None:
    rtcp = rtcp_sender_report(1, 1_700_000_000 * 10**9, 0, 0, 0, "c")
    tag = bytes(range(10))
    assert srtcp_index(rtcp + struct.pack("!I", 0x80000000 | 12345) + tag, 10) == (True, 12345)
    assert srtcp_index(rtcp + struct.pack("!I", 0x7FFFFFFF) + tag, 10) == (False, 0x7FFFFFFF)
    mki = b"\x00\x00\x00\x07"
    assert srtcp_index(rtcp + struct.pack("!I", 0x80000005) + mki + tag[:4], 4, mki_len=4) == (True, 5)
    with pytest.raises(ValueError, match="SRTCP packet of 20 bytes cannot hold"):
        srtcp_index(bytes(20), 10)


def test_rtcp_compound_walk_and_clear_rtcp_check() -> None:
    compound = rtcp_sender_report(0xABCDEF01, 1_700_000_000 * 10**9, 9600, 60, 9600, "carrier@example")
    packets = parse_rtcp_compound(compound)
    assert [p.packet_type for p in packets] == [RTCP_SR, RTCP_SDES]
    assert [p.ssrc for p in packets] == [0xABCDEF01, 0xABCDEF01]
    assert sum(p.length for p in packets) == len(compound)
    assert packets[0].length == 28 and packets[0].count == 0
    assert looks_like_clear_rtcp(compound)
    # An SRTCP trailer (index + 10-byte tag) breaks the exact fit.
    assert not looks_like_clear_rtcp(compound + struct.pack("!I", 0x80000000) + bytes(10))
    assert not looks_like_clear_rtcp(compound[:-4])
    assert looks_like_clear_rtcp(compound + b"\x00\x00")        # stray bytes after the compound, as real phones send
    assert parse_rtcp_compound(compound + b"\x00\x00\x00") == packets
    rr = struct.pack("!BBHI", 0x80, RTCP_RR, 1, 77)
    assert looks_like_clear_rtcp(rr)
    bye_first = struct.pack("!BBHI", 0x81, RTCP_BYE, 1, 77) + rr
    assert [p.packet_type for p in parse_rtcp_compound(bye_first)] == [RTCP_BYE, RTCP_RR]
    assert not looks_like_clear_rtcp(bye_first)
    assert parse_rtcp_compound(struct.pack("!BBH", 0x80, RTCP_BYE, 0))[0].ssrc is None
    sdes_len = len(compound) - 28
    with pytest.raises(ValueError, match=f"RTCP packet 1 at byte 28: length field says {sdes_len} bytes, only 20 left"):
        parse_rtcp_compound(compound[:48])
    with pytest.raises(ValueError, match="RTCP compound is empty"):
        parse_rtcp_compound(b"")


def test_rtp_fields_match_tshark(shared_pcaps: Path, tshark: str) -> None:
    for name, ports in ((HEPLIFY, (8000, 4800, 30000)), (DTMF, (10000,))):
        path = shared_pcaps / name
        rows = _tshark_fields(
            tshark, path, [f"udp.port=={p},rtp" for p in ports], "rtp",
            ["frame.number", "rtp.seq", "rtp.ssrc", "rtp.p_type", "rtp.marker", "rtp.timestamp", "rtp.padding", "rtp.cc"],
        )
        payloads = _udp_payloads(path)
        assert rows, name
        for number, seq, ssrc, pt, marker, timestamp, padding, cc in rows:
            payload = payloads[int(number)]
            header = RtpHeader.parse(payload)
            assert classify(payload) == "rtp"
            got = (header.sequence, header.ssrc, header.payload_type, header.marker, header.timestamp,
                   header.padding, len(header.csrc))
            want = (int(seq), int(ssrc, 16), int(pt), marker in ("1", "True"), int(timestamp),
                    padding in ("1", "True"), int(cc))
            assert got == want, (name, number)
        if name == HEPLIFY:
            assert len(rows) == 2884          # pcaps/README: 2884 RTP packets
        else:
            assert [r[1] for r in rows][-3:] == ["7991"] * 3


def test_rtcp_compounds_match_tshark(shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / HEPLIFY
    rows = _tshark_fields(tshark, path, ["udp.port==8001,rtcp", "udp.port==4801,rtcp"], "rtcp",
                          ["frame.number", "rtcp.senderssrc", "rtcp.pt", "rtcp.length"])
    payloads = _udp_payloads(path)
    assert len(rows) >= 20
    for number, senders, types, lengths in rows:
        payload = payloads[int(number)]
        packets = parse_rtcp_compound(payload)
        assert classify(payload) == "rtcp"
        assert looks_like_clear_rtcp(payload)
        assert [p.packet_type for p in packets] == [int(t) for t in types.split(",")]
        assert [p.length // 4 - 1 for p in packets] == [int(n) for n in lengths.split(",")]
        assert rtcp_sender_ssrc(payload) == int(senders.split(",")[0], 16)
