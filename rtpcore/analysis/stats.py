"""Per-stream RTP statistics computed the way Wireshark's RTP analysis does, so our figures equal `tshark -z rtp,streams`.

Wireshark's definitions (ui/tap-rtp-analysis.c, rtppacket_analyse; 4.0) are followed on purpose, oddities included:

- **expected** = last *received* packet's sequence + 65536·wraps − first sequence + 1, and **lost** = expected −
  received. A reordered last packet therefore lowers `expected`, and duplicates make `lost` negative (−2 for two
  re-sent RFC 4733 end packets). Our own `unique_lost` (from the RFC 3550 extended sequence) is never negative.
- A wrap is counted when a sequence below the *first* one arrives in timestamp order (the `under` flag).
- "In timestamp order" means: the RTP timestamp is less than 2³¹ ahead of the stream's *first* timestamp, modulo
  2³². So a late packet is still "in order" (it updates the reference time), and a sender whose timestamp
  restarts at 0 counts as in order when its first timestamp was above 2³¹ (heplify FAX capture: 9.2 s max delta).
- **delta** is arrival minus the previous in-order packet's arrival. Max/min/mean delta and jitter skip the first
  packet, marker packets, comfort noise (PT 13/19) and the packet after it, and packets out of timestamp order.
  The mean divides by *all* packets so far, not by those counted.
- **jitter** (RFC 3550 §6.4.1): J += (|arrival − expected arrival| − J)/16, the expected arrival from the previous
  in-order packet plus the timestamp advance divided by `clock // 1000` (integer: a 44.1 kHz clock counts 44 per
  ms). Clock 0 (unknown dynamic payload, telephone-event) means no jitter: min jitter stays −1 as tshark prints.
- Times are in ms relative to the capture's first frame, as doubles, exactly as Wireshark converts them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtpcore.analysis.codecs import FIRST_DYNAMIC_PT, PayloadMap, codec_of, is_comfort_noise
from rtpcore.analysis.packets import NS_PER_S, RtpPacket

SEQ_MOD = 1 << 16
SEQ_HALF = 1 << 15
TS_MOD = 1 << 32
TS_HALF = 1 << 31
WRAP_GUARD = 0xFF00           # Wireshark: a drop this far back is a lost wrap, not a late packet
JITTER_GAIN = 16              # RFC 3550 §6.4.1
BIN_MS = 100                  # per-stream packet counts per 100 ms, for the timeline
DELAY_BUCKET_MS = 10          # histogram of arrival delay over the fastest packet, for the jitter-buffer model
DELAY_BUCKETS = 200           # 0..2 s; later packets land in the last bucket
RESYNC_GAP_MS = 500.0         # a talkspurt starts after this long without packets (or at a marker bit)
MS_PER_S = 1000


def _ms(rel_ns: int) -> float:
    """Wireshark's nstime_to_msec of a relative time: seconds·1000 + nanoseconds/10⁶ in doubles."""
    secs, nsecs = divmod(rel_ns, NS_PER_S)
    if secs < 0 and nsecs:
        secs, nsecs = secs + 1, nsecs - NS_PER_S  # nstime keeps nsecs with the sign of secs
    return secs * 1000.0 + nsecs / 1000000.0


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of missing sequence numbers, with the arrivals around it (seconds from the capture start)."""

    first_missing: int        # extended sequence number (wraps counted from the first packet)
    missing: int
    after_s: float
    before_s: float

    def to_json(self) -> dict[str, Any]:
        """JSON form for reports and the timeline."""
        return {"first_missing": self.first_missing, "missing": self.missing,
                "after_s": round(self.after_s, 6), "before_s": round(self.before_s, 6)}


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One RTP stream (src, dst, SSRC) with Wireshark's figures and ours; times in seconds from the capture start."""

    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    payload_types: tuple[int, ...]
    codec: str
    clock_rate: int
    first_s: float
    last_s: float
    packets: int
    expected: int
    lost: int
    loss_pct: float
    unique_lost: int
    duplicates: int
    out_of_order: int
    sequence_errors: int
    wraps: int
    markers: int
    min_delta_ms: float
    mean_delta_ms: float
    max_delta_ms: float
    max_delta_frame: int
    min_jitter_ms: float
    mean_jitter_ms: float
    max_jitter_ms: float
    payload_bytes: int
    per_100ms: tuple[int, ...] = field(repr=False)   # packets per 100 ms bin; bin 0 starts at the capture start
    gaps: tuple[Gap, ...] = field(repr=False)
    delay_histogram: tuple[int, ...] = field(repr=False)  # packets per 10 ms of delay over their talkspurt's fastest

    @property
    def key(self) -> str:
        """How tshark lists the stream: src:port → dst:port SSRC."""
        return f"{self.src}:{self.sport} -> {self.dst}:{self.dport} 0x{self.ssrc:08X}"

    @property
    def loss_bursts(self) -> int:
        """How many separate runs of loss there were (for the E-model's burst ratio)."""
        return len(self.gaps)

    def late_packets(self, buffer_ms: float) -> int:
        """Packets a fixed jitter buffer of buffer_ms would discard as late (anchored per talkspurt on its fastest packet)."""
        first = int(math.ceil(buffer_ms / DELAY_BUCKET_MS))
        return sum(self.delay_histogram[first:])

    def to_json(self) -> dict[str, Any]:
        """JSON form (schema of `rtphelper analyze --json` streams)."""
        doc: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__  # type: ignore[attr-defined]
                               if name not in ("per_100ms", "gaps", "delay_histogram", "payload_types")}
        doc["ssrc"] = f"0x{self.ssrc:08X}"
        doc["payload_types"] = list(self.payload_types)
        for name in ("first_s", "last_s"):
            doc[name] = round(doc[name], 6)
        for name in ("loss_pct", "min_delta_ms", "mean_delta_ms", "max_delta_ms",
                     "min_jitter_ms", "mean_jitter_ms", "max_jitter_ms"):
            doc[name] = round(doc[name], 3)
        doc["per_100ms"] = list(self.per_100ms)
        doc["gaps"] = [g.to_json() for g in self.gaps]
        return doc


class _Stream:
    """Wireshark's tap_rtp_stat_t for one stream, plus our own sequence bookkeeping."""

    def __init__(self, pkt: RtpPacket, now: float, dynamic: PayloadMap | None) -> None:
        self.dynamic = dynamic
        self.first = pkt
        self.start_seq = self.stop_seq = self.seq_num = pkt.seq
        self.cycles = 0
        self.under = False
        self.ext_ts = self.raw_ts = pkt.timestamp
        self.last_nominal = 0.0
        self.time = now
        self.start_ms = self.stop_ms = now
        self.pt = pkt.pt
        self.pts = [pkt.pt]
        self.delta = self.max_delta = self.mean_delta = 0.0
        self.min_delta = -1.0
        self.jitter = self.max_jitter = self.mean_jitter = 0.0
        self.min_jitter = -1.0
        self.max_nr = 0
        self.sequence = 0
        self.total_nr = 1
        self.markers = int(pkt.marker)
        self.clock_rate = 0
        self.payload_bytes = len(pkt.payload)
        # Ours: RFC 3550 extended sequence numbers, arrival per sequence, transit per packet.
        self.max_ext = pkt.seq
        self.arrival: dict[int, float] = {pkt.seq: now}
        self.duplicates = self.out_of_order = 0
        self.transits: list[tuple[int, float]] = []   # (talkspurt, arrival − RTP time) per packet
        self.talkspurt = 0
        self.last_arrival = now
        self.bins: list[int] = []
        self._bin(now)
        self._transit(pkt, now)

    def _bin(self, now: float) -> None:
        index = max(0, int(now // BIN_MS))
        if index >= len(self.bins):
            self.bins.extend([0] * (index + 1 - len(self.bins)))
        self.bins[index] += 1

    def _transit(self, pkt: RtpPacket, now: float) -> None:
        _name, clock = codec_of(pkt.pt, self.dynamic)
        step = (pkt.timestamp - self.raw_ts) % TS_MOD
        self.ext_ts += step - TS_MOD if step >= TS_HALF else step
        self.raw_ts = pkt.timestamp
        if (pkt.marker or now - self.last_arrival >= RESYNC_GAP_MS) and self.transits:
            self.talkspurt += 1
        self.last_arrival = max(self.last_arrival, now)
        if clock:
            self.transits.append((self.talkspurt, now - self.ext_ts * MS_PER_S / clock))

    def add(self, pkt: RtpPacket, now: float) -> None:
        """rtppacket_analyse (Wireshark 4.0) for a packet after the first."""
        seq = pkt.seq
        ts = pkt.timestamp
        first_ts = self.first.timestamp
        if first_ts <= ts:
            in_time = ts - first_ts < TS_HALF
        else:
            in_time = (TS_MOD - 1 - first_ts) + ts < TS_HALF
        wrong_ts = not in_time
        if seq < self.start_seq and in_time and not self.under:
            self.cycles += 1
            self.under = True
        elif seq == 0 and self.stop_seq == SEQ_MOD - 1 and in_time and not self.under:
            self.cycles += 1
            self.under = True
        elif seq > self.start_seq and in_time and self.under:
            self.under = False
        if in_time and self.seq_num + 1 == seq:
            self.seq_num = seq
        elif in_time and self.seq_num == SEQ_MOD - 1 and seq == 0:
            self.seq_num = seq
        elif in_time and (self.seq_num + 1 < seq or self.seq_num - seq > WRAP_GUARD):
            self.seq_num = seq
            self.sequence += 1
        elif self.seq_num + 1 > seq:
            self.sequence += 1
        comfort_noise = is_comfort_noise(pkt.pt)
        follows_cn = is_comfort_noise(self.pt)
        self.pt = pkt.pt
        if pkt.pt not in self.pts:
            self.pts.append(pkt.pt)
        _name, clock = codec_of(pkt.pt, self.dynamic)
        current_jitter = 0.0
        if in_time:
            if clock:
                self.clock_rate = clock
                # Nominal time from the *first* packet's timestamp, modulo 2³²; integer ms divisor as Wireshark.
                nominal = ((ts - first_ts) % TS_MOD) / (clock // MS_PER_S)
                current_diff = abs(now - (self.time + nominal - self.last_nominal))
                current_jitter = (15 * self.jitter + current_diff) / JITTER_GAIN
                self.jitter = current_jitter
                self.last_nominal = nominal
            self.delta = now - self.time
        if not (pkt.marker or comfort_noise or wrong_ts or follows_cn):
            if self.delta > self.max_delta:
                self.max_delta = self.delta
                self.max_nr = pkt.frame
            if self.min_delta == -1 or self.delta < self.min_delta:
                self.min_delta = self.delta
            self.mean_delta = (self.mean_delta * (self.total_nr - 1) + self.delta) / self.total_nr
            if clock:
                self.max_jitter = max(self.max_jitter, self.jitter)
                self.mean_jitter = (self.mean_jitter * (self.total_nr - 1) + current_jitter) / self.total_nr
                if self.min_jitter == -1 or self.jitter < self.min_jitter:
                    self.min_jitter = self.jitter
        if in_time:
            self.time = now
        self.stop_seq = seq
        self.stop_ms = now
        self.total_nr += 1
        self.markers += int(pkt.marker)
        self.payload_bytes += len(pkt.payload)
        self._ours(pkt, now)

    def _ours(self, pkt: RtpPacket, now: float) -> None:
        """RFC 3550 extended sequence: duplicates, reordering and the set of sequences received."""
        step = (pkt.seq - self.max_ext) % SEQ_MOD
        ext = self.max_ext + (step - SEQ_MOD if step >= SEQ_HALF else step)
        if ext in self.arrival:
            self.duplicates += 1
        else:
            if ext < self.max_ext:
                self.out_of_order += 1
            self.arrival[ext] = now
        self.max_ext = max(self.max_ext, ext)
        self._bin(now)
        self._transit(pkt, now)

    def result(self) -> StreamStats:
        """Freeze into StreamStats, with tshark's expected/lost formula."""
        expected = self.stop_seq + self.cycles * SEQ_MOD - self.start_seq + 1
        lost = expected - self.total_nr
        seqs = sorted(self.arrival)
        gaps = tuple(
            Gap(a + 1, b - a - 1, self.arrival[a] / MS_PER_S, self.arrival[b] / MS_PER_S)
            for a, b in zip(seqs, seqs[1:]) if b - a > 1
        )
        histogram = [0] * DELAY_BUCKETS
        fastest: dict[int, float] = {}
        for spurt, transit in self.transits:
            fastest[spurt] = min(transit, fastest.get(spurt, transit))
        for spurt, transit in self.transits:
            histogram[min(DELAY_BUCKETS - 1, int((transit - fastest[spurt]) // DELAY_BUCKET_MS))] += 1
        main_pt = self.pts[0]
        name, clock = codec_of(main_pt, self.dynamic)
        first = self.first
        return StreamStats(
            src=first.src, sport=first.sport, dst=first.dst, dport=first.dport, ssrc=first.ssrc,
            payload_types=tuple(self.pts), codec=name, clock_rate=self.clock_rate or clock,
            first_s=self.start_ms / MS_PER_S, last_s=self.stop_ms / MS_PER_S,
            packets=self.total_nr, expected=expected, lost=lost,
            loss_pct=lost * 100.0 / expected if expected else 0.0,
            unique_lost=sum(g.missing for g in gaps), duplicates=self.duplicates, out_of_order=self.out_of_order,
            sequence_errors=self.sequence, wraps=self.cycles, markers=self.markers,
            min_delta_ms=self.min_delta, mean_delta_ms=self.mean_delta, max_delta_ms=self.max_delta,
            max_delta_frame=self.max_nr, min_jitter_ms=self.min_jitter, mean_jitter_ms=self.mean_jitter,
            max_jitter_ms=self.max_jitter, payload_bytes=self.payload_bytes,
            per_100ms=tuple(self.bins), gaps=gaps, delay_histogram=tuple(histogram),
        )


StreamId = tuple[str, int, str, int, int]


def stream_id(pkt: RtpPacket) -> StreamId:
    """Wireshark's rtpstream_id: addresses, ports and SSRC (the payload type is not part of it)."""
    return pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.ssrc


def compute_stats(packets: Iterable[RtpPacket], first_ts_ns: int,
                  dynamic: PayloadMap | None = None) -> tuple[StreamStats, ...]:
    """Statistics of every stream, in order of first packet (as tshark lists them)."""
    streams: dict[StreamId, _Stream] = {}
    for pkt in packets:
        now = _ms(pkt.ts_ns - first_ts_ns)
        key = stream_id(pkt)
        state = streams.get(key)
        if state is None:
            streams[key] = _Stream(pkt, now, dynamic)
        else:
            state.add(pkt, now)
    return tuple(s.result() for s in streams.values())


def dynamic_payloads_from_sdp(sdp_lines: Sequence[str]) -> dict[int, tuple[str, int]]:
    """{pt: (encoding, clock)} from a=rtpmap lines, so dynamic payloads get a clock rate for jitter."""
    found: dict[int, tuple[str, int]] = {}
    for line in sdp_lines:
        line = line.strip()
        if not line.startswith("a=rtpmap:"):
            continue
        head, _sep, rest = line[len("a=rtpmap:"):].partition(" ")
        parts = rest.split("/")
        if head.isdigit() and int(head) >= FIRST_DYNAMIC_PT and len(parts) >= 2 and parts[1].isdigit():
            found[int(head)] = (parts[0], int(parts[1]))
    return found
