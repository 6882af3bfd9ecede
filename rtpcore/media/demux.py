"""Cut one call's legs out of raw media captures: one libpcap pass per file, Python only for the call's packets."""
from __future__ import annotations

import contextlib
import errno
import secrets
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rtpcore.errors import BpfBuildError, InputError, PcapError, TruncatedCaptureError
from rtpcore.fsutil import atomic_output
from rtpcore.media.bpf import VLAN_LINKTYPES, Pair, leg_filter, negotiation_pairs, relay_endpoints
from rtpcore.media.candidates import CandidateCollector, CandidateFlow, endpoint_text
from rtpcore.parallel import map_in_processes
from rtpcore.pcap import libpcap
from rtpcore.pcap.index import copy_ranges, ranges_stream
from rtpcore.pcap.layers import (
    ETH_HEADER_LEN,
    SLL2_HEADER_LEN,
    SLL_HEADER_LEN,
    VLAN_ETHERTYPES,
    link_payload,
    parse_ip,
    parse_udp,
)
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.plan import LegPlan

__all__ = [
    "CAPTURE_SUFFIXES",
    "DEFAULT_MIN_PACKETS",
    "FileResult",
    "LegFile",
    "filter_raw_file",
    "filter_raw_files",
    "filter_for_file",
    "leg_filter",
    "media_files",
    "no_match_message",
    "output_name",
    "time_span",
]

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
DEFAULT_MIN_PACKETS = 10  # the seed's rule: a leg with this many packets or fewer in a file is noise
FILTERED_SUFFIX = "-filtered.pcap"
_MATCHED_TEMP = ".{stem}.{token}.matched.pcap"
_RANGES_TEMP = ".{stem}.{token}.ranges.pcap"   # the call's byte ranges of an indexed chunk, for libpcap
CANDIDATES_NAME = ".{stem}.candidates.pcap"  # removed by rtpcore.media.latch.adopt once decided


@dataclass(frozen=True, slots=True)
class LegFile:
    """One leg's share of one raw file; output is None when the leg had too few packets to keep."""

    leg: str
    output: Path | None
    packets: int
    kept: bool


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one raw file gave: BPF matches, per-leg outputs, a read error, and when the call's packets were."""

    source: Path
    matched: int  # packets the BPF let through (before the time windows)
    legs: tuple[LegFile, ...]
    error: str | None
    first_ns: int | None  # first/last packet routed to a leg
    last_ns: int | None
    # For the cross-file decisions of rtpcore.media.latch: exact flows routed, and the candidate packets
    # (learned peers, late RTCP) with their per-flow summary.
    exact_flows: tuple[tuple[str, str, str, int], ...] = ()   # (leg, src, dst, packets)
    candidates: tuple[CandidateFlow, ...] = ()
    candidates_file: Path | None = None

    @property
    def kept_packets(self) -> int:
        return sum(leg.packets for leg in self.legs if leg.kept)


# -- inputs ------------------------------------------------------------------------------------


def _is_compressed(path: Path) -> bool:
    return path.suffix.lower() in COMPRESSED_SUFFIXES


def media_files(paths: Sequence[Path]) -> list[Path]:
    """Expand folders (not recursively) to their capture files; everything sorted by file name."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(f"{path}: not found")
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file())
            captures = [p for p in entries if p.suffix.lower() in CAPTURE_SUFFIXES]
            if not captures:
                compressed = [p.name for p in entries if _is_compressed(p)]
                hint = ""
                if compressed:
                    hint = f"; compressed captures are not supported ({compressed[0]}...): decompress them first"
                raise InputError(f"{path}: no capture files (*.pcap, *.pcapng) in this folder{hint}")
            found.update(dict.fromkeys(captures))
        elif _is_compressed(path):
            raise InputError(f"{path}: compressed captures are not supported: decompress it first (e.g. gunzip)")
        else:
            found.setdefault(path, None)
    return sorted(found, key=lambda p: (p.name, str(p)))


def output_name(source: Path, leg: str) -> str:
    """<source stem>-<leg>-filtered.pcap: the rolling chunk's name stays visible in the outputs."""
    return f"{Path(source).stem}-{leg}{FILTERED_SUFFIX}"


# -- routing -----------------------------------------------------------------------------------

_Window = tuple[str, int, int]  # leg name, start_ns, end_ns


def _routing_table(plan: LegPlan) -> dict[Pair, list[_Window]]:
    """Exact endpoint pair → the legs' negotiation windows that may carry it."""
    table: dict[Pair, list[_Window]] = {}
    for leg in plan.legs:
        for negotiation in leg.negotiations:
            window = (leg.name, negotiation.start_ns, negotiation.end_ns)
            for pair in dict.fromkeys(negotiation_pairs(negotiation)):
                table.setdefault(pair, []).append(window)
    return table


# The fast path: IPv4 without options carrying UDP, on these link types, routed by its raw address+port bytes.
# link type → (IP header offset, offset of the ethertype that must say IPv4, or -1 when the link has none)
IPV4_FAST_LINKS: dict[int, tuple[int, int]] = {
    LINKTYPE_ETHERNET: (ETH_HEADER_LEN, ETH_HEADER_LEN - 2),
    LINKTYPE_LINUX_SLL: (SLL_HEADER_LEN, SLL_HEADER_LEN - 2),
    LINKTYPE_LINUX_SLL2: (SLL2_HEADER_LEN, 0),
    LINKTYPE_RAW: (0, -1),
    LINKTYPE_IPV4: (0, -1),
}
ETHERTYPE_IPV4_BYTES = b"\x08\x00"
# IPv4 ver/IHL+TOS, total length, flags+offset, TTL+protocol; addresses+ports; UDP length.
_IPV4_UDP = struct.Struct("!HH2xHH2x12sH")
IPV4_NO_OPTIONS = 0x45
IPV4_HEADER_LEN = 20
IPV4_FRAGMENT_BITS = 0x3FFF
IPPROTO_UDP = 17
UDP_HEADER_LEN = 8

_Record = tuple[int, int, bytes, int]  # CaptureReader.records(): ts_ns, link type, data, orig_len


def _raw_key(pair: Pair) -> bytes | None:
    """The pair as IPv4 header bytes 12..20 + UDP ports, or None for IPv6 (or a non-canonical address text)."""
    src, sport, dst, dport = pair
    try:
        a, b = socket.inet_aton(src), socket.inet_aton(dst)
    except OSError:
        return None
    if socket.inet_ntoa(a) != src or socket.inet_ntoa(b) != dst:
        return None  # parse_ip never yields such text, so the slow path could not match it either
    return a + b + struct.pack("!HH", sport, dport)


@dataclass(slots=True)
class _Routed:
    """One file's routing: per-leg records, exact flow counts, and the candidates for the cross-file decision."""

    legs: dict[str, list[_Record]]
    flows: dict[tuple[str, Pair], int]
    candidates: CandidateCollector


def _route(plan: LegPlan, records: Iterable[_Record]) -> _Routed:
    """The records that belong to a leg: exact pair AND inside that negotiation's time window.

    Plain IPv4/UDP is looked up by its raw address+port bytes; anything else (VLAN, IPv6, options,
    fragments, odd lengths) is parsed in full, which routes the same packets. What misses (another peer on
    the media host's endpoint, RTCP after the window) is parsed and offered to the candidate collector.
    """
    table = _routing_table(plan)
    raw_table = {key: windows for pair, windows in table.items() if (key := _raw_key(pair)) is not None}
    pair_of_raw = {key: pair for pair in table if (key := _raw_key(pair)) is not None}
    routed: dict[str, list[_Record]] = {leg.name: [] for leg in plan.legs}
    counts: dict[tuple[str, object], int] = {}
    collector = CandidateCollector(plan, table)
    unpack, fast_link = _IPV4_UDP.unpack_from, IPV4_FAST_LINKS.get
    for record in records:
        ts, linktype, data, _ = record
        windows = None
        link = fast_link(linktype)
        parsed = False
        udp = None
        flow: object = None
        if link is not None:
            o, e = link
            if len(data) >= o + _IPV4_UDP.size and (e < 0 or data[e : e + 2] == ETHERTYPE_IPV4_BYTES):
                w0, total, frag, w4, raw, udp_len = unpack(data, o)
                if (
                    w0 >> 8 == IPV4_NO_OPTIONS and w4 & 0xFF == IPPROTO_UDP and not frag & IPV4_FRAGMENT_BITS
                    and IPV4_HEADER_LEN <= total <= len(data) - o and UDP_HEADER_LEN <= udp_len <= total - IPV4_HEADER_LEN
                ):
                    windows = raw_table.get(raw)
                    flow = raw
                    parsed = True
        if not parsed:
            l3 = link_payload(linktype, data)
            ip = parse_ip(l3) if l3 else None
            udp = parse_udp(ip) if ip else None
            if udp is None:
                continue
            flow = (udp.src, udp.sport, udp.dst, udp.dport)
            windows = table.get(flow)
        if windows:
            for name, start, end in windows:
                if start <= ts <= end:
                    routed[name].append(record)
                    counted = (name, flow)
                    counts[counted] = counts.get(counted, 0) + 1
                    break
            else:
                windows = None
            if windows is not None:
                continue
        if udp is None:
            l3 = link_payload(linktype, data)
            ip = parse_ip(l3) if l3 else None
            udp = parse_udp(ip) if ip else None
            if udp is None:
                continue
        collector.offer(record, udp)
    flows = {(name, pair_of_raw[f] if isinstance(f, bytes) else f): n for (name, f), n in counts.items()}
    return _Routed(routed, flows, collector)  # type: ignore[arg-type]  # flow is a Pair here


def _read_routed(plan: LegPlan, path: Path) -> tuple[_Routed, int, str | None]:
    """Route every record of a capture, streamed; (routed, linktype, error of a capture that ends badly)."""
    errors: list[str] = []
    with open_capture(path) as reader:

        def records() -> Iterator[_Record]:
            try:
                yield from reader.records()
            except TruncatedCaptureError as exc:  # keep what came before the damage
                errors.append(str(exc))

        return _route(plan, records()), reader.linktype, next(iter(errors), None)


# -- one file ----------------------------------------------------------------------------------


def _write_leg(records: list[_Record], linktype: int, output: Path) -> None:
    """A leg's packets as ns pcap with the source's link type, atomically."""
    with atomic_output(output, overwrite=True) as temp, PcapWriter(temp, linktype, nanosecond=True) as writer:
        writer.write_many((ts, data, orig_len) for ts, _, data, orig_len in records)


VLAN_SAMPLE_FRAMES = 256


def filter_for_file(plan: LegPlan, source: Path) -> str:
    """The leg filter for this file's link type; the VLAN-nested form only when its first frames are tagged."""
    linktype = libpcap.linktype_of(source)
    return leg_filter(plan, linktype, vlan_tags=linktype in VLAN_LINKTYPES and _starts_tagged(source))


def _starts_tagged(source: Path) -> bool:
    """True when any of the first frames is 802.1Q/QinQ-tagged (a trunk or SPAN capture)."""
    try:
        with open_capture(source) as reader:
            for ts, linktype, data, _ in islice(reader.records(), VLAN_SAMPLE_FRAMES):
                if linktype in VLAN_LINKTYPES and data[12:14] in _VLAN_TAGS:
                    return True
    except PcapError:
        return True  # unreadable start: the exact nested form, libpcap will report the file
    return False


_VLAN_TAGS = frozenset(t.to_bytes(2, "big") for t in VLAN_ETHERTYPES)


def filter_raw_file(
    plan: LegPlan, source: Path, filtered_dir: Path, *, min_packets: int = DEFAULT_MIN_PACKETS,
    ranges: tuple[tuple[int, int], ...] | None = None,
) -> FileResult:
    """BPF in C over the file (or only its record-aligned byte `ranges`, from its index), then exact routing of
    the few survivors; errors are returned, not raised."""
    source, filtered_dir = Path(source), Path(filtered_dir)
    filtered_dir.mkdir(parents=True, exist_ok=True)
    empty = tuple(LegFile(leg.name, None, 0, False) for leg in plan.legs)
    token = secrets.token_hex(4)
    temp = filtered_dir / _MATCHED_TEMP.format(stem=source.stem, token=token)
    part = filtered_dir / _RANGES_TEMP.format(stem=source.stem, token=token)
    try:
        read_from = source
        if libpcap.available():
            expression = filter_for_file(plan, source)  # from the file's own first frames, as a full scan would
            try:
                with contextlib.nullcontext(source) if ranges is None else ranges_stream(source, ranges) as read_from:
                    result = libpcap.filter_file(read_from, temp, expression, scratch=True)
            except libpcap.LibpcapError as exc:
                if "does not compile" not in str(exc) and "rejected" not in str(exc):
                    raise
                raise BpfBuildError(
                    f"rtphelper's own media filter for call {plan.call_id} failed, not the capture {source.name}: "
                    f"{exc}; media host endpoints {', '.join(f'{h}:{p}' for h, p in relay_endpoints(plan))} — "
                    "please report this with the SIP pcap"
                ) from None
            matched, error = result.packets_matched, result.src_error
            routed, linktype, read_error = _read_routed(plan, temp)
            error = error or read_error
        else:  # no libpcap here: the pure-Python reader does the whole job, slower but the same result
            if ranges is not None:
                copy_ranges(source, ranges, part)
                read_from = part
            routed, linktype, error = _read_routed(plan, read_from)
            matched = sum(map(len, routed.legs.values())) + len(routed.candidates.records)
        if error is not None and read_from != source:
            error = error.replace(str(read_from), f"{source} (the call's byte ranges)")
    except (PcapError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise  # our output disk is full: the run's failure, not this raw file's
        return FileResult(source, 0, empty, _error_text(source, exc), None, None)
    finally:
        temp.unlink(missing_ok=True)
        part.unlink(missing_ok=True)

    legs: list[LegFile] = []
    times: list[int] = []
    for name, frames in routed.legs.items():
        kept = len(frames) > min_packets
        output = filtered_dir / output_name(source, name) if kept else None
        if output is not None:
            _write_leg(frames, linktype, output)
        legs.append(LegFile(name, output, len(frames), kept))
        times += (record[0] for record in frames)
    first, last = (min(times), max(times)) if times else (None, None)
    candidates_file = None
    if routed.candidates.records:
        candidates_file = filtered_dir / CANDIDATES_NAME.format(stem=source.stem)
        _write_leg(routed.candidates.records, linktype, candidates_file)
    exact = tuple((name, endpoint_text(p[0], p[1]), endpoint_text(p[2], p[3]), n) for (name, p), n in routed.flows.items())
    return FileResult(source, matched, tuple(legs), error, first, last, exact, routed.candidates.flows(),
                      candidates_file)


def _error_text(source: Path, exc: Exception) -> str:
    """The error's own text, with the file named when the message does not already name it."""
    text = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror or exc}"
    return text if str(source) in text else f"{source}: {text}"


# -- many files --------------------------------------------------------------------------------


def check_names(sources: Sequence[Path]) -> None:
    """Two sources with one stem would overwrite each other's outputs."""
    stems: dict[str, Path] = {}
    for source in sources:
        other = stems.setdefault(Path(source).stem, Path(source))
        if other != Path(source):
            raise InputError(
                f"{other} and {source} share the name {Path(source).stem!r}, so their filtered files would "
                "collide; rename one"
            )


def filter_raw_files(
    plan: LegPlan,
    sources: Sequence[Path],
    filtered_dir: Path,
    *,
    min_packets: int = DEFAULT_MIN_PACKETS,
    workers: int | None = None,
) -> list[FileResult]:
    """filter_raw_file over many files, one process each at a time (the pipeline's own pool); results in input order."""
    sources = [Path(s) for s in sources]
    check_names(sources)
    return map_in_processes(_filter_source, sources, plan, filtered_dir, min_packets, workers=workers)


def _filter_source(source: Path, plan: LegPlan, filtered_dir: Path, min_packets: int) -> FileResult:
    """filter_raw_file with the source first, as map_in_processes passes it."""
    return filter_raw_file(plan, source, filtered_dir, min_packets=min_packets)


# -- when nothing matched ----------------------------------------------------------------------


def time_span(path: Path) -> tuple[int, int] | None:
    """Earliest and latest timestamp of a capture, streamed; None without a readable packet (PcapError: no capture)."""
    first = last = None
    with open_capture(path) as reader:
        try:
            for frame in reader:
                ts = frame.ts_ns
                if first is None or last is None:
                    first = last = ts
                elif ts < first:
                    first = ts
                elif ts > last:
                    last = ts
        except TruncatedCaptureError:
            pass  # the span of what is readable is still the useful answer
    return None if first is None or last is None else (first, last)


def _utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _span_text(start_ns: int, end_ns: int) -> str:
    return f"{_utc(start_ns)} – {_utc(end_ns)} UTC"


def no_match_message(plan: LegPlan, results: Sequence[FileResult]) -> str:
    """Why nothing matched, with what a support engineer needs to see: files, their times, the call, its legs."""
    lines = [f"no media packet of call {plan.call_id} found in {len(results)} media file(s):"]
    for result in results:
        if result.error is not None and result.matched == 0:
            lines.append(f"  {result.source.name}: unreadable: {result.error}")
            continue
        try:
            span = time_span(result.source)
        except PcapError as exc:
            span, note = None, f" ({exc})"
        else:
            note = f" ({result.error})" if result.error else ""
        when = _span_text(*span) if span else "no packets"
        lines.append(f"  {result.source.name}: {when}{note}")
    lines.append(f"the call's SIP: {_span_text(plan.start_ns, plan.end_ns)}")
    for leg in plan.legs:
        windows = ", ".join(
            f"{n.peer.rtp} <-> {n.host.rtp} (RTCP {n.peer.rtcp} <-> {n.host.rtcp}) "
            f"{_span_text(n.start_ns, n.end_ns)}"
            for n in leg.negotiations
        )
        lines.append(f"  {leg.name} leg: {windows}")
    lines.append(
        "check that the media files were captured on this call's media host and cover the call's time "
        "(clock offset, wrong chunk, wrong host)"
    )
    return "\n".join(lines)
