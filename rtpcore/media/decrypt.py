"""Decrypt a call's filtered media: per stream, in time order across files, with the sender's SDES key."""
from __future__ import annotations

import heapq
import logging
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from pathlib import Path

from rtpcore.analysis.packets import (
    PLAIN_RTP_FIRST_BYTE, PORT_DISSECTED_UDP, RTCP_PT_RANGE, CaptureMedia, MediaCollector, RtpPacket,
)
from rtpcore.fsutil import atomic_output, new_temp
from rtpcore.literals import StreamKind
from rtpcore.media.demux import ETHERTYPE_IPV4_BYTES, IPV4_FAST_LINKS
from rtpcore.media.rtp import (
    FIRST_BYTE_RTP_MAX,
    FIRST_BYTE_RTP_MIN,
    RTCP_PT_MAX,
    RTCP_PT_MIN,
    RTP_HEADER_LEN,
    classify,
    looks_like_clear_rtcp,
)
from rtpcore.media.keying import DUPLICATE, NEVER_NS, KeyState, SenderKeys
from rtpcore.pcap.build import frame, replace_udp_payload
from rtpcore.pcap.layers import ETH_HEADER_LEN, link_payload, parse_ip, parse_udp
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.merge import LE_MAGIC_NS, LE_MAGIC_US, NS_PER_US, PCAP_FILE_HEADER_LEN, common_linktype
from rtpcore.pcap.reader import CaptureReader, open_capture
from rtpcore.pcap.writer import RECORD_HEADER, PcapWriter
from rtpcore.plan import Endpoint, Leg, LegPlan, MediaSide
from rtpcore.sip.crypto import CryptoAttribute

log = logging.getLogger(__name__)

DECRYPTED_SUFFIX = "-decrypted.pcap"
NO_DECRYPT_SUFFIX = "-no-decrypt-need.pcap"
# Duplicates (capture on "any", two interfaces) arrive within a few packets of the original.
DUPLICATE_MEMORY = 64


@dataclass(frozen=True, slots=True)
class FilteredInput:
    """One per-leg filtered file and the raw capture it came from."""

    leg: str
    path: Path
    source: Path  # the raw chunk; names the per-file decrypted output


@dataclass(slots=True)
class StreamStats:
    """Counts for one stream (leg, src → dst, kind, SSRC): what a user reads in the report."""

    leg: str
    src: str
    dst: str
    kind: StreamKind
    ssrc: int
    suite: str | None = None
    packets: int = 0
    decrypted: int = 0
    auth_failed: int = 0
    duplicates: int = 0
    clear: int = 0
    first_ns: int = 0
    last_ns: int = 0
    max_gap_ns: int = 0
    first_seq: int | None = None  # extended sequence numbers (RTP only)
    highest_seq: int | None = None
    roc_start: int | None = None
    key: str = ""  # KEY_AUTHENTICATED / KEY_WRONG / KEY_NONE / KEY_NOT_SRTP / KEY_CLEAR, set when the run ends

    @property
    def expected(self) -> int:
        """Packets the sender sent between the first and highest sequence seen (RTP only)."""
        if self.first_seq is None or self.highest_seq is None:
            return self.packets
        return self.highest_seq - self.first_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.packets) if self.kind == "rtp" else 0

    def to_json(self) -> dict[str, object]:
        return {
            "src": self.src, "dst": self.dst, "kind": self.kind, "ssrc": f"0x{self.ssrc:08x}",
            "packets": self.packets, "decrypted": self.decrypted, "auth_failed": self.auth_failed,
            "duplicates": self.duplicates, "clear": self.clear, "lost": self.lost,
            "max_gap_ms": round(self.max_gap_ns / 1e6, 1), "suite": self.suite, "key": self.key,
        }


@dataclass(frozen=True, slots=True)
class DecryptResult:
    """What the decrypt stage wrote and counted."""

    streams: tuple[StreamStats, ...]
    outputs: tuple[Path, ...]  # per raw file, -decrypted or -no-decrypt-need
    merged: Path
    packets: int
    warnings: tuple[str, ...]
    # issue 11: the RTP/RTCP of media_decrypted.pcap as the analysis reads it, collected while writing it
    media: CaptureMedia | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class _Stream:
    stats: StreamStats
    keys: KeyState
    recent: OrderedDict[bytes, None] = field(default_factory=OrderedDict)


def _routes(leg: Leg) -> dict[tuple[Endpoint, Endpoint], SenderKeys]:
    """(src, dst) endpoint pair → the sending side's keys, for RTP and RTCP, both directions."""
    senders: dict[tuple[str, Endpoint, Endpoint], SenderKeys] = {}
    routes: dict[tuple[Endpoint, Endpoint], SenderKeys] = {}
    for n in leg.negotiations:
        for role, me, other in (("peer", n.peer, n.host), ("host", n.host, n.peer)):
            for src, dst in ((me.rtp, other.rtp), (me.rtcp, other.rtcp)):
                sender = senders.setdefault((role, src, dst), SenderKeys(n.srtp_suite))
                sender.srtp = sender.srtp or n.is_srtp
                if n.srtp_suite and me.crypto is not None:
                    sender.keys.append((n.start_ns, n.end_ns, me.crypto))
                    sender.suite = n.srtp_suite
                routes[(src, dst)] = sender
    return routes


def decrypt_call(
    plan: LegPlan, inputs: Sequence[FilteredInput], decrypted_dir: Path, merged: Path, *, collect: bool = False
) -> DecryptResult:
    """Decrypt every stream of the call; write per-raw-file outputs and the merged media_decrypted.pcap.

    collect: also gather the merged file's RTP/RTCP headers for the analysis (as read_media would read them back).
    """
    table = {leg.name: _routes(leg) for leg in plan.legs}

    def route(leg: str, src: Endpoint, dst: Endpoint) -> SenderKeys | None:
        return table.get(leg, {}).get((src, dst))

    return _run(route, inputs, decrypted_dir, merged, collector=MediaCollector() if collect else None)


def decrypt_capture(source: Path, crypto: CryptoAttribute, out: Path) -> DecryptResult:
    """`rtphelper decrypt`: every RTP/RTCP stream in one capture, all with the one key given by hand."""
    sender = SenderKeys(crypto.canonical_suite, [(0, 2**63, crypto)], srtp=True)
    item = FilteredInput("manual", Path(source), Path(source))
    return _run(lambda leg, src, dst: sender, [item], Path(out).parent, Path(out), per_file=False)


Route = Callable[[str, Endpoint, Endpoint], "SenderKeys | None"]
_Record = tuple[int, int, int, bytes]                 # ts_ns, input index, link type, frame
_StreamKey = tuple[str, Endpoint, Endpoint, str, int]

# The fast path takes IPv4 without options carrying RTP over UDP, on demux's IPV4_FAST_LINKS.
# IPv4 header words (ver/IHL+TOS, total length, id, flags+offset, TTL+protocol), addresses+ports, UDP length,
# then RTP's first two bytes, sequence number, timestamp and SSRC.
_IPV4_UDP_RTP = struct.Struct("!HHHHH2x12sH2xBBHI4s")
_IPV4_UDP_OUT = struct.Struct("!HHHHHH12sHH")           # the same headers rewritten, checksums included
_FAST_MIN_LEN = _IPV4_UDP_RTP.size
IPV4_NO_OPTIONS = 0x45
IPV4_FRAGMENT_BITS = 0x3FFF                              # MF flag + fragment offset
IPV4_MIN_HEADER = 20
UDP_HEADER_LEN = 8
IPV4_UDP_HEADERS = IPV4_MIN_HEADER + UDP_HEADER_LEN
UDP_RTP_MIN = UDP_HEADER_LEN + RTP_HEADER_LEN
IPPROTO_UDP = 17
ONES = 0xFFFF                                            # a one's-complement sum is the value modulo 0xFFFF
NS_PER_S = 1_000_000_000
FLUSH_RECORDS = 8192                                     # packed output records held before a write
SCAN_MAX_BYTES = 64 << 20                                # filtered inputs up to this are read whole (_scan);
                                                         # bigger ones (`rtphelper decrypt` of a capture) stream
RTCP_LIKE_MIN, RTCP_LIKE_MAX = RTCP_PT_RANGE[0], RTCP_PT_RANGE[-1]   # the analysis leaves these payload types to RTCP


@dataclass(slots=True)
class _Fast:
    """A stream the fast path may take: its state and the checksum sums of its fixed header words."""

    stream: _Stream
    decrypting: bool
    addr_sum: int                                        # IPv4 source + destination words
    udp_sum: int                                         # pseudo header + UDP ports, without the lengths
    wrong_key: bool = False                              # no key fits: pass through, counted as auth failures
    until_ns: int = NEVER_NS                             # back to _process from here (a new negotiation window)
    ids: tuple[str, int, str, int, int] | None = None    # src, sport, dst, dport, SSRC for the analysis (None: no)


def _run(
    route: Route, inputs: Sequence[FilteredInput], decrypted_dir: Path, merged: Path, *, per_file: bool = True,
    collector: MediaCollector | None = None,
) -> DecryptResult:
    with ExitStack() as stack:
        readers = [stack.enter_context(open_capture(item.path)) for item in inputs]
        lts = [r.linktype for r in readers]
        out_linktype = common_linktype(lts)
        streams: dict[_StreamKey, _Stream] = {}
        warnings: list[str] = []
        sources = list(dict.fromkeys(item.source for item in inputs))
        decrypted_dir.mkdir(parents=True, exist_ok=True)
        decrypted_per_file = [0] * len(sources)
        merged_tmp = stack.enter_context(atomic_output(merged, overwrite=True))
        merged_w = stack.enter_context(PcapWriter(merged_tmp, out_linktype, nanosecond=True))
        tmp_paths: list[Path] = []
        writers: list[PcapWriter] = []
        for src in sources if per_file else ():
            tmp = new_temp(decrypted_dir, src.stem)
            tmp_paths.append(tmp)
            linktype = common_linktype(lt for lt, item in zip(lts, inputs) if item.source == src)
            writers.append(stack.enter_context(PcapWriter(tmp, linktype, nanosecond=True)))
        try:
            total = _loop(_records(readers, [item.path for item in inputs]), inputs, sources, route, streams, warnings, merged_w, writers,
                          decrypted_per_file, out_linktype, collector)
        except BaseException:
            for tmp in tmp_paths:
                tmp.unlink(missing_ok=True)
            raise
    outputs = []
    for index, src in enumerate(sources if per_file else ()):
        suffix = DECRYPTED_SUFFIX if decrypted_per_file[index] else NO_DECRYPT_SUFFIX
        final = decrypted_dir / f"{src.stem}{suffix}"
        os.replace(tmp_paths[index], final)
        outputs.append(final)
    for stream in streams.values():
        stream.stats.key = stream.keys.status(stream.stats.decrypted, stream.stats.clear, stream.stats.packets)
    stats = tuple(s.stats for s in streams.values())
    for s in stats:
        if s.auth_failed:
            warnings.append(
                f"{s.leg} {s.kind} {s.src} → {s.dst} ssrc 0x{s.ssrc:08x}: {s.auth_failed} of {s.packets} packets failed "
                "SRTP authentication (wrong or missing key?); written undecrypted"
            )
    for w in warnings:
        log.warning(w)
    media = collector.media(merged) if collector is not None else None
    return DecryptResult(stats, tuple(outputs), merged, total, tuple(dict.fromkeys(warnings)), media)


def _records(readers: Sequence[CaptureReader], paths: Sequence[Path] = ()) -> Iterable[_Record]:
    """All filtered frames of the call in timestamp order across files (ties keep input order)."""
    scanned = [_scan(p, r.linktype, i) if r.format == "pcap" else None for i, (p, r) in enumerate(zip(paths, readers))]
    if len(readers) == 1:
        if scanned and scanned[0] is not None:
            return scanned[0]
        return ((ts, 0, lt, data) for ts, lt, data, _ in readers[0].records())
    lists = [part if part is not None else [(ts, i, lt, data) for ts, lt, data, _ in r.records()]
             for i, (r, part) in enumerate(zip(readers, scanned or [None] * len(readers)))]
    key = itemgetter(0)
    if all(_ordered(part) for part in lists):
        # A stable sort of time-ordered runs is the k-way merge, at C speed.
        return sorted(chain.from_iterable(lists), key=key)
    return heapq.merge(*lists, key=key)


def _scan(path: Path, linktype: int, index: int) -> list[_Record] | None:
    """A small little-endian classic pcap's records, read in one go (what the reader yields, without its buffering
    and generator per record); None for any other file or anything odd, which the reader then reads or reports."""
    if path.stat().st_size > SCAN_MAX_BYTES:
        return None
    data = path.read_bytes()
    magic = data[:4]
    if magic not in (LE_MAGIC_US, LE_MAGIC_NS):
        return None
    mul = 1 if magic == LE_MAGIC_NS else NS_PER_US
    unpack, hlen = RECORD_HEADER.unpack_from, RECORD_HEADER.size
    records: list[_Record] = []
    append = records.append
    pos, size = PCAP_FILE_HEADER_LEN, len(data)
    while pos < size:
        if pos + hlen > size:
            return None
        sec, frac, incl, _ = unpack(data, pos)
        begin = pos + hlen
        pos = begin + incl
        if pos > size:
            return None
        append((sec * NS_PER_S + frac * mul, index, linktype, data[begin:pos]))
    return records


def _ordered(records: list[_Record]) -> bool:
    times = [r[0] for r in records]
    return times == sorted(times)


def _loop(
    records: Iterable[_Record],
    inputs: Sequence[FilteredInput],
    sources: list[Path],
    route: Route,
    streams: dict[_StreamKey, _Stream],
    warnings: list[str],
    merged_w: PcapWriter,
    writers: list[PcapWriter],
    decrypted_per_file: list[int],
    out_linktype: int,
    collector: MediaCollector | None = None,
) -> int:
    """Every frame through _process, except RTP on plain IPv4 of a stream already seen: that takes the inlined
    fast path, which counts, decrypts and rewrites exactly as _process would (test_decrypt_fast.py compares them).
    """
    source_of = [sources.index(item.source) for item in inputs]
    fast_by_leg: dict[str, dict[tuple[bytes, bytes], _Fast]] = {item.leg: {} for item in inputs}
    fasts = [fast_by_leg[item.leg] for item in inputs]
    pending: list[list[bytes]] = [[] for _ in writers]
    merged_pending: list[bytes] = []
    unpack, pack_out, pack_record = _IPV4_UDP_RTP.unpack_from, _IPV4_UDP_OUT.pack, RECORD_HEADER.pack
    fast_link, from_bytes = IPV4_FAST_LINKS.get, int.from_bytes
    max_len = min([merged_w.snaplen, *(w.snaplen for w in writers)]) - ETH_HEADER_LEN  # room for _reframe
    total = 0
    new = tuple.__new__
    collected = collector.rtp.append if collector is not None else None

    def flush() -> None:
        merged_w.write_packed(merged_pending)
        merged_pending.clear()
        for writer, part in zip(writers, pending):
            writer.write_packed(part)
            part.clear()

    for ts, i, lt, data in records:
        fast = key = None
        link = fast_link(lt)
        if link is not None:
            o, e = link
            if len(data) >= o + _FAST_MIN_LEN and (e < 0 or data[e : e + 2] == ETHERTYPE_IPV4_BYTES):
                w0, ip_total, ident, frag, w4, raw, udp_len, b0, b1, seq, timestamp, ssrc = unpack(data, o)
                if (
                    w0 >> 8 == IPV4_NO_OPTIONS and w4 & 0xFF == IPPROTO_UDP and not frag & IPV4_FRAGMENT_BITS
                    and FIRST_BYTE_RTP_MIN <= b0 <= FIRST_BYTE_RTP_MAX and not RTCP_PT_MIN <= b1 <= RTCP_PT_MAX
                    and UDP_RTP_MIN <= udp_len <= ip_total - IPV4_MIN_HEADER and ip_total <= len(data) - o
                ):
                    key = (raw, ssrc)
                    fast = fasts[i].get(key)
                    if fast is not None and ts >= fast.until_ns:
                        del fasts[i][key]
                        fast = None
        quick = False                                    # the analysis takes this frame's RTP header as decoded here
        if fast is None:
            frame, did, stream = _process(ts, inputs[i], lt, data, route, streams, warnings)
            if key is not None and stream is not None:
                fast = _fast_route(stream, raw, did, collector)
                if fast is not None:
                    fasts[i][key] = fast
            if frame is None:
                continue
        else:
            stream = fast.stream
            stats = stream.stats
            payload = data[o + IPV4_UDP_HEADERS : o + IPV4_MIN_HEADER + udp_len]
            recent = stream.recent
            if payload in recent:
                stats.duplicates += 1
                continue
            recent[payload] = None
            if len(recent) > DUPLICATE_MEMORY:
                recent.popitem(last=False)
            stats.packets += 1
            if ts - stats.last_ns > stats.max_gap_ns:
                stats.max_gap_ns = ts - stats.last_ns
            stats.last_ns = ts
            frame, did = data, 0
            if fast.wrong_key:
                stats.auth_failed += 1
            # Hot loop, no None check: _fast_route sets decrypting only for a stream whose context authenticated.
            plain = stream.keys.ctx.unprotect_rtp_or_none(payload) if fast.decrypting else None  # type: ignore[union-attr]
            if fast.decrypting and plain is None:
                frame, did = _finish(stream, "rtp", payload, ts, lt, data, warnings)
            else:
                quick = fast.ids is not None and b0 == PLAIN_RTP_FIRST_BYTE and not RTCP_LIKE_MIN <= b1 & 0x7F <= RTCP_LIKE_MAX
                if plain is not None:
                    # replace_udp_payload, inlined for IPv4 without options: same bytes, checksums as sums mod 0xFFFF.
                    stats.decrypted += 1
                    did = 1
                    n = len(plain)
                    psum = from_bytes(plain, "big") << 8 if n & 1 else from_bytes(plain, "big")
                    udp_len = UDP_HEADER_LEN + n
                    ip_len = IPV4_MIN_HEADER + udp_len
                    ip_sum = (w0 + ip_len + ident + frag + w4 + fast.addr_sum) % ONES
                    udp_sum = (fast.udp_sum + 2 * udp_len + psum) % ONES
                    frame = b"".join((data[:o], pack_out(w0, ip_len, ident, frag, w4, (ONES - ip_sum) % ONES, raw,
                                                         udp_len, ONES - udp_sum), plain))
                # _track_seq, inlined: the stream's first packet went through _process, so highest_seq is set.
                high: int = stats.highest_seq  # type: ignore[assignment]  # _fast_route checked it
                ext = high - (high & 0xFFFF) + seq
                if ext < high - 32768:
                    ext += 65536
                elif ext > high + 32768:
                    ext -= 65536
                if ext > high:
                    stats.highest_seq = ext
                if ext < (stats.first_seq or ext):
                    stats.first_seq = ext
        total += 1
        if collected is not None:
            if quick:   # read_media's RtpPacket of this frame, built here (test_analysis_collect.py compares them)
                body = plain if plain is not None else payload
                src, sport, dst, dport, ssrc_id = fast.ids  # type: ignore[union-attr,misc]  # quick: ids is set
                collected(new(RtpPacket, (total, ts, src, sport, dst, dport, ssrc_id, b1 & 0x7F, seq, timestamp,
                                          b1 > 0x7F, body[RTP_HEADER_LEN:])))
            else:
                collector.add(total, ts, out_linktype,  # type: ignore[union-attr]  # collected implies a collector
                              frame if lt == out_linktype else _reframe(lt, frame))
        index = source_of[i]
        decrypted_per_file[index] += did
        n = len(frame)
        if n > max_len or ts < 0:  # let the writers cut or refuse it
            flush()
            if writers:
                writers[index].write(ts, frame)
            merged_w.write(ts, frame if lt == out_linktype else _reframe(lt, frame))
            continue
        sec, frac = divmod(ts, NS_PER_S)
        record = pack_record(sec, frac, n, n) + frame
        if writers:
            pending[index].append(record)
        if lt != out_linktype:
            frame = _reframe(lt, frame)
            record = pack_record(sec, frac, len(frame), len(frame)) + frame
        merged_pending.append(record)
        if len(merged_pending) >= FLUSH_RECORDS:
            flush()
    flush()
    return total


def _fast_route(stream: _Stream, raw: bytes, decrypted: int, collector: MediaCollector | None = None) -> _Fast | None:
    """The fast-path entry for a stream _process has just handled, when its next packets can skip _process."""
    stats, keys = stream.stats, stream.keys
    sender = keys.sender
    if stats.kind != "rtp" or stats.highest_seq is None:
        return None
    clear = sender is None or not sender.suite or not sender.keys
    wrong = not clear and keys.wrong_key and keys.ctx is None
    if not clear and not wrong and not (decrypted and keys.ctx is not None):
        return None
    addr_sum = int.from_bytes(raw[:8], "big") % ONES
    udp_sum = (int.from_bytes(raw, "big") + IPPROTO_UDP) % ONES
    ids = None
    sport, dport = int.from_bytes(raw[8:10], "big"), int.from_bytes(raw[10:12], "big")
    if collector is not None and sport not in PORT_DISSECTED_UDP and dport not in PORT_DISSECTED_UDP:
        ids = (collector.name(raw[:4]), sport, collector.name(raw[4:8]), dport, stats.ssrc)
    if wrong:
        return _Fast(stream, False, addr_sum, udp_sum, wrong_key=True, until_ns=keys.next_window(), ids=ids)
    return _Fast(stream, not clear, addr_sum, udp_sum, ids=ids)


def _reframe(linktype: int, data: bytes) -> bytes:
    l3 = link_payload(linktype, data)
    return frame(LINKTYPE_ETHERNET, l3) if l3 is not None else data


def _process(
    ts: int,
    item: FilteredInput,
    linktype: int,
    data: bytes,
    route: Route,
    streams: dict[_StreamKey, _Stream],
    warnings: list[str],
) -> tuple[bytes | None, int, _Stream | None]:
    """One frame → (frame to write or None to drop a duplicate, 1 if decrypted else 0, its stream if RTP/RTCP)."""
    l3 = link_payload(linktype, data)
    ip = parse_ip(l3) if l3 is not None else None
    udp = parse_udp(ip) if ip is not None else None
    if udp is None:
        return data, 0, None
    payload = udp.payload
    kind = classify(payload)
    if kind is None:
        return data, 0, None
    src, dst = Endpoint(udp.src, udp.sport), Endpoint(udp.dst, udp.dport)
    ssrc = int.from_bytes(payload[8:12] if kind == "rtp" else payload[4:8], "big")
    key = (item.leg, src, dst, kind, ssrc)
    stream = streams.get(key)
    if stream is None:
        sender = route(item.leg, src, dst)
        stats = StreamStats(item.leg, str(src), str(dst), kind, ssrc, suite=sender.suite if sender else None,
                            first_ns=ts, last_ns=ts)
        where = f"{item.leg} {src} → {dst}"
        stream = streams[key] = _Stream(stats, KeyState(sender, ssrc, where))
    stats = stream.stats
    if payload in stream.recent:
        stats.duplicates += 1
        return None, 0, stream
    stream.recent[payload] = None
    if len(stream.recent) > DUPLICATE_MEMORY:
        stream.recent.popitem(last=False)
    stats.packets += 1
    if ts - stats.last_ns > stats.max_gap_ns:
        stats.max_gap_ns = ts - stats.last_ns
    stats.last_ns = ts
    return (*_finish(stream, kind, payload, ts, linktype, data, warnings), stream)


def _finish(
    stream: _Stream, kind: StreamKind, payload: bytes, ts: int, linktype: int, data: bytes, warnings: list[str]
) -> tuple[bytes, int]:
    """A counted packet of a stream → (frame to write, 1 if decrypted else 0), its sequence number tracked.

    SRTCP is authenticated first: a single-report SRTCP packet (an RR or SR alone) parses as clear RTCP,
    its E-flag+index word read as one more header. Only a packet no key authenticates may be clear RTCP.
    """
    stats, keys = stream.stats, stream.keys
    if keys.sender is None or not keys.sender.usable:
        _track_seq(stats, payload, 0)
        return data, 0
    plain = keys.unprotect(kind, payload, ts, warnings)
    if plain is None and kind == "rtcp" and looks_like_clear_rtcp(payload):
        stats.clear += 1
        return data, 0
    if plain is None or plain is DUPLICATE:
        if plain is None:
            stats.auth_failed += 1
        else:
            stats.duplicates += 1
        _track_seq(stats, payload, keys.roc)
        return data, 0
    stats.decrypted += 1
    if kind == "rtp":
        if stats.roc_start is None:
            stats.roc_start = keys.roc
        _track_seq(stats, plain, keys.roc)
    return replace_udp_payload(linktype, data, plain), 1


def _track_seq(stats: StreamStats, rtp: bytes, roc: int) -> None:
    """Extended sequence numbers for loss: ROC·65536 + seq, following wraps in plain RTP too."""
    if stats.kind != "rtp" or len(rtp) < 4:
        return
    seq = (rtp[2] << 8) | rtp[3]
    if stats.highest_seq is None:
        ext = roc * 65536 + seq
        stats.first_seq = stats.highest_seq = ext
        return
    base = stats.highest_seq - (stats.highest_seq & 0xFFFF)
    ext = base + seq
    if ext < stats.highest_seq - 32768:
        ext += 65536
    elif ext > stats.highest_seq + 32768:
        ext -= 65536
    if ext > stats.highest_seq:
        stats.highest_seq = ext
    if ext < (stats.first_seq or ext):
        stats.first_seq = ext
