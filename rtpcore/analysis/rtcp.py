"""RTCP sender/receiver reports: the far end's view of each stream (fraction and cumulative loss, jitter, RTT)."""
from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rtpcore.analysis.packets import RtcpDatagram
from rtpcore.media.rtp import RTCP_RR, RTCP_SR
from rtpcore.media.rtp import RTP_VERSION as RTCP_VERSION
from rtpcore.pcap.reader import NS_PER_S
HEADER_LEN = 8                # V/P/RC, PT, length, sender SSRC
SENDER_INFO_LEN = 20          # NTP msw, NTP lsw, RTP ts, packet count, octet count
REPORT_BLOCK_LEN = 24
FRACTION_SCALE = 256          # fraction lost is an 8-bit fixed-point fraction
DLSR_UNITS_PER_S = 65536      # DLSR is in 1/65536 s
CUMULATIVE_SIGN = 0x800000    # the 24-bit cumulative loss is signed (duplicates can make it negative)
DEFAULT_CLOCK = 8000
MIN_PACKET_LEN = 4
RTCP_PACKET_TYPES = range(192, 224)
MS_PER_S = 1000

_BLOCK = struct.Struct("!IIIIII")
_HEADER = struct.Struct("!BBHI")
_NTP = struct.Struct("!II")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One report block: what `reporter` says it received from `source`; RTT when we saw the SR it answers."""

    frame: int
    time_s: float                 # capture time from the file's first frame
    src: str
    sport: int
    dst: str
    dport: int
    kind: str                     # "SR" or "RR": the packet that carried the block
    reporter_ssrc: int
    source_ssrc: int
    fraction_lost_pct: float
    cumulative_lost: int
    highest_seq: int
    jitter_ms: float
    lsr: int
    dlsr_ms: float
    rtt_ms: float | None          # capture-point round trip: RR arrival − matching SR arrival − DLSR

    def to_json(self) -> dict[str, Any]:
        """JSON form for reports."""
        return {
            "frame": self.frame, "time_s": round(self.time_s, 6), "src": f"{self.src}:{self.sport}",
            "dst": f"{self.dst}:{self.dport}", "kind": self.kind, "reporter_ssrc": f"0x{self.reporter_ssrc:08X}",
            "source_ssrc": f"0x{self.source_ssrc:08X}", "fraction_lost_pct": round(self.fraction_lost_pct, 2),
            "cumulative_lost": self.cumulative_lost, "highest_seq": self.highest_seq,
            "jitter_ms": round(self.jitter_ms, 3), "dlsr_ms": round(self.dlsr_ms, 3),
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
        }


def _packets(data: bytes) -> list[tuple[int, int, bytes]] | None:
    """(pt, count, body) of each packet of a clear compound; None when it does not parse (SRTCP trailer, garbage).

    Up to 3 stray bytes after the last packet are tolerated (seen from real phones); an SRTCP trailer
    (E-bit + index, then the tag) fails the payload-type check.
    """
    out = []
    at = 0
    while len(data) - at >= MIN_PACKET_LEN:
        if data[at] >> 6 != RTCP_VERSION or data[at + 1] not in RTCP_PACKET_TYPES:
            return None
        size = (struct.unpack_from("!H", data, at + 2)[0] + 1) * 4
        if at + size > len(data):
            return None
        out.append((data[at + 1], data[at] & 0x1F, data[at:at + size]))
        at += size
    return out or None


def parse_reports(datagrams: Iterable[RtcpDatagram], first_ts_ns: int,
                  clocks: Mapping[int, int] | None = None) -> tuple[ReportBlock, ...]:
    """Every report block of every clear SR/RR, in capture order; SRTCP (encrypted) compounds are skipped."""
    sr_seen: dict[tuple[int, int], int] = {}   # (sender SSRC, middle 32 bits of its NTP time) → arrival ns
    blocks: list[ReportBlock] = []
    for d in datagrams:
        packets = _packets(d.data)
        if packets is None:
            continue
        for pt, count, body in packets:
            if pt not in (RTCP_SR, RTCP_RR) or len(body) < HEADER_LEN:
                continue
            _b0, _pt, _len, reporter = _HEADER.unpack_from(body)
            at = HEADER_LEN
            if pt == RTCP_SR:
                if len(body) < HEADER_LEN + SENDER_INFO_LEN:
                    continue
                msw, lsw = _NTP.unpack_from(body, at)
                sr_seen[(reporter, ((msw & 0xFFFF) << 16) | (lsw >> 16))] = d.ts_ns
                at += SENDER_INFO_LEN
            for _ in range(count):
                if at + REPORT_BLOCK_LEN > len(body):
                    break
                source, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, at)
                at += REPORT_BLOCK_LEN
                cumulative = lost_word & 0xFFFFFF
                if cumulative & CUMULATIVE_SIGN:
                    cumulative -= 1 << 24
                clock = (clocks or {}).get(source, DEFAULT_CLOCK) or DEFAULT_CLOCK
                dlsr_ms = dlsr * MS_PER_S / DLSR_UNITS_PER_S
                sr_ns = sr_seen.get((source, lsr)) if lsr and source != reporter else None
                rtt = None if sr_ns is None else (d.ts_ns - sr_ns) * MS_PER_S / NS_PER_S - dlsr_ms
                blocks.append(ReportBlock(
                    frame=d.frame, time_s=(d.ts_ns - first_ts_ns) / NS_PER_S, src=d.src, sport=d.sport,
                    dst=d.dst, dport=d.dport, kind="SR" if pt == RTCP_SR else "RR", reporter_ssrc=reporter,
                    source_ssrc=source, fraction_lost_pct=(lost_word >> 24) * 100.0 / FRACTION_SCALE,
                    cumulative_lost=cumulative, highest_seq=highest, jitter_ms=jitter * MS_PER_S / clock,
                    lsr=lsr, dlsr_ms=dlsr_ms, rtt_ms=rtt,
                ))
    return tuple(blocks)
