"""Decrypt a call's filtered media: per stream, in time order across files, with the sender's SDES key."""
from __future__ import annotations

import heapq
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rtpcore.errors import SrtpError
from rtpcore.fsutil import atomic_output
from rtpcore.media.rtp import classify, looks_like_clear_rtcp
from rtpcore.media.srtp import SUPPORTED_SUITES, SrtpAuthError, SrtpContext, SrtpReplayError, guess_roc
from rtpcore.pcap.build import frame, replace_udp_payload
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.plan import Endpoint, Leg, LegPlan, MediaSide
from rtpcore.sip.crypto import CryptoAttribute

log = logging.getLogger(__name__)

DECRYPTED_SUFFIX = "-decrypted.pcap"
NO_DECRYPT_SUFFIX = "-no-decrypt-need.pcap"
# Duplicates (capture on "any", two interfaces) arrive within a few packets of the original.
DUPLICATE_MEMORY = 64
MAX_ROC_GUESS = 4096


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
    kind: str
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
            "max_gap_ms": round(self.max_gap_ns / 1e6, 1), "suite": self.suite,
        }


@dataclass(frozen=True, slots=True)
class DecryptResult:
    """What the decrypt stage wrote and counted."""

    streams: tuple[StreamStats, ...]
    outputs: tuple[Path, ...]  # per raw file, -decrypted or -no-decrypt-need
    merged: Path
    packets: int
    warnings: tuple[str, ...]


@dataclass(slots=True)
class _Sender:
    """The keys one side may send with on one leg: (window start, crypto) per negotiation, newest last."""

    suite: str | None
    keys: list[tuple[int, int, CryptoAttribute]] = field(default_factory=list)  # (start_ns, end_ns, crypto)

    def candidates(self, ts_ns: int) -> list[CryptoAttribute]:
        """Keys in force at ts first (newest first), then the others: a rekey's switch time is not exact."""
        inside = [c for s, e, c in reversed(self.keys) if s <= ts_ns <= e]
        rest = [c for s, e, c in reversed(self.keys) if c not in inside]
        seen: list[CryptoAttribute] = []
        for c in inside + rest:
            if c not in seen:
                seen.append(c)
        return seen


@dataclass(slots=True)
class _Stream:
    stats: StreamStats
    sender: _Sender | None
    ctx: SrtpContext | None = None
    crypto: CryptoAttribute | None = None
    recent: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    gave_up: bool = False


def _routes(leg: Leg) -> dict[tuple[Endpoint, Endpoint], _Sender]:
    """(src, dst) endpoint pair → the sending side's keys, for RTP and RTCP, both directions."""
    senders: dict[tuple[str, Endpoint, Endpoint], _Sender] = {}
    routes: dict[tuple[Endpoint, Endpoint], _Sender] = {}
    for n in leg.negotiations:
        for role, me, other in (("peer", n.peer, n.host), ("host", n.host, n.peer)):
            for src, dst in ((me.rtp, other.rtp), (me.rtcp, other.rtcp)):
                sender = senders.setdefault((role, src, dst), _Sender(n.srtp_suite))
                if n.srtp_suite and me.crypto is not None:
                    sender.keys.append((n.start_ns, n.end_ns, me.crypto))
                    sender.suite = n.srtp_suite
                routes[(src, dst)] = sender
    return routes


def _frames(inputs: Sequence[FilteredInput]) -> Iterator[tuple[int, int, FilteredInput, int, bytes]]:
    """All filtered frames of the call in timestamp order across files (ties keep input order)."""
    def one(i: int, item: FilteredInput) -> Iterator[tuple[int, int, FilteredInput, int, bytes]]:
        with open_capture(item.path) as reader:
            for f in reader:
                yield f.ts_ns, i, item, f.linktype, f.data

    yield from heapq.merge(*(one(i, item) for i, item in enumerate(inputs)), key=lambda r: (r[0], r[1]))


def decrypt_call(
    plan: LegPlan, inputs: Sequence[FilteredInput], decrypted_dir: Path, merged: Path
) -> DecryptResult:
    """Decrypt every stream of the call; write per-raw-file outputs and the merged media_decrypted.pcap."""
    table = {leg.name: _routes(leg) for leg in plan.legs}

    def route(leg: str, src: Endpoint, dst: Endpoint) -> _Sender | None:
        return table.get(leg, {}).get((src, dst))

    return _run(route, inputs, decrypted_dir, merged)


def decrypt_capture(source: Path, crypto: CryptoAttribute, out: Path) -> DecryptResult:
    """`rtphelper decrypt`: every RTP/RTCP stream in one capture, all with the one key given by hand."""
    sender = _Sender(crypto.suite_info.name if crypto.supported else crypto.suite, [(0, 2**63, crypto)])
    item = FilteredInput("manual", Path(source), Path(source))
    return _run(lambda leg, src, dst: sender, [item], Path(out).parent, Path(out), per_file=False)


Route = Callable[[str, Endpoint, Endpoint], "_Sender | None"]


def _run(
    route: Route, inputs: Sequence[FilteredInput], decrypted_dir: Path, merged: Path, *, per_file: bool = True
) -> DecryptResult:
    linktypes = {_linktype(item.path) for item in inputs}
    out_linktype = linktypes.pop() if len(linktypes) == 1 else LINKTYPE_ETHERNET
    streams: dict[tuple[str, Endpoint, Endpoint, str, int], _Stream] = {}
    warnings: list[str] = []
    sources = list(dict.fromkeys(item.source for item in inputs))
    decrypted_dir.mkdir(parents=True, exist_ok=True)
    per_file_counts = {s: 0 for s in sources}
    total = 0
    with ExitStack() as stack:
        merged_tmp = stack.enter_context(atomic_output(merged, overwrite=True))
        merged_w = stack.enter_context(PcapWriter(merged_tmp, out_linktype, nanosecond=True))
        tmp_paths: dict[Path, Path] = {}
        writers: dict[Path, PcapWriter] = {}
        for src in sources if per_file else ():
            tmp = decrypted_dir / f".{src.stem}.{os.getpid()}.part"
            tmp_paths[src] = tmp
            writers[src] = stack.enter_context(PcapWriter(tmp, _linktype_for(inputs, src), nanosecond=True))
        try:
            for ts, _, item, linktype, data in _frames(inputs):
                out = _process(ts, item, linktype, data, route, streams, warnings)
                if out is None:
                    continue
                data, did_decrypt = out
                total += 1
                per_file_counts[item.source] += did_decrypt
                if per_file:
                    writers[item.source].write(ts, data)
                merged_w.write(ts, data if linktype == out_linktype else _reframe(linktype, data))
        except BaseException:
            for tmp in tmp_paths.values():
                tmp.unlink(missing_ok=True)
            raise
    outputs = []
    for src in sources if per_file else ():
        writers[src].close()
        suffix = DECRYPTED_SUFFIX if per_file_counts[src] else NO_DECRYPT_SUFFIX
        final = decrypted_dir / f"{src.stem}{suffix}"
        os.replace(tmp_paths[src], final)
        outputs.append(final)
    stats = tuple(s.stats for s in streams.values())
    for s in stats:
        if s.auth_failed:
            warnings.append(
                f"{s.leg} {s.kind} {s.src} → {s.dst} ssrc 0x{s.ssrc:08x}: {s.auth_failed} of {s.packets} packets failed "
                "SRTP authentication (wrong or missing key?); written undecrypted"
            )
    for w in warnings:
        log.warning(w)
    return DecryptResult(stats, tuple(outputs), merged, total, tuple(dict.fromkeys(warnings)))


def _linktype(path: Path) -> int:
    with open_capture(path) as reader:
        return reader.linktype


def _linktype_for(inputs: Sequence[FilteredInput], source: Path) -> int:
    types = {_linktype(i.path) for i in inputs if i.source == source}
    return types.pop() if len(types) == 1 else LINKTYPE_ETHERNET


def _reframe(linktype: int, data: bytes) -> bytes:
    l3 = link_payload(linktype, data)
    return frame(LINKTYPE_ETHERNET, l3) if l3 is not None else data


def _process(
    ts: int,
    item: FilteredInput,
    linktype: int,
    data: bytes,
    route: Route,
    streams: dict[tuple[str, Endpoint, Endpoint, str, int], _Stream],
    warnings: list[str],
) -> tuple[bytes, int] | None:
    """One frame → (frame to write, 1 if decrypted else 0), or None to drop it (a duplicate)."""
    l3 = link_payload(linktype, data)
    ip = parse_ip(l3) if l3 is not None else None
    udp = parse_udp(ip) if ip is not None else None
    if udp is None:
        return data, 0
    payload = udp.payload
    kind = classify(payload)
    if kind is None:
        return data, 0
    src, dst = Endpoint(udp.src, udp.sport), Endpoint(udp.dst, udp.dport)
    ssrc = int.from_bytes(payload[8:12] if kind == "rtp" else payload[4:8], "big")
    key = (item.leg, src, dst, kind, ssrc)
    stream = streams.get(key)
    if stream is None:
        sender = route(item.leg, src, dst)
        stats = StreamStats(item.leg, str(src), str(dst), kind, ssrc, suite=sender.suite if sender else None,
                            first_ns=ts, last_ns=ts)
        stream = streams[key] = _Stream(stats, sender)
    stats = stream.stats
    if payload in stream.recent:
        stats.duplicates += 1
        return None
    stream.recent[payload] = None
    if len(stream.recent) > DUPLICATE_MEMORY:
        stream.recent.popitem(last=False)
    stats.packets += 1
    if ts - stats.last_ns > stats.max_gap_ns:
        stats.max_gap_ns = ts - stats.last_ns
    stats.last_ns = ts
    sender = stream.sender
    if sender is None or not sender.suite or not sender.keys:
        _track_seq(stats, payload, 0)
        return data, 0
    if kind == "rtcp" and looks_like_clear_rtcp(payload):
        stats.clear += 1
        return data, 0
    plain = _unprotect(stream, kind, payload, ts, warnings)
    if plain is None:
        _track_seq(stats, payload, stream.ctx.roc if stream.ctx else 0)
        return data, 0
    stats.decrypted += 1
    if kind == "rtp":
        _track_seq(stats, plain, stream.ctx.roc if stream.ctx else 0)
    return replace_udp_payload(linktype, data, plain), 1


def _unprotect(stream: _Stream, kind: str, payload: bytes, ts: int, warnings: list[str]) -> bytes | None:
    """Decrypt with the stream's context; on failure try the sender's other keys (rekey), else count it."""
    stats = stream.stats
    if stream.ctx is not None:
        try:
            return stream.ctx.unprotect_rtp(payload) if kind == "rtp" else stream.ctx.unprotect_rtcp(payload)
        except SrtpReplayError:
            stats.duplicates += 1
            return None
        except SrtpAuthError:
            pass
        except SrtpError as exc:
            warnings.append(f"{stats.leg} {stats.src} → {stats.dst}: {exc}")
            stats.auth_failed += 1
            return None
    assert stream.sender is not None
    for crypto in stream.sender.candidates(ts):
        if crypto is stream.crypto and stream.ctx is not None:
            continue
        ctx = _context(stream, crypto, kind, payload, warnings)
        if ctx is None:
            continue
        try:
            plain = ctx.unprotect_rtp(payload) if kind == "rtp" else ctx.unprotect_rtcp(payload)
        except SrtpError:
            continue
        stream.ctx, stream.crypto = ctx, crypto
        if kind == "rtp" and stats.roc_start is None:
            stats.roc_start = ctx.roc
        return plain
    stats.auth_failed += 1
    return None


def _context(stream: _Stream, crypto: CryptoAttribute, kind: str, payload: bytes, warnings: list[str]) -> SrtpContext | None:
    """A receive context for this key, with the ROC guessed from the packet for a capture that starts mid-call."""
    stats = stream.stats
    suite = crypto.suite_info.name if crypto.supported else crypto.suite
    if suite not in SUPPORTED_SUITES:
        if not stream.gave_up:
            warnings.append(f"{stats.leg} {stats.src} → {stats.dst}: SRTP suite {crypto.suite} is not supported; written undecrypted")
            stream.gave_up = True
        return None
    key = crypto.keys[0]
    mki = key.mki_length or 0
    try:
        ctx = SrtpContext(suite, key.master_key, key.master_salt, stats.ssrc, mki_length=mki)
        if kind == "rtp":
            roc = guess_roc(suite, key.master_key, key.master_salt, stats.ssrc, payload, max_roc=MAX_ROC_GUESS,
                            mki_length=mki)
            if roc is None:
                return None
            ctx.set_roc(roc)
        return ctx
    except SrtpError as exc:
        warnings.append(f"{stats.leg} {stats.src} → {stats.dst}: {exc}")
        return None


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
