"""Build and cache a chunk's flow summary from the bytes a correlation's filter step has just read.

Local chunks: `<chunk>.flows.json` beside the chunk (atomically; not cached when the folder is read-only).
S3 chunks: uploaded beside the object as `<key>.flows.json` when the credentials allow writing, so every later
correlation (any machine, any output folder) finds it; when the upload is refused it is a warning and the
chunk is summarized again next time. Only the ranges an existing summary does not cover are read again.
"""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.errors import PcapError, StorageError
from rtpcore.media.select import ChunkChoice
from rtpcore.pcap.flows import (
    FLOWS_SUFFIX, FlowProblem, FlowSummary, local_identity, parse_summary, read_summary, subtract_spans, summarize,
    write_summary,
)
from rtpcore.pcap.index import FILE_HEADER_LEN

if TYPE_CHECKING:
    from rtpcore.settings import Settings

__all__ = ["part_spans", "record_flows"]

log = logging.getLogger(__name__)

Span = tuple[int, int]


def part_spans(ranges: Sequence[Span], wanted: Sequence[Span]) -> list[Span]:
    """Where the chunk's byte spans `wanted` lie in a part file holding the header and `ranges` back to back."""
    out: list[Span] = []
    at = FILE_HEADER_LEN
    for begin, end in ranges:
        for wb, we in wanted:
            b, e = max(begin, wb), min(end, we)
            if b < e:
                out.append((at + b - begin, at + e - begin))
        at += end - begin
    return out


def record_flows(choice: ChunkChoice, read_from: Path, settings: Settings | None) -> float | None:
    """Summarize what the choice read of read_from and cache it where choice.flows says; seconds spent, or None
    when nothing was needed. Problems are logged warnings: a missing summary only costs a later read."""
    if not choice.flows or not choice.read:
        return None
    began = time.perf_counter()
    identity = dict(choice.identity)
    try:
        if choice.origin is not None and choice.origin.startswith("s3://"):
            _record_s3(choice, read_from, identity, settings)
        else:
            _record_local(choice, identity)
    except (OSError, PcapError, StorageError) as exc:
        log.warning("flow summary of %s not cached (%s); the next correlation reads it again",
                    choice.origin or choice.source.name, exc)
        return None
    return time.perf_counter() - began


def _record_local(choice: ChunkChoice, identity: dict[str, Any]) -> None:
    """Summarize the chunk's chosen ranges not yet covered, merged into the summary beside it."""
    target = Path(choice.flows or "")
    if local_identity(choice.source) != identity:
        raise PcapError(f"{choice.source.name} changed while it was read")
    try:
        old = read_summary(target, choice.source.name, identity)
    except FlowProblem:
        old = None  # rebuilt: select_media already warned
    todo = subtract_spans(choice.spans, old.covered) if old is not None else choice.spans
    if not todo:
        return
    new = summarize(choice.source, todo, chunk=choice.source.name, identity=identity)
    write_summary(old.merged(new) if old is not None else new, target)


def _record_s3(choice: ChunkChoice, part: Path, identity: dict[str, Any], settings: Settings | None) -> None:
    """Summarize the range-read part file and upload the merged summary beside the S3 object."""
    from rtpcore.storage.download import storage_for_url

    if settings is None:
        from rtpcore.settings import load_settings

        settings = load_settings()
    assert choice.origin is not None and choice.flows is not None
    storage = storage_for_url(choice.origin, settings)
    name = Path(choice.flows[: -len(FLOWS_SUFFIX)]).name
    old: FlowSummary | None = None
    info = storage.head(choice.flows)
    if info is not None:
        buf = io.BytesIO()
        storage.read_range(choice.flows, 0, info.size, buf)
        try:
            old = parse_summary(buf.getvalue(), choice.flows, name, identity)
        except FlowProblem:
            old = None
    ranges = choice.ranges or ()
    todo = subtract_spans(ranges, old.covered) if old is not None else ranges
    if not todo:
        return
    new = summarize(part, part_spans(ranges, todo), chunk=name, identity=identity, covered=todo)
    local = part.with_name(f".{part.name}{FLOWS_SUFFIX}")
    try:
        write_summary(old.merged(new) if old is not None else new, local)
        storage.put_file(local, choice.flows)
    finally:
        local.unlink(missing_ok=True)
