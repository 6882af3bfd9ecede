"""RTP and RTCP wire formats (RFC 3550), RTP/RTCP demultiplexing (RFC 5761, 7983) and the SRTCP trailer."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from rtpcore.literals import StreamKind

__all__ = [
    "RTP_VERSION",
    "RTP_HEADER_LEN",
    "RTCP_HEADER_LEN",
    "SRTCP_INDEX_LEN",
    "RTCP_SR",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_BYE",
    "RTCP_APP",
    "RtpHeader",
    "RtcpPacket",
    "classify",
    "rtcp_sender_ssrc",
    "srtcp_index",
    "parse_rtcp_compound",
    "looks_like_clear_rtcp",
]

RTP_VERSION = 2
RTP_HEADER_LEN = 12
RTCP_HEADER_LEN = 4
RTCP_SSRC_END = 8                  # common header + sender SSRC
EXTENSION_HEADER_LEN = 4
CSRC_LEN = 4
MAX_CSRC = 15
WORD = 4
SRTCP_INDEX_LEN = 4
SRTCP_E_FLAG = 0x80000000
SRTCP_INDEX_MASK = 0x7FFFFFFF

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
# RFC 5761 §4: RTCP packet types 192-223 in the second byte; RTP payload types there would collide.
RTCP_PT_MIN = 192
RTCP_PT_MAX = 223

# RFC 7983 §7: the first byte tells STUN, ZRTP, DTLS, TURN channels and RTP/RTCP apart.
FIRST_BYTE_RTP_MIN = 128
FIRST_BYTE_RTP_MAX = 191

_FIXED = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBH")
_U32 = struct.Struct("!I")


def _version(first_byte: int) -> int:
    return first_byte >> 6


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The RTP fixed header with CSRCs and extension: all that stays in clear in SRTP."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_data: bytes | None = None
    padding: bool = False

    @property
    def header_length(self) -> int:
        """Bytes from the start of the packet to the payload."""
        length = RTP_HEADER_LEN + CSRC_LEN * len(self.csrc)
        if self.extension_data is not None:
            length += EXTENSION_HEADER_LEN + len(self.extension_data)
        return length

    @classmethod
    def parse(cls, data: bytes) -> RtpHeader:
        """Decode the header at the start of an RTP (or SRTP) packet."""
        if len(data) < RTP_HEADER_LEN:
            raise ValueError(f"RTP packet of {len(data)} bytes is shorter than the {RTP_HEADER_LEN}-byte fixed header")
        first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
        if _version(first) != RTP_VERSION:
            raise ValueError(f"RTP version is {_version(first)}, expected {RTP_VERSION}")
        csrc_count = first & 0x0F
        pos = RTP_HEADER_LEN + CSRC_LEN * csrc_count
        if len(data) < pos:
            raise ValueError(f"RTP header announces {csrc_count} CSRCs but the packet has only {len(data)} bytes")
        csrc = struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_LEN)
        extension_profile: int | None = None
        extension_data: bytes | None = None
        if first & 0x10:
            if len(data) < pos + EXTENSION_HEADER_LEN:
                raise ValueError(f"RTP extension header at byte {pos} runs past the packet end ({len(data)} bytes)")
            extension_profile, words = _EXTENSION.unpack_from(data, pos)
            start = pos + EXTENSION_HEADER_LEN
            end = start + WORD * words
            if len(data) < end:
                raise ValueError(f"RTP extension of {words} words runs past the packet end ({len(data)} bytes)")
            extension_data = data[start:end]
        return cls(
            marker=bool(second & 0x80),
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            csrc=csrc,
            extension_profile=extension_profile,
            extension_data=extension_data,
            padding=bool(first & 0x20),
        )

    def __bytes__(self) -> bytes:
        """The header as it goes on the wire (payload not included)."""
        if len(self.csrc) > MAX_CSRC:
            raise ValueError(f"{len(self.csrc)} CSRCs do not fit in the 4-bit CC field (max {MAX_CSRC})")
        has_extension = self.extension_data is not None
        first = (RTP_VERSION << 6) | (0x20 if self.padding else 0) | (0x10 if has_extension else 0) | len(self.csrc)
        second = (0x80 if self.marker else 0) | self.payload_type
        out = _FIXED.pack(first, second, self.sequence, self.timestamp, self.ssrc)
        out += struct.pack(f"!{len(self.csrc)}I", *self.csrc)
        if self.extension_data is not None:
            if len(self.extension_data) % WORD:
                raise ValueError(f"RTP extension data of {len(self.extension_data)} bytes is not a whole number of words")
            out += _EXTENSION.pack(self.extension_profile or 0, len(self.extension_data) // WORD) + self.extension_data
        return out


def classify(payload: bytes) -> StreamKind | None:
    """'rtp', 'rtcp' or None for a UDP payload: RFC 7983 first-byte ranges, RFC 5761 RTCP types."""
    if len(payload) < RTCP_SSRC_END:
        return None
    first = payload[0]
    if not FIRST_BYTE_RTP_MIN <= first <= FIRST_BYTE_RTP_MAX:
        return None                # STUN 0-3, ZRTP 16-19, DTLS 20-63, TURN channel 64-79, or not version 2
    if RTCP_PT_MIN <= payload[1] <= RTCP_PT_MAX:
        return "rtcp"
    return "rtp" if len(payload) >= RTP_HEADER_LEN else None


def rtcp_sender_ssrc(data: bytes) -> int:
    """The SSRC of the first packet of an (S)RTCP compound: it stays in clear and keys the SRTP stream."""
    if len(data) < RTCP_SSRC_END:
        raise ValueError(f"RTCP packet of {len(data)} bytes is shorter than the {RTCP_SSRC_END} bytes holding its SSRC")
    if _version(data[0]) != RTP_VERSION:
        raise ValueError(f"RTCP version is {_version(data[0])}, expected {RTP_VERSION}")
    return _U32.unpack_from(data, RTCP_HEADER_LEN)[0]


def srtcp_index(data: bytes, tag_len: int, mki_len: int = 0) -> tuple[bool, int]:
    """(E flag, 31-bit SRTCP index) from the word before the MKI and tag (RFC 3711 §3.4).

    AEAD suites put the index after the tag (RFC 7714 §9.1): pass tag_len=0 for them.
    """
    if tag_len < 0 or mki_len < 0:
        raise ValueError(f"tag length {tag_len} and MKI length {mki_len} must not be negative")
    end = len(data) - tag_len - mki_len
    if end - SRTCP_INDEX_LEN < RTCP_SSRC_END:
        raise ValueError(
            f"SRTCP packet of {len(data)} bytes cannot hold an RTCP header, a {SRTCP_INDEX_LEN}-byte index, "
            f"{mki_len} MKI bytes and a {tag_len}-byte tag"
        )
    word = _U32.unpack_from(data, end - SRTCP_INDEX_LEN)[0]
    return bool(word & SRTCP_E_FLAG), word & SRTCP_INDEX_MASK


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One packet of an RTCP compound: type, count field, size in bytes and SSRC (None when absent)."""

    packet_type: int
    count: int
    length: int
    ssrc: int | None
    padding: bool = False


def parse_rtcp_compound(data: bytes) -> tuple[RtcpPacket, ...]:
    """Walk a clear RTCP compound by its length fields; ValueError unless they cover the data (to < 4 bytes)."""
    packets: list[RtcpPacket] = []
    pos = 0
    # Fewer bytes than a header after the last packet are tolerated, as tshark does: real phones send
    # them (2 stray bytes in heplify_rtp_rtcp_sip_ipv4_udp.pcap), and an SRTCP trailer is never that short.
    while len(data) - pos >= RTCP_HEADER_LEN:
        first, packet_type, words = _RTCP_HEADER.unpack_from(data, pos)
        if _version(first) != RTP_VERSION:
            raise ValueError(f"RTCP packet {len(packets)} at byte {pos}: version {_version(first)}, expected {RTP_VERSION}")
        length = WORD * (words + 1)
        if pos + length > len(data):
            raise ValueError(
                f"RTCP packet {len(packets)} at byte {pos}: length field says {length} bytes, only {len(data) - pos} left"
            )
        ssrc = _U32.unpack_from(data, pos + RTCP_HEADER_LEN)[0] if length >= RTCP_SSRC_END else None
        packets.append(RtcpPacket(packet_type, first & 0x1F, length, ssrc, bool(first & 0x20)))
        pos += length
    if not packets:
        raise ValueError("RTCP compound is empty")
    return tuple(packets)


def looks_like_clear_rtcp(data: bytes) -> bool:
    """True for plain RTCP on an SRTP leg: the length fields add up to the datagram and it starts with SR/RR.

    Not proof on its own: a single-report SRTCP packet parses too (its E-flag+index word reads as one more
    header), so decryption calls this only after no key authenticated the packet.
    """
    try:
        packets = parse_rtcp_compound(data)
    except ValueError:
        return False
    return packets[0].packet_type in (RTCP_SR, RTCP_RR)
