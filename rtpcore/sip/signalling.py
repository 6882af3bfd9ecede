"""Only the signalling of a SIP capture: people hand in the whole capture as "the SIP pcap".

SIP_plus_media_decrypted.pcap must hold each media packet once (decrypted, from our outputs); the SIP
capture's own copy of the media (still encrypted) would make Wireshark count every packet twice (−100 %
loss). Kept: every frame of a transport flow that carried SIP (UDP datagrams, TCP segments and handshakes
of SIP connections, SCTP), and the IP fragments of SIP datagrams; dropped: everything else.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rtpcore.pcap.build import frame
from rtpcore.pcap.fragments import IpReassembler
from rtpcore.pcap.layers import IpPacket, link_payload, parse_ip, parse_tcp, parse_udp, unwrap_tunnels
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.sip.capture import IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, SipPacket, scan_sip

__all__ = ["SignallingCopy", "signalling_frames", "write_signalling"]

log = logging.getLogger(__name__)

_Flow = tuple[int, str, int, str, int]  # IP protocol, src, sport, dst, dport
_TRANSPORTS = {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP, "sctp": IPPROTO_SCTP}
SCTP_PORTS_LEN = 4


@dataclass(frozen=True, slots=True)
class SignallingCopy:
    """What the signalling-only copy kept and left out (the left-out frames are usually the media)."""

    frames: int
    kept: int

    @property
    def dropped(self) -> int:
        """Frames left out: the SIP capture's own copy of media (and anything else not signalling)."""
        return self.frames - self.kept


def _flows(packets: tuple[SipPacket, ...] | list[SipPacket]) -> set[_Flow]:
    """Both directions of every transport flow that carried a SIP message."""
    flows: set[_Flow] = set()
    for p in packets:
        proto = _TRANSPORTS.get(p.transport)
        if proto is not None:
            flows.add((proto, p.src, p.sport, p.dst, p.dport))
            flows.add((proto, p.dst, p.dport, p.src, p.sport))
    return flows


def _flow_of(ip: IpPacket) -> _Flow | None:
    """The transport flow of a whole IP packet, to compare with the flows that carried SIP."""
    if ip.proto == IPPROTO_UDP:
        udp = parse_udp(ip)
        return None if udp is None else (IPPROTO_UDP, udp.src, udp.sport, udp.dst, udp.dport)
    if ip.proto == IPPROTO_TCP:
        seg = parse_tcp(ip)
        return None if seg is None else (IPPROTO_TCP, seg.src, seg.sport, seg.dst, seg.dport)
    if ip.proto == IPPROTO_SCTP and len(ip.payload) >= SCTP_PORTS_LEN:
        sport, dport = int.from_bytes(ip.payload[0:2], "big"), int.from_bytes(ip.payload[2:4], "big")
        return (IPPROTO_SCTP, ip.src, sport, ip.dst, dport)
    return None


def signalling_frames(path: Path, packets: tuple[SipPacket, ...] | list[SipPacket] | None = None) -> tuple[set[int], int]:
    """(indices of the frames that carry signalling, frames in the file); fragments count when their datagram does."""
    flows = _flows(scan_sip(Path(path)).packets if packets is None else packets)
    kept: set[int] = set()
    pending: dict[tuple[str, str, int], list[int]] = {}
    reassembler = IpReassembler()
    frames = 0
    with open_capture(path) as reader:
        for index, (ts, linktype, data, _) in enumerate(reader.records()):
            frames += 1
            l3 = link_payload(linktype, data)
            ip = parse_ip(l3) if l3 else None
            if ip is None:
                continue
            ip = unwrap_tunnels(ip)
            indices = [index]
            if ip.is_fragment:
                key = (ip.src, ip.dst, ip.ident)
                pending.setdefault(key, []).append(index)
                whole = reassembler.feed(ip, ts)
                if whole is None:
                    continue
                indices = pending.pop(key, [index])
                ip = unwrap_tunnels(whole)
            if _flow_of(ip) in flows:
                kept.update(indices)
    return kept, frames


def write_signalling(sip: Path, out: Path) -> SignallingCopy:
    """Copy only the signalling frames of the SIP capture to `out` (classic ns pcap, the capture's link type)."""
    kept, frames = signalling_frames(Path(sip))
    with open_capture(sip) as reader, PcapWriter(out, reader.linktype, nanosecond=True) as writer:
        out_linktype = reader.linktype
        for index, (ts, linktype, data, orig_len) in enumerate(reader.records()):
            if index not in kept:
                continue
            if linktype != out_linktype:
                l3 = link_payload(linktype, data)
                if l3 is None:
                    continue
                data = frame(out_linktype, l3)
                orig_len = len(data)
            writer.write(ts, data, orig_len)
    return SignallingCopy(frames, len(kept))
