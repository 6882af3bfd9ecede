"""Read every RTP and RTCP datagram of a capture once: decoded headers with arrival times, for the analyses."""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rtpcore.pcap import IpReassembler, link_payload, open_capture, parse_ip, parse_udp, unwrap_tunnels

RTP_VERSION = 2
RTP_HEADER_LEN = 12
CSRC_LEN = 4
EXTENSION_HEADER_LEN = 4
# Wireshark's heuristic leaves payload types 72-76 (with the marker bit: RTCP 200-204) to RTCP.
RTCP_PT_RANGE = range(72, 77)
RTCP_SR = 200
RTCP_RR = 201
NS_PER_S = 1_000_000_000
# Ports Wireshark hands to their own dissector before any heuristic: DNS, DHCP, NTP, SNMP, syslog, STUN, SIP.
PORT_DISSECTED_UDP = frozenset({53, 67, 68, 123, 161, 162, 514, 3478, 5060, 5061})

_RTP = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet: its frame number (1-based, as Wireshark counts), arrival and header fields."""

    frame: int
    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    pt: int
    seq: int
    timestamp: int
    marker: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class RtcpDatagram:
    """One RTCP compound (clear, or SRTCP whose first header is still readable) with its arrival."""

    frame: int
    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CaptureMedia:
    """The RTP and RTCP of one capture, plus the first frame's time (Wireshark's relative-time origin)."""

    path: Path
    first_ts_ns: int
    rtp: tuple[RtpPacket, ...]
    rtcp: tuple[RtcpDatagram, ...]


def parse_rtp(payload: bytes) -> tuple[int, int, int, int, bool, bytes] | None:
    """(ssrc, pt, seq, timestamp, marker, payload) when the bytes pass Wireshark's RTP heuristic, else None."""
    if len(payload) < RTP_HEADER_LEN:
        return None
    b0, b1, seq, timestamp, ssrc = _RTP.unpack_from(payload)
    if b0 >> 6 != RTP_VERSION or (b1 & 0x7F) in RTCP_PT_RANGE:
        return None
    at = RTP_HEADER_LEN + (b0 & 0x0F) * CSRC_LEN
    if b0 & 0x10:
        if len(payload) < at + EXTENSION_HEADER_LEN:
            return None
        at += EXTENSION_HEADER_LEN + struct.unpack_from("!H", payload, at + 2)[0] * 4
    end = len(payload)
    if b0 & 0x20 and end > at:
        end -= payload[-1]
    if at > end:
        return None
    return ssrc, b1 & 0x7F, seq, timestamp, bool(b1 & 0x80), payload[at:end]


def _is_rtcp(payload: bytes) -> bool:
    """A datagram that starts like an SR or RR (version 2): the reports the analysis reads."""
    return len(payload) >= 8 and payload[0] >> 6 == RTP_VERSION and payload[1] in (RTCP_SR, RTCP_RR)


def iter_udp(path: Path) -> Iterator[tuple[int, int, str, int, str, int, bytes]]:
    """(frame, ts_ns, src, sport, dst, dport, payload) of every UDP datagram, fragments reassembled."""
    reassembler = IpReassembler()
    with open_capture(path) as reader:
        for frame, (ts_ns, linktype, data, _orig) in enumerate(reader.records(), start=1):
            l3 = link_payload(linktype, data)
            ip = parse_ip(l3) if l3 else None
            if ip is None:
                continue
            whole = reassembler.feed(unwrap_tunnels(ip), ts_ns)
            if whole is None:
                continue
            udp = parse_udp(unwrap_tunnels(whole))
            if udp is not None:
                yield frame, ts_ns, udp.src, udp.sport, udp.dst, udp.dport, udp.payload


def first_frame_ns(path: Path) -> int:
    """The capture's first record time: Wireshark's relative times count from it."""
    with open_capture(path) as reader:
        for ts_ns, _lt, _data, _orig in reader.records():
            return ts_ns
    return 0


def read_media(path: str | Path) -> CaptureMedia:
    """Every RTP packet and SR/RR compound of a capture, in file order."""
    path = Path(path)
    rtp: list[RtpPacket] = []
    rtcp: list[RtcpDatagram] = []
    for frame, ts_ns, src, sport, dst, dport, payload in iter_udp(path):
        if sport in PORT_DISSECTED_UDP or dport in PORT_DISSECTED_UDP:
            continue
        parsed = parse_rtp(payload)
        if parsed is not None:
            ssrc, pt, seq, timestamp, marker, body = parsed
            rtp.append(RtpPacket(frame, ts_ns, src, sport, dst, dport, ssrc, pt, seq, timestamp, marker, body))
        elif _is_rtcp(payload):
            rtcp.append(RtcpDatagram(frame, ts_ns, src, sport, dst, dport, payload))
    return CaptureMedia(path, first_frame_ns(path), tuple(rtp), tuple(rtcp))
