"""Append-only JSON-lines manifest of a capture session: every chunk accounted for, even after a crash."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from rtpcore.errors import StorageError
from rtpcore.pcap.index import BUILT_CAPTURE, ChunkIndex, write_index
from rtpcore.pcap.rolling import ChunkInfo

__all__ = [
    "MANIFEST_NAME",
    "ChunkRecord",
    "GapRecord",
    "Manifest",
    "ManifestState",
    "OpenRecord",
    "record_index",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
EVENT_CHUNK = "chunk"
EVENT_GAP = "gap"
EVENT_OPEN = "open"
EVENT_SESSION = "session"
STATUS_STARTED = "started"
STATUS_FINISHED = "finished"
_SNIPPET = 60  # characters of a bad line quoted in a problem message


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A chunk file that was closed (or repaired) and is complete on disk."""

    host: str
    interface: str | None
    name: str
    packets: int
    bytes: int
    first_ns: int | None
    last_ns: int | None
    sha256: str
    reason: str


@dataclass(frozen=True, slots=True)
class GapRecord:
    """A time span during which a host's capture was not running (reconnect, crash)."""

    host: str
    interface: str | None
    from_ns: int
    to_ns: int
    why: str


@dataclass(frozen=True, slots=True)
class OpenRecord:
    """A chunk the writer started; without a matching ChunkRecord the capture died while writing it."""

    host: str
    interface: str | None
    name: str
    linktype: int | None


@dataclass(frozen=True, slots=True)
class ManifestState:
    """What a manifest says, plus the lines it could not use."""

    sessions: tuple[dict[str, Any], ...]
    opened: tuple[OpenRecord, ...]
    chunks: tuple[ChunkRecord, ...]
    gaps: tuple[GapRecord, ...]
    problems: tuple[str, ...]

    @property
    def open_chunks(self) -> tuple[OpenRecord, ...]:
        """Chunks opened but never closed: the capture stopped without closing them."""
        closed = {c.name for c in self.chunks}
        return tuple(o for o in self.opened if o.name not in closed)

    @property
    def finished(self) -> bool:
        """True when the session wrote its 'finished' record."""
        return any(s.get("status") == STATUS_FINISHED for s in self.sessions)

    def chunk(self, name: str) -> ChunkRecord | None:
        """The close record of a chunk file name, if any."""
        return next((c for c in self.chunks if c.name == name), None)


class Manifest:
    """Appends one fsynced JSON line per event; safe to share between the threads of one capture."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_session(cls, session_dir: Path) -> Manifest:
        """The manifest at <session>/manifest.jsonl."""
        return cls(Path(session_dir) / MANIFEST_NAME)

    # -- events ----------------------------------------------------------------------------

    def start(self, **fields: Any) -> None:
        """Record that the session started (hosts, duration, settings the caller wants kept)."""
        self._append({"event": EVENT_SESSION, "status": STATUS_STARTED, **fields})

    def finish(self, status: str = STATUS_FINISHED, **fields: Any) -> None:
        """Record that the session ended on purpose (stop reason, counts)."""
        self._append({"event": EVENT_SESSION, "status": status, **fields})

    def open_chunk(self, host: str, interface: str | None, name: str, *, linktype: int | None = None) -> None:
        """Record a chunk the writer just created, so a crash leaves a trace of it."""
        record: dict[str, Any] = {"event": EVENT_OPEN, "host": host, "interface": interface, "chunk": name}
        if linktype is not None:
            record["linktype"] = linktype
        self._append(record)

    def append_chunk(self, host: str, interface: str | None, info: ChunkInfo) -> None:
        """Record a closed chunk with the counts and hash the uploader verifies."""
        self._append({
            "event": EVENT_CHUNK, "host": host, "interface": interface, "name": info.name,
            "packets": info.packets, "bytes": info.bytes, "first_ns": info.first_ns, "last_ns": info.last_ns,
            "sha256": info.sha256, "reason": info.closed_reason,
        })

    def append_gap(self, host: str, from_ns: int, to_ns: int, why: str, *, interface: str | None = None) -> None:
        """Record a span with no capture, so the correlation report can say media may be missing."""
        if to_ns < from_ns:
            raise ValueError(f"gap for {host}: to_ns {to_ns} is before from_ns {from_ns}")
        self._append({
            "event": EVENT_GAP, "host": host, "interface": interface, "from_ns": from_ns, "to_ns": to_ns, "why": why,
        })

    def close(self) -> None:
        """Release the file descriptor (every line is already on disk)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _append(self, record: dict[str, Any]) -> None:
        """Write one whole line with O_APPEND and fsync it before returning."""
        record.setdefault("time_ns", time.time_ns())
        line = (json.dumps(record, separators=(",", ":"), sort_keys=False) + "\n").encode("utf-8")
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = self._open()
                done = 0
                while done < len(line):
                    done += os.write(self._fd, line[done:])
                os.fsync(self._fd)
            except OSError as exc:
                raise StorageError(f"{self.path}: cannot append to the capture manifest: {exc.strerror or exc}") from exc

    def _open(self) -> int:
        """Open for append; end a torn last line first so the next record is not glued onto it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
        return fd

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def read(path: Path) -> ManifestState:
        """Parse the manifest; unusable lines (a torn last line after a crash) are skipped and listed."""
        path = Path(path)
        sessions: list[dict[str, Any]] = []
        opened: list[OpenRecord] = []
        chunks: list[ChunkRecord] = []
        gaps: list[GapRecord] = []
        problems: list[str] = []
        seen_chunks: set[str] = set()
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return ManifestState((), (), (), (), (f"{path}: no manifest",))
        lines = raw.split(b"\n")
        torn_tail = lines[-1] != b""  # a complete file ends with a newline
        if not torn_tail:
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError:
                snippet = line[:_SNIPPET].decode("utf-8", "replace")
                if torn_tail and number == len(lines):
                    problems.append(f"{path} line {number}: torn last line ignored (the writer stopped mid-line): "
                                    f"{snippet!r}")
                else:
                    problems.append(f"{path} line {number}: not a JSON object, ignored: {snippet!r}")
                continue
            try:
                _dispatch(record, sessions, opened, chunks, gaps, seen_chunks)
            except KeyError as exc:
                problems.append(f"{path} line {number}: {record.get('event')!r} event lacks field {exc}, ignored")
            except (TypeError, ValueError) as exc:
                problems.append(f"{path} line {number}: {record.get('event')!r} event ignored: {exc}")
        return ManifestState(tuple(sessions), tuple(opened), tuple(chunks), tuple(gaps), tuple(problems))


def record_index(info: ChunkInfo) -> Path | None:
    """Write a closed chunk's sidecar index <chunk>.idx.json; None (and a warning) when it could not be written.

    The sidecar travels with the chunk to S3 (the upload queue takes both) so a correlation picks chunks and
    byte ranges without downloading them; a failure only costs that (the chunk gets indexed on first use).
    """
    index = ChunkIndex(info.name, info.bytes, info.packets, info.first_ns, info.last_ns, info.backstep_ns,
                       info.seeks, BUILT_CAPTURE)
    try:
        return write_index(index, info.path)
    except OSError as exc:
        log.warning("%s: index not written (%s); the chunk will be indexed on first use", info.path, exc)
        return None


def _dispatch(
    record: dict[str, Any],
    sessions: list[dict[str, Any]],
    opened: list[OpenRecord],
    chunks: list[ChunkRecord],
    gaps: list[GapRecord],
    seen_chunks: set[str],
) -> None:
    """Turn one decoded line into a typed record; raise with the reason when it cannot be."""
    event = record.get("event")
    if event == EVENT_SESSION:
        sessions.append(record)
    elif event == EVENT_OPEN:
        linktype = record.get("linktype")
        opened.append(OpenRecord(_str(record, "host"), _opt_str(record, "interface"), _str(record, "chunk"),
                                 None if linktype is None else _int(record, "linktype")))
    elif event == EVENT_CHUNK:
        name = _str(record, "name")
        if name in seen_chunks:
            raise ValueError(f"chunk {name} is already recorded; the first record is kept")
        chunks.append(ChunkRecord(
            _str(record, "host"), _opt_str(record, "interface"), name, _int(record, "packets"),
            _int(record, "bytes"), _opt_int(record, "first_ns"), _opt_int(record, "last_ns"),
            _str(record, "sha256"), _str(record, "reason"),
        ))
        seen_chunks.add(name)
    elif event == EVENT_GAP:
        gaps.append(GapRecord(_str(record, "host"), _opt_str(record, "interface"), _int(record, "from_ns"),
                              _int(record, "to_ns"), _str(record, "why")))
    else:
        raise ValueError(f"unknown event {event!r}")


def _str(record: dict[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise TypeError(f"field {key!r} must be a string, got {value!r}")
    return value


def _opt_str(record: dict[str, Any], key: str) -> str | None:
    return None if record.get(key) is None else _str(record, key)


def _int(record: dict[str, Any], key: str) -> int:
    value = record[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"field {key!r} must be an integer, got {value!r}")
    return value


def _opt_int(record: dict[str, Any], key: str) -> int | None:
    return None if record.get(key) is None else _int(record, key)
