"""Read only what the call touched: pick raw chunks (and byte ranges in them) by the call's time windows.

Every raw file gets a decision with its reason, read or skipped, so a wrong skip is visible in the report:
- an indexed chunk (sidecar `<chunk>.idx.json`): the byte range from the seek point before the window to the
  one after it, or skipped when its first..last timestamps miss every window;
- an imported chunk without index: bounded by its own first timestamp and the next chunk's of the same host
  (rolling chunks follow each other in time); when that span meets a window it is indexed on first use
  (cached next to it when the folder is writable) and read from the seek point;
- a corrupt or stale index (the chunk was repaired or rewritten): a warning, the index is rebuilt by reading
  the chunk; anything not indexable (pcapng, foreign files): read in full;
- with the call's endpoints (RTPHELPER_FLOW_SUMMARY): a chunk whose flow summary (`<chunk>.flows.json`, built
  by an earlier correlation over the ranges it read) covers the ranges chosen by time and shows no packet of a
  media host endpoint of the call in the call's windows is skipped, saying so; a chunk without one is read
  and summarized by the filter step (`flows` names where the summary goes).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rtpcore.errors import PcapError
from rtpcore.media.candidates import RTCP_TAIL_NS
from rtpcore.pcap.flows import FLOWS_SUFFIX, FlowProblem, FlowSummary, flows_path, local_identity, read_summary, subtract_spans
from rtpcore.pcap.index import FILE_HEADER_LEN, ChunkIndex, IndexProblem, first_timestamp, load_index, read_index
from rtpcore.pcap.rolling import parse_chunk_name
from rtpcore.plan import LegPlan

__all__ = [
    "DEFAULT_SELECT_MARGIN_NS",
    "ChunkChoice",
    "MediaSelection",
    "bounded_choice",
    "call_windows",
    "flow_choice",
    "index_choice",
    "merge_spans",
    "next_chunks",
    "select_files",
]

NS_PER_S = 10**9
DEFAULT_SELECT_MARGIN_NS = 10 * NS_PER_S   # RTPHELPER_SELECT_MARGIN_SECONDS: clock offset between SIP and media hosts
UNKNOWN_TS = -1                            # a chunk whose first timestamp could not be read
BOUND_SLACK_NS = NS_PER_S                  # a record may be a little later than the next chunk's first one
READ_INDEX = "index"
READ_BOUNDED = "bounded"
READ_FULL = "full"
READ_SKIPPED = "skipped"
FLOW_SKIP = "flow summary: no packet of the call's endpoints"

Span = tuple[int, int]
Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ChunkChoice:
    """One raw file's decision: what to read (ranges None = the whole file) or why it is skipped."""

    source: Path
    size: int
    ranges: tuple[Span, ...] | None
    how: str                      # index | bounded | full | skipped
    why: str
    warning: str | None = None
    origin: str | None = None     # the S3 object a range-read or download came from
    fetched: bool = False         # source already holds only `ranges` (range-read from S3): read it whole
    flows: str | None = None      # where the filter step writes this chunk's flow summary (path, or S3 key)
    identity: tuple[tuple[str, Any], ...] = ()   # what the chunk is (size, mtime or ETag) for that summary
    deferred: bool = False        # an S3 chunk whose ranges the filter task range-reads itself (origin, identity)

    @property
    def spans(self) -> tuple[Span, ...]:
        """The chunk's byte ranges this choice reads (all records for a whole file)."""
        return self.ranges if self.ranges is not None else ((FILE_HEADER_LEN, self.size),)

    @property
    def read_ranges(self) -> tuple[Span, ...] | None:
        """What the demux reads of source: None for all of it (also when the ranges are every record: libpcap then
        reads the file itself, 2x faster than through the ranges pipe)."""
        if self.fetched or self.ranges == ((FILE_HEADER_LEN, self.size),):
            return None
        return self.ranges

    @property
    def read(self) -> bool:
        return self.how != READ_SKIPPED

    @property
    def bytes_read(self) -> int:
        if not self.read:
            return 0
        return self.size if self.ranges is None else sum(e - b for b, e in self.ranges)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"source": self.origin or str(self.source), "how": self.how, "why": self.why,
                               "bytes": self.size, "bytes_read": self.bytes_read}
        if self.ranges is not None and self.read:
            doc["ranges"] = [list(r) for r in self.ranges]
        if self.warning:
            doc["warning"] = self.warning
        if self.flows and self.read:
            doc["flow_summary"] = self.flows   # where this read's flow summary is cached (a path or an S3 key)
        return doc


@dataclass(frozen=True, slots=True)
class MediaSelection:
    """Every raw file's decision plus the call's windows; what the report's read/skipped section shows."""

    windows: tuple[Span, ...]
    choices: tuple[ChunkChoice, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def reads(self) -> list[ChunkChoice]:
        return [c for c in self.choices if c.read]

    @property
    def bytes_read(self) -> int:
        return sum(c.bytes_read for c in self.choices)

    @property
    def bytes_total(self) -> int:
        return sum(c.size for c in self.choices)

    @property
    def warnings(self) -> list[str]:
        return [c.warning for c in self.choices if c.warning]

    def nothing_read_message(self, call_id: str) -> str:
        """Why no media was read: every file and the reason it was skipped, and how to read everything."""
        spans = ", ".join(f"{_utc(a)}–{_utc(b)}" for a, b in self.windows)
        lines = [f"no raw media file covers call {call_id}'s time ({spans} UTC with margins):"]
        lines += [f"  {c.origin or c.source}: {c.why}" for c in self.choices]
        lines.append("check the media host's clock and that the capture ran during the call; "
                     "RTPHELPER_MEDIA_SELECT=false reads every file in full")
        return "\n".join(lines + self._flow_hint())

    def _flow_hint(self) -> list[str]:
        """How to overrule flow summaries, when one of them made a skip (a wrong summary must be undoable)."""
        if not any(c.why.startswith(FLOW_SKIP) for c in self.choices):
            return []
        return [f"skips by flow summary look wrong? delete the chunk's {FLOWS_SUFFIX} or set "
                "RTPHELPER_FLOW_SUMMARY=false to read by time only"]

    def lines(self) -> list[str]:
        """The report's read/skipped section: one line per file, read ones first."""
        out = [f"read {len(self.reads)} of {len(self.choices)} raw file(s), {self.bytes_read:,} of "
               f"{self.bytes_total:,} bytes"]
        for c in sorted(self.choices, key=lambda c: (not c.read, str(c.origin or c.source))):
            name = c.origin or c.source.name
            out.append(f"{'read' if c.read else 'skipped'} {name}: {c.why}" + (f" — WARNING: {c.warning}"
                                                                              if c.warning else ""))
        return out + self._flow_hint()

    def to_json(self) -> dict[str, Any]:
        return {"windows": [list(w) for w in self.windows], "bytes_read": self.bytes_read,
                "bytes_total": self.bytes_total, "notes": list(self.notes),
                "files": [c.to_json() for c in self.choices]}


def merge_spans(spans: Sequence[Span]) -> tuple[Span, ...]:
    """Sorted, overlapping or touching spans joined."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def call_windows(plan: LegPlan, margin_ns: int = DEFAULT_SELECT_MARGIN_NS) -> tuple[Span, ...]:
    """The call's time: its SIP (first INVITE..last BYE of every dialog) and each negotiation's media window with
    its late-RTCP tail, widened by margin_ns; the demux never keeps a packet outside these."""
    spans = [(plan.start_ns, plan.end_ns)]
    spans += [(n.start_ns, n.end_ns + RTCP_TAIL_NS) for leg in plan.legs for n in leg.negotiations]
    return merge_spans([(start - margin_ns, end + margin_ns) for start, end in spans])


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS_PER_S, tz=timezone.utc).strftime("%H:%M:%S")


def index_choice(source: Path, index: ChunkIndex, windows: Sequence[Span], how: str, why: str,
                  warning: str | None) -> ChunkChoice:
    """Read the seek-point ranges covering the windows, or skip when the index shows no packet in them."""
    ranges = merge_spans([r for w in windows if (r := index.byte_range(*w)) is not None])
    if not ranges:
        span = "no packets" if index.first_ns is None or index.last_ns is None else \
            f"packets {_utc(index.first_ns)}–{_utc(index.last_ns)} UTC"
        return ChunkChoice(source, index.bytes, (), READ_SKIPPED, f"{why}: {span}, outside the call's windows",
                           warning)
    read = sum(e - b for b, e in ranges)
    return ChunkChoice(source, index.bytes, ranges, how,
                       f"{why}: {read} of {index.bytes} bytes from the seek points around the call", warning)


def bounded_choice(source: Path, size: int, first: int | None, next_first: int | None,
                   windows: Sequence[Span]) -> ChunkChoice | None:
    """An unindexed rolling chunk bounded by its and the next chunk's first packet; None when it may hold the call."""
    if first == UNKNOWN_TS:
        return None  # its start cannot be read cheaply: index it
    if first is None:
        return ChunkChoice(source, size, (), READ_SKIPPED, "no index; the chunk holds no packet")
    upper = None if next_first is None or next_first == UNKNOWN_TS else next_first + BOUND_SLACK_NS
    if upper is not None and upper < first:
        return None  # the host's chunks are not in time order: no bound, index it
    overlaps = any(first <= end and (upper is None or start <= upper) for start, end in windows)
    if overlaps:
        return None
    until = f"{_utc(upper)} (the next chunk's first packet)" if upper is not None else "?"
    return ChunkChoice(source, size, (), READ_SKIPPED,
                       f"no index; bounded {_utc(first)} – {until} UTC, outside the call's windows")


def _one(source: Path, next_first: int | None, windows: Sequence[Span], cache: bool, series: bool,
         first: int | None) -> ChunkChoice:
    """The decision for one file (next_first: the first timestamp of the next chunk of its host, when known)."""
    size = source.stat().st_size
    warning: str | None = None
    try:
        index = read_index(source)
    except IndexProblem as exc:
        index, warning = None, f"{exc}"
    else:
        if index is not None:
            return index_choice(source, index, windows, READ_INDEX, "indexed", None)
    if warning is None and not series:
        return ChunkChoice(source, size, None, READ_FULL, "not a rolling chunk and no index: read in full")
    if warning is None:
        bounded = bounded_choice(source, size, first, next_first, windows)
        if bounded is not None:
            return bounded
    try:
        index, note = load_index(source, cache=cache)
    except PcapError as exc:
        return ChunkChoice(source, size, None, READ_FULL, f"not indexable ({exc}); read in full", warning)
    if warning is not None:
        warning = f"{warning}; rebuilt by reading the whole chunk"
        return index_choice(source, index, windows, READ_INDEX, "index rebuilt", warning)
    return index_choice(source, index, windows, READ_BOUNDED if series else READ_INDEX,
                         note or "indexed on first use", None)


def flow_choice(choice: ChunkChoice, summary: FlowSummary | None, problem: str | None,
                endpoints: Iterable[Endpoint], windows: Sequence[Span], target: str,
                identity: dict[str, Any]) -> ChunkChoice:
    """The time choice narrowed by the chunk's flow summary: skipped when the summary covers the chosen ranges and
    holds no packet of the call's media host endpoints (any peer) in the windows; only the ranges it does not
    cover yet when those it covers hold none; otherwise as chosen. Bytes not summarized yet get summarized."""
    if not choice.read:
        return choice
    ident = tuple(sorted(identity.items()))
    warning = "; ".join(w for w in (choice.warning, problem and f"{problem}; rebuilt from the bytes read") if w)
    if summary is None:
        why = choice.why + ("" if problem else "; no flow summary yet: built from the bytes read")
        return replace(choice, why=why, warning=warning or None, flows=target, identity=ident)
    wanted = list(endpoints)
    hits = [(k, v) for k, v in summary.touching(wanted) if any(v[1] <= end and v[2] >= start for start, end in windows)]
    rest = subtract_spans(choice.spans, summary.covered)
    if hits:
        packets = sum(v[0] for _, v in hits)
        why = f"{choice.why}; flow summary: {packets} packet(s) of the call's endpoints in {len(hits)} flow(s)"
        return replace(choice, why=why + ("; summary extended to these bytes" if rest else ""),
                       warning=warning or None, flows=target if rest else None, identity=ident)
    shown = ", ".join(f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}" for ip, port in wanted[:4])
    shown += f" and {len(wanted) - 4} more" if len(wanted) > 4 else ""
    ruled_out = choice.bytes_read - sum(e - b for b, e in rest)
    none = (f"{FLOW_SKIP} ({shown}) in its windows among {len(summary.flows)} "
            f"flow(s) of {ruled_out} summarized bytes")
    if rest:
        return replace(choice, ranges=rest, warning=warning or None, flows=target, identity=ident,
                       why=f"{choice.why}; {none}: reading only the {sum(e - b for b, e in rest)} bytes not "
                           "summarized yet")
    return replace(choice, ranges=(), how=READ_SKIPPED, warning=warning or None, why=f"{none} chosen by time")


def _local_flows(choice: ChunkChoice, endpoints: Iterable[Endpoint], windows: Sequence[Span]) -> ChunkChoice:
    """flow_choice for a local chunk with the summary cached beside it (chunks read by seek points only; none in a
    read-only folder, where it could not be cached and would cost a pass every time)."""
    if not choice.read or choice.ranges is None or not os.access(choice.source.parent, os.W_OK):
        return choice
    target = flows_path(choice.source)
    identity = local_identity(choice.source)
    try:
        summary, problem = read_summary(target, choice.source.name, identity), None
    except FlowProblem as exc:
        summary, problem = None, str(exc)
    return flow_choice(choice, summary, problem, endpoints, windows, str(target), identity)


def select_files(files: Sequence[Path], windows: Sequence[Span], *, cache: bool = True,
                 endpoints: Iterable[Endpoint] | None = None) -> list[ChunkChoice]:
    """A decision for every file, in the given order; rolling chunks of one host bound each other in time; with
    the call's media host endpoints, flow summaries narrow it further (None: summaries off)."""
    wanted = list(endpoints) if endpoints is not None else None
    following = next_chunks(files)
    firsts: dict[Path, int | None] = {}
    choices = []
    for path in map(Path, files):
        in_series = path in following
        first = next_first = None
        if in_series:
            first = _first(path, firsts)
            following_chunk = following[path]
            next_first = _first(following_chunk, firsts) if following_chunk is not None else None
        choice = _one(path, next_first, windows, cache, in_series, first)
        choices.append(choice if wanted is None else _local_flows(choice, wanted, windows))
    return choices


def next_chunks(files: Sequence[Path]) -> dict[Path, Path | None]:
    """Each rolling chunk → the next chunk of the same host (folder + stem), None for the last; others absent."""
    series: dict[tuple[Path, str], list[tuple[int, Path]]] = {}
    for path in map(Path, files):
        parsed = parse_chunk_name(path.name)
        if parsed is not None:
            series.setdefault((path.parent, parsed[0]), []).append((parsed[1], path))
    following: dict[Path, Path | None] = {}
    for chunks in series.values():
        paths = [path for _, path in sorted(chunks)]
        following.update(zip(paths, [*paths[1:], None]))
    return following


def _first(path: Path, cache: dict[Path, int | None]) -> int | None:
    """A chunk's first timestamp, read once; None when empty or not a classic pcap."""
    if path not in cache:
        try:
            cache[path] = first_timestamp(path)
        except (PcapError, OSError):
            cache[path] = UNKNOWN_TS
    return cache[path]
