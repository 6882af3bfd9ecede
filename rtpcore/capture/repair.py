"""After a crash: cut torn last records, give headerless chunks a header, and list every chunk in the manifest."""
from __future__ import annotations

import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from rtpcore.capture.manifest import MANIFEST_NAME, ChunkRecord, Manifest, ManifestState, OpenRecord
from rtpcore.errors import PcapError, TruncatedCaptureError
from rtpcore.fsutil import fsync_dir
from rtpcore.pcap.index import build_index, index_path, write_index
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.reader import PCAP_MAGIC_NS, PCAP_MAGIC_US, open_capture
from rtpcore.pcap.rolling import FILE_HEADER_LEN, ChunkInfo, parse_chunk_name, pcap_file_header

__all__ = ["RAW_DIR", "RepairAction", "RepairReport", "repair_session"]

RAW_DIR = "raw"
HASH_BLOCK = 1 << 20
ACTION_RECORDED = "recorded"            # whole file, only missing from the manifest
ACTION_TRUNCATED = "truncated"          # a torn last record was cut off
ACTION_HEADER = "header-rewritten"      # 0-23 bytes: replaced by an empty valid pcap
ACTION_SKIPPED = "skipped"              # cannot be made valid safely; left untouched and unlisted
_MAGICS = tuple(struct.pack(e + "I", m) for e in "<>" for m in (PCAP_MAGIC_US, PCAP_MAGIC_NS))

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RepairAction:
    """What repair did to one chunk file."""

    file: Path
    action: str
    packets: int       # whole records kept
    bytes_cut: int     # bytes removed (torn record, or a partial header replaced)
    detail: str


@dataclass(frozen=True, slots=True)
class RepairReport:
    """Every change repair made, and what it found wrong but could not fix."""

    session: Path
    actions: tuple[RepairAction, ...]
    problems: tuple[str, ...]

    @property
    def changed(self) -> bool:
        """True when a file or the manifest was modified."""
        return any(a.action != ACTION_SKIPPED for a in self.actions)


def repair_session(session_dir: Path) -> RepairReport:
    """Make every chunk in <session>/raw a valid pcap listed once in the manifest; a second run changes nothing."""
    session = Path(session_dir)
    manifest_path = session / MANIFEST_NAME
    raw = session / RAW_DIR
    if not manifest_path.is_file():
        return RepairReport(session, (), (f"{manifest_path}: no manifest, not a capture session; nothing repaired",))
    state = Manifest.read(manifest_path)
    problems = list(state.problems)
    on_disk = sorted(p for p in raw.glob("*.pcap") if p.is_file()) if raw.is_dir() else []
    disk_names = {p.name for p in on_disk}
    for chunk in state.chunks:
        if chunk.name not in disk_names:
            problems.append(f"{raw / chunk.name}: listed in the manifest but missing from disk")
        elif (size := (raw / chunk.name).stat().st_size) != chunk.bytes:
            problems.append(f"{raw / chunk.name}: {size} bytes on disk but {chunk.bytes} in the manifest")
    listed = {c.name for c in state.chunks}
    for record in state.open_chunks:
        if record.name not in disk_names:
            problems.append(f"{raw / record.name}: opened by the capture but missing from disk")
    actions: list[RepairAction] = []
    opened = {o.name: o for o in state.opened}
    with Manifest(manifest_path) as manifest:
        for path in on_disk:
            if path.name in listed:
                continue
            action, info = _repair_file(path, opened.get(path.name), on_disk)
            actions.append(action)
            if info is not None:
                host, interface = _owner(path.name, opened.get(path.name), state)
                manifest.append_chunk(host, interface, info)
                _reindex(path)
    return RepairReport(session, tuple(actions), tuple(problems))


def _reindex(path: Path) -> None:
    """Rebuild a repaired chunk's sidecar index from the file as it is now (a stale one would skip wrongly).

    The index only saves reading time: when it cannot be written (the disk that ended the capture is still
    full) the chunk stays valid and listed, the stale index goes, and correlation reads the chunk in full.
    """
    try:
        write_index(build_index(path), path)
    except (PcapError, OSError) as exc:
        index_path(path).unlink(missing_ok=True)
        log.warning("%s: index not rebuilt (%s); correlation will read this chunk in full", path, exc)


def _repair_file(path: Path, opened: OpenRecord | None, siblings: list[Path]) -> tuple[RepairAction, ChunkInfo | None]:
    """Make one unlisted file valid; return what was done and its chunk record (None when skipped)."""
    stat = path.stat()
    if stat.st_nlink > 1:
        # session import hard-links user files into raw/: cutting one would damage the user's original.
        return RepairAction(path, ACTION_SKIPPED, 0, 0, "hard-linked file left untouched"), None
    size = stat.st_size
    if size < FILE_HEADER_LEN:
        head = path.read_bytes()
        if not any(magic.startswith(head[:4]) for magic in _MAGICS):
            return RepairAction(path, ACTION_SKIPPED, 0, 0, f"{size} bytes that do not start a pcap header"), None
        header, source = _header_template(path, opened, siblings)
        _replace(path, header)
        detail = f"{size}-byte partial header replaced by an empty pcap ({source})"
        return RepairAction(path, ACTION_HEADER, 0, size, detail), _describe(path, 0, None, None)
    packets, first, last, cut_at = 0, None, None, None
    try:
        with open_capture(path) as reader:
            for frame in reader:
                if first is None:
                    first = frame.ts_ns
                last = frame.ts_ns
            packets = reader.packets_read
    except TruncatedCaptureError as exc:
        packets, cut_at = exc.packets_read, exc.offset
    except PcapError as exc:
        return RepairAction(path, ACTION_SKIPPED, 0, 0, f"unreadable, left untouched: {exc}"), None
    if cut_at is None:
        return RepairAction(path, ACTION_RECORDED, packets, 0, "whole file"), _describe(path, packets, first, last)
    if cut_at < FILE_HEADER_LEN:
        return RepairAction(path, ACTION_SKIPPED, 0, 0, f"truncated inside its header at byte {cut_at}"), None
    os.truncate(path, cut_at)
    _fsync(path)
    detail = f"torn record at byte offset {cut_at} cut ({size - cut_at} bytes)"
    return RepairAction(path, ACTION_TRUNCATED, packets, size - cut_at, detail), _describe(path, packets, first, last)


def _header_template(path: Path, opened: OpenRecord | None, siblings: list[Path]) -> tuple[bytes, str]:
    """The header for a headerless chunk: a same-stem sibling's, else the open event's link type, else any sibling's."""
    parsed = parse_chunk_name(path.name)
    stem = parsed[0] if parsed else None
    same_stem = [p for p in siblings if p != path and (q := parse_chunk_name(p.name)) is not None and q[0] == stem]
    others = [p for p in siblings if p != path and p not in same_stem]
    if (found := _first_header(same_stem)) is not None:
        return found
    if opened is not None and opened.linktype is not None:
        return pcap_file_header(opened.linktype), f"link type {opened.linktype} from the manifest's open event"
    if (found := _first_header(others)) is not None:
        return found
    return pcap_file_header(LINKTYPE_ETHERNET), "link type unknown, Ethernet assumed"


def _first_header(candidates: list[Path]) -> tuple[bytes, str] | None:
    """The 24-byte classic pcap header of the first candidate that has one."""
    for sibling in candidates:
        with open(sibling, "rb") as f:
            head = f.read(FILE_HEADER_LEN)
        if len(head) == FILE_HEADER_LEN and head[:4] in _MAGICS:
            return head, f"header of {sibling.name}"
    return None


def _replace(path: Path, content: bytes) -> None:
    """Swap in new content atomically so a crash during repair leaves the old or the new file."""
    temp = path.with_name(f".{path.name}.repair")
    with open(temp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def _fsync(path: Path) -> None:
    """Persist a truncation."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(path: Path, packets: int, first: int | None, last: int | None) -> ChunkInfo:
    """The chunk record of a repaired file: counts from the scan, size and hash of the file now on disk."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
            size += len(block)
    parsed = parse_chunk_name(path.name)
    return ChunkInfo(path.name, path, parsed[1] if parsed else 0, packets, size, first, last, digest.hexdigest(),
                     "repair")


def _owner(name: str, opened: OpenRecord | None, state: ManifestState) -> tuple[str, str | None]:
    """Host and interface of a chunk: from its open event, else a same-stem chunk, else the stem itself."""
    if opened is not None:
        return opened.host, opened.interface
    parsed = parse_chunk_name(name)
    stem = parsed[0] if parsed else Path(name).stem
    records: tuple[OpenRecord | ChunkRecord, ...] = (*state.opened, *state.chunks)
    for record in records:
        other = parse_chunk_name(record.name)
        if other is not None and other[0] == stem:
            return record.host, record.interface
    return stem, None
