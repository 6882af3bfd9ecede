"""DTMF: RFC 4733 telephone-events per stream, and SIP INFO digits (application/dtmf-relay, application/dtmf).

An RFC 4733 event is every packet of one stream with the same RTP timestamp: its duration field grows, its last
packets carry the end bit and are usually sent three times — those retransmissions are merged into one event.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.analysis.codecs import TELEPHONE_EVENT
from rtpcore.analysis.packets import RtpPacket
from rtpcore.pcap.reader import NS_PER_S

if TYPE_CHECKING:
    from rtpcore.sip.capture import SipPacket

DEFAULT_EVENT_PTS = frozenset({101})    # Wireshark's default rtpevent payload type when no SDP names one
EVENT_CLOCK = 8000
EVENT_LEN = 4
END_BIT = 0x80
VOLUME_MASK = 0x3F
MS_PER_S = 1000
EVENT_NAMES = "0123456789*#ABCD"
FLASH_EVENT = 16
DTMF_RELAY = "application/dtmf-relay"
DTMF_PLAIN = "application/dtmf"

_EVENT = struct.Struct("!BBH")


def event_name(event: int) -> str:
    """'0'–'9', '*', '#', 'A'–'D', 'flash', or the number for other telephone-events."""
    if event < len(EVENT_NAMES):
        return EVENT_NAMES[event]
    return "flash" if event == FLASH_EVENT else str(event)


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One key press as RFC 4733 carried it on one stream; times in seconds from the capture start."""

    stream: str
    digit: str
    start_s: float
    rtp_timestamp: int
    duration_ms: float
    volume_dbm0: int           # the field is the power below 0 dBm0: 10 means −10 dBm0
    ended: bool
    packets: int
    end_packets: int           # packets with the end bit (retransmissions merged)

    def to_json(self) -> dict[str, Any]:
        """JSON form for reports."""
        return {"stream": self.stream, "digit": self.digit, "start_s": round(self.start_s, 6),
                "rtp_timestamp": self.rtp_timestamp, "duration_ms": round(self.duration_ms, 3),
                "volume_dbm0": self.volume_dbm0, "ended": self.ended, "packets": self.packets,
                "end_packets": self.end_packets}


@dataclass(frozen=True, slots=True)
class SipInfoDigit:
    """One digit sent in a SIP INFO body."""

    call_id: str
    digit: str
    time_s: float               # seconds from the SIP capture's first SIP message
    duration_ms: int | None
    content_type: str
    src: str
    dst: str

    def to_json(self) -> dict[str, Any]:
        """JSON form for reports."""
        return {"call_id": self.call_id, "digit": self.digit, "time_s": round(self.time_s, 6),
                "duration_ms": self.duration_ms, "content_type": self.content_type, "src": self.src, "dst": self.dst}


def event_payload_types(dynamic: Mapping[int, tuple[str, int]] | None) -> frozenset[int]:
    """Payload types carrying telephone-events: those the SDP names, else Wireshark's default 101."""
    if dynamic:
        named = frozenset(pt for pt, (name, _clock) in dynamic.items() if name.lower().startswith(TELEPHONE_EVENT))
        if named:
            return named
    return DEFAULT_EVENT_PTS


def rtp_events(stream: str, packets: Iterable[RtpPacket], first_ts_ns: int,
               event_pts: frozenset[int] = DEFAULT_EVENT_PTS, clock: int = EVENT_CLOCK) -> tuple[DtmfEvent, ...]:
    """The telephone-events of one stream's packets, in order of their first packet."""
    events: dict[int, list[Any]] = {}   # RTP timestamp → [digit, start_ns, max duration, volume, packets, ends]
    for p in packets:
        if p.pt not in event_pts or len(p.payload) < EVENT_LEN:
            continue
        event, flags, duration = _EVENT.unpack_from(p.payload)
        entry = events.get(p.timestamp)
        if entry is None:
            events[p.timestamp] = [event_name(event), p.ts_ns, duration, flags & VOLUME_MASK, 1, int(bool(flags & END_BIT))]
            continue
        entry[2] = max(entry[2], duration)
        entry[4] += 1
        entry[5] += int(bool(flags & END_BIT))
    return tuple(
        DtmfEvent(stream, digit, (start - first_ts_ns) / NS_PER_S, ts, duration * MS_PER_S / clock, -volume,
                  ends > 0, count, ends)
        for ts, (digit, start, duration, volume, count, ends) in events.items()
    )


def _body_digits(content_type: str, body: str) -> list[tuple[str, int | None]]:
    """(digit, duration ms) from a dtmf-relay ('Signal=5\\r\\nDuration=160') or plain dtmf ('5') body."""
    if content_type == DTMF_PLAIN:
        text = body.strip()
        return [(text, None)] if text else []
    fields = {}
    for line in body.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    signal = fields.get("signal")
    if not signal:
        return []
    duration = fields.get("duration", "")
    return [(signal, int(duration) if duration.isdigit() else None)]


def sip_info_digits(sip_pcap: Path | Sequence[SipPacket]) -> tuple[SipInfoDigit, ...]:
    """Every DTMF digit sent by SIP INFO in a SIP capture (its path, or its messages already read)."""
    from rtpcore.sip.capture import read_sip

    packets = read_sip(sip_pcap) if isinstance(sip_pcap, Path) else sip_pcap
    if not packets:
        return ()
    origin = packets[0].ts_ns
    found: list[SipInfoDigit] = []
    for pkt in packets:
        msg = pkt.message
        if msg.method != "INFO":
            continue
        content_type = (msg.header("content-type") or "").split(";")[0].strip().lower()
        if content_type not in (DTMF_RELAY, DTMF_PLAIN):
            continue
        for digit, duration in _body_digits(content_type, msg.body.decode("utf-8", "replace")):
            found.append(SipInfoDigit(msg.call_id, digit, (pkt.ts_ns - origin) / NS_PER_S, duration, content_type,
                                      pkt.src_endpoint, pkt.dst_endpoint))
    return tuple(found)
