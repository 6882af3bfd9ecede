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
from collections import Counter
from itertools import repeat
from operator import add, floordiv, itemgetter, mod, mul, sub, truediv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtpcore.analysis.codecs import FIRST_DYNAMIC_PT, PT_CN, PT_CN_OLD, PayloadMap, codec_of
from rtpcore.analysis.packets import RtpPacket
from rtpcore.pcap.reader import NS_PER_S

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
TS_NS_FIELD = 1
PT_FIELD = 7                  # RtpPacket.pt's position in the tuple
MARKER_FIELD = 10
PAYLOAD_FIELD = 11
CN_PTS = frozenset({PT_CN, PT_CN_OLD})   # comfort noise: skipped, and so is the packet after it


def _ms(rel_ns: int) -> float:
    """Wireshark's nstime_to_msec of a relative time: seconds·1000 + nanoseconds/10⁶ in doubles."""
    secs, nsecs = divmod(rel_ns, NS_PER_S)
    if secs < 0 and nsecs:
        secs, nsecs = secs + 1, nsecs - NS_PER_S  # nstime keeps nsecs with the sign of secs
    return secs * 1000.0 + nsecs / 1000000.0


def _arrivals_ms(packets: Sequence[RtpPacket], first_ts_ns: int) -> list[float]:
    """_ms of every packet's arrival, computed at C level (map/operator) with the same double operations."""
    rels = list(map(sub, map(itemgetter(TS_NS_FIELD), packets), repeat(first_ts_ns)))
    if rels and min(rels) < 0:      # a frame before the first one (an unsorted file): nstime's sign rules
        return list(map(_ms, rels))
    return list(map(add, map(mul, map(floordiv, rels, repeat(NS_PER_S)), repeat(1000.0)),
                    map(truediv, map(mod, rels, repeat(NS_PER_S)), repeat(1000000.0))))


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
        doc: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__
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


def stream_stats(packets: Sequence[RtpPacket], first_ts_ns: int, dynamic: PayloadMap | None) -> StreamStats:
    """rtppacket_analyse (Wireshark 4.0) over one stream's packets, plus our own sequence bookkeeping.

    One loop with local variables: this runs once per packet of the call and is most of the analysis time.
    """
    first = packets[0]
    codecs = {pt: codec_of(pt, dynamic) for pt in dict.fromkeys(map(itemgetter(PT_FIELD), packets))}
    clocks = {pt: clock for pt, (_name, clock) in codecs.items()}
    first_ts = first.timestamp
    start_seq = stop_seq = seq_num = first.seq
    cycles = sequence = 0
    under = False
    now = _ms(first.ts_ns - first_ts_ns)
    start_ms = stop_ms = last_time = last_arrival = now
    last_nominal = 0.0
    prev_pt = first.pt
    delta = max_delta = mean_delta = jitter = max_jitter = mean_jitter = 0.0
    min_delta = min_jitter = -1.0
    max_nr = clock_rate = 0
    ext_ts = raw_ts = first_ts
    max_ext = first.seq
    arrival: dict[int, float] = {}
    duplicates = out_of_order = 0
    transits: list[float] = []          # arrival − RTP time per packet with a clock
    spurt_starts = [0]                  # index into transits where each talkspurt begins
    nows = _arrivals_ms(packets, first_ts_ns)
    single_clock = clocks[first.pt] if len(clocks) == 1 else None
    has_cn = not CN_PTS.isdisjoint(clocks)   # without comfort noise no packet is skipped for it
    skip_cn = False
    for total_nr, ((frame, _ts_ns, _src, _sport, _dst, _dport, _ssrc, pt, seq, ts, marker, _payload), now) in enumerate(
            zip(packets, nows)):
        clock = clocks[pt] if single_clock is None else single_clock
        if total_nr:
            # -- Wireshark: in timestamp order relative to the FIRST packet, modulo 2^32 --
            in_time = ts - first_ts < TS_HALF if first_ts <= ts else (TS_MOD - 1 - first_ts) + ts < TS_HALF
            if in_time:
                if seq < start_seq and not under:
                    cycles += 1
                    under = True
                elif seq == 0 and stop_seq == SEQ_MOD - 1 and not under:
                    cycles += 1
                    under = True
                elif seq > start_seq and under:
                    under = False
                if seq_num + 1 == seq or (seq_num == SEQ_MOD - 1 and seq == 0):
                    seq_num = seq
                elif seq_num + 1 < seq or seq_num - seq > WRAP_GUARD:
                    seq_num = seq
                    sequence += 1
                elif seq_num + 1 > seq:
                    sequence += 1
            elif seq_num + 1 > seq:
                sequence += 1
            if has_cn:
                skip_cn = prev_pt in CN_PTS or pt in CN_PTS   # comfort noise, or the packet after it
                prev_pt = pt
            current_jitter = 0.0
            if in_time:
                if clock:
                    clock_rate = clock
                    nominal = ((ts - first_ts) % TS_MOD) / (clock // MS_PER_S)
                    current_jitter = (15 * jitter + abs(now - (last_time + nominal - last_nominal))) / JITTER_GAIN
                    jitter = current_jitter
                    last_nominal = nominal
                delta = now - last_time
                if not (marker or skip_cn):
                    if delta > max_delta:
                        max_delta = delta
                        max_nr = frame
                    if min_delta == -1 or delta < min_delta:
                        min_delta = delta
                    mean_delta = (mean_delta * (total_nr - 1) + delta) / total_nr
                    if clock:
                        if jitter > max_jitter:
                            max_jitter = jitter
                        mean_jitter = (mean_jitter * (total_nr - 1) + current_jitter) / total_nr
                        if min_jitter == -1 or jitter < min_jitter:
                            min_jitter = jitter
                last_time = now
            stop_seq = seq
            # -- ours: RFC 3550 extended sequence numbers --
            step = (seq - max_ext) % SEQ_MOD
            ext = max_ext + (step - SEQ_MOD if step >= SEQ_HALF else step)
            if ext in arrival:
                duplicates += 1
            else:
                if ext < max_ext:
                    out_of_order += 1
                arrival[ext] = now
                if ext > max_ext:
                    max_ext = ext
            step = (ts - raw_ts) % TS_MOD
            ext_ts += step - TS_MOD if step >= TS_HALF else step
            raw_ts = ts
            if (marker or now - last_arrival >= RESYNC_GAP_MS) and transits:
                spurt_starts.append(len(transits))
        else:
            arrival[max_ext] = now
        if now > last_arrival:
            last_arrival = now
        if clock:
            transits.append(now - ext_ts * MS_PER_S / clock)
    total_nr = len(packets)
    stop_ms = nows[-1]
    markers = sum(map(itemgetter(MARKER_FIELD), packets))
    payload_bytes = sum(map(len, map(itemgetter(PAYLOAD_FIELD), packets)))
    expected = stop_seq + cycles * SEQ_MOD - start_seq + 1
    lost = expected - total_nr
    seqs = sorted(arrival)
    gaps = () if seqs[-1] - seqs[0] + 1 == len(seqs) else tuple(   # no hole: skip the walk (the common case)
        Gap(a + 1, b - a - 1, arrival[a] / MS_PER_S, arrival[b] / MS_PER_S)
        for a, b in zip(seqs, seqs[1:]) if b - a > 1
    )
    histogram = [0] * DELAY_BUCKETS
    bounds = [*spurt_starts, len(transits)]
    for start, stop in zip(bounds, bounds[1:]):
        spurt = transits[start:stop]
        if spurt:
            # Counted at C level (map/Counter), not in a Python loop: this walks every packet once more.
            fastest = min(spurt)
            delays = map(floordiv, map(sub, spurt, repeat(fastest)), repeat(DELAY_BUCKET_MS))
            for bucket, count in Counter(map(int, delays)).items():
                histogram[min(DELAY_BUCKETS - 1, bucket)] += count
    per_bin = Counter(map(int, map(floordiv, nows, repeat(float(BIN_MS)))))
    bins = [0] * (max(0, max(per_bin)) + 1)
    for index, count in per_bin.items():
        bins[max(0, index)] += count
    pts = tuple(codecs)
    name, clock = codecs[first.pt]
    return StreamStats(
        src=first.src, sport=first.sport, dst=first.dst, dport=first.dport, ssrc=first.ssrc,
        payload_types=pts, codec=name, clock_rate=clock_rate or clock,
        first_s=start_ms / MS_PER_S, last_s=stop_ms / MS_PER_S,
        packets=total_nr, expected=expected, lost=lost, loss_pct=lost * 100.0 / expected if expected else 0.0,
        unique_lost=sum(g.missing for g in gaps), duplicates=duplicates, out_of_order=out_of_order,
        sequence_errors=sequence, wraps=cycles, markers=markers,
        min_delta_ms=min_delta, mean_delta_ms=mean_delta, max_delta_ms=max_delta, max_delta_frame=max_nr,
        min_jitter_ms=min_jitter, mean_jitter_ms=mean_jitter, max_jitter_ms=max_jitter,
        payload_bytes=payload_bytes, per_100ms=tuple(bins), gaps=gaps, delay_histogram=tuple(histogram),
    )


StreamId = tuple[str, int, str, int, int]
STREAM_FIELDS = itemgetter(2, 3, 4, 5, 6)    # RtpPacket's src, sport, dst, dport, ssrc


def stream_id(pkt: RtpPacket) -> StreamId:
    """Wireshark's rtpstream_id: addresses, ports and SSRC (the payload type is not part of it)."""
    return pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.ssrc


def group_streams(packets: Iterable[RtpPacket]) -> dict[StreamId, list[RtpPacket]]:
    """Packets per stream in capture order; streams in order of their first packet (as tshark lists them)."""
    groups: dict[StreamId, list[RtpPacket]] = {}
    get = groups.get
    for key, p in zip(map(STREAM_FIELDS, packets), packets):   # the key tuple built at C level
        group = get(key)
        if group is None:
            groups[key] = [p]
        else:
            group.append(p)
    return groups


def compute_stats(packets: Iterable[RtpPacket], first_ts_ns: int,
                  dynamic: PayloadMap | None = None) -> tuple[StreamStats, ...]:
    """Statistics of every stream, in order of first packet (as tshark lists them)."""
    return tuple(stream_stats(g, first_ts_ns, dynamic) for g in group_streams(packets).values())


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
