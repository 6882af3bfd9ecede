"""Read every RTP and RTCP datagram of a capture once: decoded headers with arrival times, for the analyses."""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from rtpcore.media.rtp import CSRC_LEN, EXTENSION_HEADER_LEN, RTCP_RR, RTCP_SR, RTP_HEADER_LEN, RTP_VERSION
from rtpcore.pcap import IpReassembler, link_payload, open_capture, parse_ip, parse_udp, unwrap_tunnels
from rtpcore.pcap.layers import ETHERTYPE_IPV4, IPPROTO_UDP, UDP_HEADER_LEN
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET

# Wireshark's heuristic leaves payload types 72-76 (with the marker bit: RTCP 200-204) to RTCP.
RTCP_PT_RANGE = range(72, 77)
# Ports Wireshark hands to their own dissector before any heuristic: DNS, DHCP, NTP, SNMP, syslog, STUN, SIP.
PORT_DISSECTED_UDP = frozenset({53, 67, 68, 123, 161, 162, 514, 3478, 5060, 5061})

_RTP = struct.Struct("!BBHII")
PLAIN_RTP_FIRST_BYTE = 0x80         # version 2, no padding, no extension, no CSRC
# Ethernet (type at 12) + IPv4 without options (14..33) + UDP (34..41) + the RTP fixed header (42..53).
_FAST = struct.Struct("!12xHB5xHxB2x4s4sHHH2xBBHII").unpack_from
IPV4_PLAIN = 0x45                   # version 4, 20-byte header
IPV4_FRAGMENT_BITS = 0x3FFF         # more-fragments flag and fragment offset
UDP_AT = 34
FAST_UDP_AT = 42                    # Ethernet 14 + IPv4 20 + UDP 8
FAST_RTP_END = 54                   # … + RTP 12


class RtpPacket(NamedTuple):
    """One RTP packet: frame number (1-based, as Wireshark counts), arrival, header fields.

    A NamedTuple, not a dataclass: one is built per packet and a tuple costs a third of a frozen dataclass.
    """

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


def _classify(frame: int, ts_ns: int, src: str, sport: int, dst: str, dport: int, payload: bytes,
              rtp: list[RtpPacket], rtcp: list[RtcpDatagram]) -> None:
    """Append the datagram to rtp or rtcp when it is one (Wireshark's port and heuristic rules)."""
    if sport in PORT_DISSECTED_UDP or dport in PORT_DISSECTED_UDP:
        return
    parsed = parse_rtp(payload)
    if parsed is not None:
        rtp.append(RtpPacket(frame, ts_ns, src, sport, dst, dport, *parsed))
    elif _is_rtcp(payload):
        rtcp.append(RtcpDatagram(frame, ts_ns, src, sport, dst, dport, payload))


class MediaCollector:
    """read_media's per-frame rules for frames handed in one at a time (the decrypt pass feeds what it writes).

    `rtp` is appended to directly by callers that decoded a plain IPv4 RTP frame themselves (the decrypt fast
    path); every other frame goes through `add`, which decodes it exactly as read_media does.
    """

    def __init__(self) -> None:
        self.rtp: list[RtpPacket] = []
        self.rtcp: list[RtcpDatagram] = []
        self.first_ts: int | None = None
        self._slow: list[tuple[int, int, int, bytes]] = []
        self._names: dict[bytes, str] = {}

    def add(self, frame: int, ts_ns: int, linktype: int, data: bytes) -> None:
        """One frame as written (1-based frame number in the file): kept when it is RTP or an SR/RR."""
        if self.first_ts is None:
            self.first_ts = ts_ns
        if linktype == LINKTYPE_ETHERNET and len(data) >= FAST_RTP_END:
            (ethertype, ver_ihl, frag, proto, raw_src, raw_dst, sport, dport, ulen,
             b0, b1, seq, timestamp, ssrc) = _FAST(data)
            end = UDP_AT + ulen
            if (ethertype == ETHERTYPE_IPV4 and ver_ihl == IPV4_PLAIN and proto == IPPROTO_UDP
                    and not frag & IPV4_FRAGMENT_BITS and UDP_HEADER_LEN <= ulen and end <= len(data)):
                src, dst = self.name(raw_src), self.name(raw_dst)
                if (b0 == PLAIN_RTP_FIRST_BYTE and end >= FAST_RTP_END and (b1 & 0x7F) not in RTCP_PT_RANGE
                        and sport not in PORT_DISSECTED_UDP and dport not in PORT_DISSECTED_UDP):
                    self.rtp.append(RtpPacket(frame, ts_ns, src, sport, dst, dport, ssrc, b1 & 0x7F, seq, timestamp,
                                              b1 > 0x7F, data[FAST_RTP_END:end]))
                else:
                    _classify(frame, ts_ns, src, sport, dst, dport, data[FAST_UDP_AT:end], self.rtp, self.rtcp)
                return
        self._slow.append((frame, ts_ns, linktype, data))

    def name(self, raw: bytes) -> str:
        """Dotted text of a 4-byte IPv4 address, converted once per address."""
        return self._names.get(raw) or self._names.setdefault(raw, socket.inet_ntoa(raw))

    def media(self, path: Path) -> CaptureMedia:
        """Everything collected, in frame order."""
        if self._slow:
            _decode_slow(self._slow, self.rtp, self.rtcp)
            self._slow = []
        return CaptureMedia(path, self.first_ts or 0, tuple(self.rtp), tuple(self.rtcp))


def read_media(path: str | Path) -> CaptureMedia:
    """Every RTP packet and SR/RR compound of a capture, in file order (the correlation collects them while
    decrypting instead: rtpcore/media/decrypt.py feeds a MediaCollector)."""
    path = Path(path)
    collector = MediaCollector()
    add = collector.add
    with open_capture(path) as reader:
        for frame, (ts_ns, linktype, data, _orig) in enumerate(reader.records(), start=1):
            add(frame, ts_ns, linktype, data)
    return collector.media(path)


def _decode_slow(frames: list[tuple[int, int, int, bytes]], rtp: list[RtpPacket], rtcp: list[RtcpDatagram]) -> None:
    """Frames the inline path does not take (other links, IPv6, options, fragments, tunnels), merged in frame order."""
    reassembler = IpReassembler()
    extra_rtp: list[RtpPacket] = []
    extra_rtcp: list[RtcpDatagram] = []
    for frame, ts_ns, linktype, data in frames:
        l3 = link_payload(linktype, data)
        ip = parse_ip(l3) if l3 else None
        if ip is None:
            continue
        whole = reassembler.feed(unwrap_tunnels(ip), ts_ns)
        if whole is None:
            continue
        udp = parse_udp(unwrap_tunnels(whole))
        if udp is not None:
            _classify(frame, ts_ns, udp.src, udp.sport, udp.dst, udp.dport, udp.payload, extra_rtp, extra_rtcp)
    if extra_rtp:
        merged = sorted(rtp + extra_rtp, key=lambda p: p.frame)
        rtp[:] = merged
    if extra_rtcp:
        rtcp[:] = sorted(rtcp + extra_rtcp, key=lambda d: d.frame)
