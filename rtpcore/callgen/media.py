"""RTP/RTCP synthesis and real SRTP/SRTCP protection (pylibsrtp) for the generated media streams."""
from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pylibsrtp

from rtpcore.literals import StreamKind
from rtpcore.sip.crypto import SRTP_SUITES

__all__ = [
    "plaintext_payload",
    "Segment",
    "Sender",
    "MediaPacket",
    "synthesize",
    "new_key",
    "rtp_packet",
    "rtcp_sender_report",
    "rtcp_single_report",
]

PACKET_INTERVAL_NS = 20_000_000
SAMPLES_PER_PACKET = 160
PAYLOAD_SIZE = 160
RTCP_INTERVAL_NS = 5_000_000_000
SEQ_MODULO = 1 << 16
RTP_VERSION_BITS = 0x80
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
SDES_CNAME = 1
DTMF_PT = 101                               # issue 11: as the generated SDP's a=rtpmap says
DTMF_PACKETS = 5                            # 100 ms of tone: five 20 ms updates, the last one with the end bit
DTMF_END_COPIES = 3                         # RFC 4733 §2.5.1.4: the end packet goes out three times
DTMF_END_GAP_NS = 40_000                    # copies back to back with the same sequence number, as SIPp sends them
DTMF_VOLUME = 10                            # −10 dBm0
DTMF_END_BIT = 0x80
DTMF_KEYS = "0123456789*#ABCD"
DUPLICATE_DELAY_NS = 7_000                  # the copy seen on the second interface of "any"
NTP_EPOCH_OFFSET = 2_208_988_800            # seconds from 1900-01-01 to 1970-01-01
_RTP_HEADER = struct.Struct("!BBHII")
_SR = struct.Struct("!BBHIIIIII")           # V/P/RC, PT, length, SSRC, NTP msw, NTP lsw, RTP ts, packets, octets

_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def plaintext_payload(ssrc: int, seq_index: int, size: int) -> bytes:
    """The RTP payload of packet seq_index (ROC*65536+seq) of ssrc: tests recompute it after decryption."""
    return hashlib.shake_128(struct.pack("!4sIQ", b"cgen", ssrc, seq_index)).digest(size)


def new_key(rng: random.Random, suite: str) -> bytes:
    """A master key followed by its master salt, sized for the suite."""
    info = SRTP_SUITES[suite]
    if suite not in _PROFILES:
        raise ValueError(f"suite {suite} is not supported by pylibsrtp 1.0; use one of {', '.join(_PROFILES)}")
    return rng.randbytes(info.key_len + info.salt_len)


def rtp_packet(pt: int, seq: int, timestamp: int, ssrc: int, payload: bytes, *, marker: bool = False) -> bytes:
    """An RTP packet: version 2, no padding/extension/CSRC."""
    return _RTP_HEADER.pack(RTP_VERSION_BITS, (0x80 if marker else 0) | pt, seq, timestamp, ssrc) + payload


def rtcp_sender_report(ssrc: int, ts_ns: int, rtp_ts: int, packets: int, octets: int, cname: str) -> bytes:
    """A compound RTCP packet: SR without report blocks, then SDES with the CNAME (RFC 3550 §6.1)."""
    seconds, frac_ns = divmod(ts_ns, 1_000_000_000)
    ntp_frac = (frac_ns << 32) // 1_000_000_000
    sr = _SR.pack(RTP_VERSION_BITS, RTCP_SR, 6, ssrc, seconds + NTP_EPOCH_OFFSET, ntp_frac, rtp_ts, packets, octets)
    item = bytes([SDES_CNAME, len(cname)]) + cname.encode("ascii")
    chunk = struct.pack("!I", ssrc) + item + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    sdes = struct.pack("!BBH", RTP_VERSION_BITS | 1, RTCP_SDES, len(chunk) // 4) + chunk
    return sr + sdes


_RR = struct.Struct("!BBHIIIIIII")          # V/P/RC, PT, length, SSRC, then one report block
REPORT_SR = "sr"
REPORT_RR = "rr"


def rtcp_single_report(kind: str, ssrc: int, ts_ns: int, rtp_ts: int, packets: int, octets: int) -> bytes:
    """One report alone, no SDES (WebRTC, some phones): an SR without blocks, or an RR with one report block."""
    seconds, frac_ns = divmod(ts_ns, 1_000_000_000)
    ntp_frac = (frac_ns << 32) // 1_000_000_000
    if kind == REPORT_SR:
        return _SR.pack(RTP_VERSION_BITS, RTCP_SR, 6, ssrc, seconds + NTP_EPOCH_OFFSET, ntp_frac, rtp_ts, packets, octets)
    reportee = ssrc ^ 0x5A5A5A5A
    lsr = ((seconds + NTP_EPOCH_OFFSET) & 0xFFFF) << 16 | ntp_frac >> 16
    return _RR.pack(RTP_VERSION_BITS | 1, RTCP_RR, 7, ssrc, reportee, packets & 0xFFFFFF, packets, 12, lsr, 65536)


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of a sender's life with fixed addresses and keys (a re-INVITE starts a new one)."""

    start_ns: int
    stop_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    rtcp_sport: int
    rtcp_dport: int
    suite: str | None = None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Sender:
    """One RTP source (one SSRC) of one leg direction, with its RTCP."""

    leg: str
    ssrc: int
    pt: int
    initial_seq: int
    initial_ts: int
    cname: str
    segments: tuple[Segment, ...]
    rtcp_offset_ns: int
    jitter_seed: int
    background: bool = False
    start_roc: int = 0                      # dummy packets protected first so real ones start at this ROC
    clear_first_rtcp: bool = False
    duplicate_every: int = 0
    # wt-keys: SRTCP report shape and what our decryption must say about the sender's key.
    single_report: str = ""                 # "" (SR+SDES), REPORT_SR or REPORT_RR: one report alone
    key_status: str = ""                    # authenticated / wrong key / no key / not SRTP, as the SDP makes it
    final_rtcp_ns: int | None = None        # one more RTCP report after the last RTP (a final SR after the BYE)
    # issue 11: RFC 4733 key presses: (packet number where the event starts, event code 0-15).
    dtmf: tuple[tuple[int, int], ...] = ()
    # issue 11: from RTP packet ssrc_change_at on, a new SSRC with its own sequence and timestamp (a new source).
    ssrc_change_at: int | None = None
    new_ssrc: int = 0
    new_initial_seq: int = 0
    new_initial_ts: int = 0


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One UDP datagram of media as the media host captured it, tagged with what produced it."""

    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    sender: int                             # index into the plan's senders
    segment: int
    kind: StreamKind
    seq_index: int                          # RTP: ROC*65536+seq; RTCP: SRTCP index or -1 when clear
    duplicate: bool = False
    clear_rtcp: bool = False
    plain: bytes = b""                      # RTCP: the compound before protection (truth: plain_sha256)
    dtmf: str = ""                          # issue 11: the key of an RFC 4733 event packet
    rtp_ts: int = -1                        # issue 11: RTP timestamp of an event packet (the event's start)
    dtmf_end: bool = False                  # issue 11: the event packet carries the end bit
    dtmf_duration: int = 0                  # issue 11: the event packet's duration field (samples)


class _Protector:
    """One outbound SRTP session per segment key, or a pass-through for plain RTP."""

    def __init__(self, suite: str | None, key: bytes | None) -> None:
        self.session: pylibsrtp.Session | None = None
        self.srtcp_index = 1  # libsrtp numbers SRTCP packets from 1
        if suite is not None:
            if key is None:
                raise ValueError(f"suite {suite} needs a key")
            policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=_PROFILES[suite])
            self.session = pylibsrtp.Session(policy)

    def rtp(self, packet: bytes) -> bytes:
        return packet if self.session is None else self.session.protect(packet)

    def rtcp(self, packet: bytes, *, clear: bool) -> tuple[bytes, int]:
        if self.session is None or clear:
            return packet, -1
        index = self.srtcp_index
        self.srtcp_index += 1
        return self.session.protect_rtcp(packet), index


def _dtmf_slot(events: tuple[tuple[int, int], ...], packet_no: int) -> tuple[int, int] | None:
    """(event code, update number) when packet packet_no is part of a key press, else None."""
    for start, code in events:
        if start <= packet_no < start + DTMF_PACKETS:
            return code, packet_no - start
    return None


def synthesize(sender: Sender, sender_index: int) -> Iterator[MediaPacket]:
    """Every RTP and RTCP datagram the sender emits, in time order, protected per segment."""
    rng = random.Random(sender.jitter_seed)
    protectors = [_Protector(s.suite, s.key) for s in sender.segments]
    seq, roc, rtp_ts = sender.initial_seq, 0, sender.initial_ts
    if sender.start_roc:
        first = protectors[0]
        filler = bytes(PAYLOAD_SIZE)
        for _ in range(sender.start_roc * SEQ_MODULO):
            first.rtp(rtp_packet(sender.pt, seq, rtp_ts, sender.ssrc, filler))
            seq, rtp_ts = (seq + 1) % SEQ_MODULO, (rtp_ts + SAMPLES_PER_PACKET) & 0xFFFFFFFF
        roc = sender.start_roc
    start = sender.segments[0].start_ns
    next_rtcp = start + sender.rtcp_offset_ns
    sent_packets = sent_octets = rtcp_sent = 0
    ssrc = sender.ssrc
    for seg_no, (seg, protector) in enumerate(zip(sender.segments, protectors)):
        # A new key is a new crypto context: its packet index starts from the current seq with ROC 0.
        if seg_no > 0 and seg.key != sender.segments[seg_no - 1].key:
            roc = 0
        t = seg.start_ns
        first_in_segment = True
        while t < seg.stop_ns:
            while next_rtcp <= t:
                clear = sender.clear_first_rtcp and rtcp_sent == 0
                if sender.single_report:
                    report = rtcp_single_report(sender.single_report, ssrc, next_rtcp, rtp_ts, sent_packets,
                                                sent_octets)
                else:
                    report = rtcp_sender_report(ssrc, next_rtcp, rtp_ts, sent_packets, sent_octets, sender.cname)
                data, index = protector.rtcp(report, clear=clear)
                yield MediaPacket(next_rtcp, seg.src, seg.rtcp_sport, seg.dst, seg.rtcp_dport, data,
                                  sender_index, seg_no, "rtcp", index, clear_rtcp=clear, plain=report)
                rtcp_sent += 1
                next_rtcp += RTCP_INTERVAL_NS + rng.randrange(-200_000_000, 200_000_000)
            ts = t + rng.randrange(-150_000, 150_000)
            if sent_packets == sender.ssrc_change_at:
                ssrc, seq, rtp_ts, roc = sender.new_ssrc, sender.new_initial_seq, sender.new_initial_ts, 0
            event = _dtmf_slot(sender.dtmf, sent_packets)
            if event is None:
                payload = plaintext_payload(ssrc, roc * SEQ_MODULO + seq, PAYLOAD_SIZE)
                marker = sent_packets in (0, sender.ssrc_change_at) or first_in_segment
                data = protector.rtp(rtp_packet(sender.pt, seq, rtp_ts, ssrc, payload, marker=marker))
                packet = MediaPacket(ts, seg.src, seg.sport, seg.dst, seg.dport, data,
                                     sender_index, seg_no, "rtp", roc * SEQ_MODULO + seq)
            else:
                code, slot = event
                if slot == 0:
                    event_ts = rtp_ts
                last = slot == DTMF_PACKETS - 1
                payload = struct.pack("!BBH", code, (DTMF_END_BIT if last else 0) | DTMF_VOLUME,
                                      (slot + 1) * SAMPLES_PER_PACKET)
                data = protector.rtp(rtp_packet(DTMF_PT, seq, event_ts, ssrc, payload, marker=slot == 0))
                packet = MediaPacket(ts, seg.src, seg.sport, seg.dst, seg.dport, data, sender_index, seg_no, "rtp",
                                     roc * SEQ_MODULO + seq, dtmf=DTMF_KEYS[code], rtp_ts=event_ts,
                                     dtmf_end=last, dtmf_duration=(slot + 1) * SAMPLES_PER_PACKET)
                if last:
                    for copy in range(1, DTMF_END_COPIES):
                        yield packet
                        packet = replace(packet, ts_ns=ts + copy * DTMF_END_GAP_NS, duplicate=True)
            yield packet
            sent_packets += 1
            sent_octets += PAYLOAD_SIZE
            if sender.duplicate_every and sent_packets % sender.duplicate_every == 0:
                yield MediaPacket(ts + DUPLICATE_DELAY_NS, seg.src, seg.sport, seg.dst, seg.dport, data,
                                  sender_index, seg_no, "rtp", packet.seq_index, duplicate=True)
            first_in_segment = False
            seq += 1
            if seq == SEQ_MODULO:
                seq, roc = 0, roc + 1
            rtp_ts = (rtp_ts + SAMPLES_PER_PACKET) & 0xFFFFFFFF
            t += PACKET_INTERVAL_NS
    if sender.final_rtcp_ns is not None:
        seg_no, seg, protector = len(sender.segments) - 1, sender.segments[-1], protectors[-1]
        report = rtcp_sender_report(ssrc, sender.final_rtcp_ns, rtp_ts, sent_packets, sent_octets, sender.cname)
        data, index = protector.rtcp(report, clear=False)
        yield MediaPacket(sender.final_rtcp_ns, seg.src, seg.rtcp_sport, seg.dst, seg.rtcp_dport, data,
                          sender_index, seg_no, "rtcp", index)
