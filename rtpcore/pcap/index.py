"""Chunk indexes: time span and seek points of a pcap chunk, so correlation reads only the call's bytes.

A chunk's index lives in a sidecar `<chunk>.idx.json` next to it (and travels with it to S3). The rolling
writer records it while writing (no extra pass); imported chunks get one built lazily by hopping over the
record headers once, cached next to the chunk when the folder is writable. An index is only trusted when it
describes the file as it is now (same size): a truncated/repaired chunk, a torn or foreign sidecar is
reported and the chunk is read in full — never skipped on a stale index.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from rtpcore.errors import PcapError

__all__ = [
    "INDEX_SUFFIX",
    "INDEX_VERSION",
    "ChunkIndex",
    "IndexProblem",
    "build_index",
    "first_timestamp",
    "head_timestamp",
    "index_path",
    "load_index",
    "ranges_stream",
    "read_index",
    "write_index",
]

INDEX_SUFFIX = ".idx.json"
INDEX_VERSION = 1
NS_PER_S = 10**9
NS_PER_US = 1000
SEEK_INTERVAL_NS = NS_PER_S          # a seek point at least every second of capture time
TS_SLACK_NS = NS_PER_US              # µs chunks store timestamps cut to the µs: index times may be up to 1 µs later
FILE_HEADER_LEN = 24
SPLICE_TO_PIPE = sys.platform.startswith("linux")   # sendfile(2) into a pipe is Linux only
RECORD_HEADER_LEN = 16
HEAD_BYTES = FILE_HEADER_LEN + RECORD_HEADER_LEN   # what first_timestamp needs of a chunk
BUILT_CAPTURE, BUILT_LAZY = "capture", "lazy"
_MAGIC_US, _MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
_KEYS = ("version", "chunk", "bytes", "packets", "first_ns", "last_ns", "backstep_ns", "seeks", "built")


class IndexProblem(PcapError):
    """An index that cannot be used: the message names the sidecar and why; the chunk is then read in full."""


@dataclass(frozen=True, slots=True)
class ChunkIndex:
    """First/last timestamp and seek points (ts_ns, byte offset of that record) of one classic pcap chunk."""

    chunk: str
    bytes: int
    packets: int
    first_ns: int | None
    last_ns: int | None
    backstep_ns: int                      # largest step back in time between consecutive records (0: ordered)
    seeks: tuple[tuple[int, int], ...]    # increasing ts and offsets; the first record is always one
    built: str = BUILT_CAPTURE            # "capture" (written by the rolling writer) or "lazy" (built on first use)

    def byte_range(self, start_ns: int, end_ns: int) -> tuple[int, int] | None:
        """[begin, end) byte offsets holding every record with start_ns <= ts <= end_ns; None when none can be there.

        Records after a seek point s are never earlier than ts(s) - backstep and records before it never later
        than ts(s) + backstep, so starting at the last seek point with ts + backstep < start and stopping at
        the first with ts - backstep > end loses nothing even in a slightly disordered capture.
        """
        if self.first_ns is None or self.last_ns is None or not self.seeks:
            return None
        slack = self.backstep_ns + TS_SLACK_NS
        if self.last_ns + slack < start_ns or self.first_ns - slack > end_ns:
            return None
        begin = self.seeks[0][1]
        end = self.bytes
        for ts, offset in self.seeks:
            if ts + slack < start_ns:
                begin = offset
            elif ts - slack > end_ns:
                end = offset
                break
        return (begin, end) if end > begin else None

    def to_json(self) -> dict[str, Any]:
        return {"version": INDEX_VERSION, "chunk": self.chunk, "bytes": self.bytes, "packets": self.packets,
                "first_ns": self.first_ns, "last_ns": self.last_ns, "backstep_ns": self.backstep_ns,
                "seeks": [list(s) for s in self.seeks], "built": self.built}

    @classmethod
    def from_json(cls, doc: object) -> ChunkIndex:
        """The index of a decoded sidecar; ValueError names the field that is wrong."""
        if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
            raise ValueError(f"not a version {INDEX_VERSION} chunk index")
        missing = [k for k in _KEYS if k not in doc]
        if missing:
            raise ValueError(f"field(s) {', '.join(missing)} missing")
        seeks = tuple((int(ts), int(off)) for ts, off in doc["seeks"])
        ints = [doc[k] for k in ("bytes", "packets", "backstep_ns")]
        if not all(isinstance(v, int) and v >= 0 for v in ints):
            raise ValueError("bytes, packets and backstep_ns must be non-negative integers")
        for a, b in zip(seeks, seeks[1:]):
            if b[0] < a[0] or b[1] <= a[1]:
                raise ValueError("seek points are not increasing")
        if seeks and (seeks[0][1] < FILE_HEADER_LEN or seeks[-1][1] >= doc["bytes"]):
            raise ValueError("a seek point lies outside the chunk")
        if bool(seeks) != bool(doc["packets"]):
            raise ValueError("seek points and packet count disagree")
        return cls(str(doc["chunk"]), doc["bytes"], doc["packets"], _opt_int(doc["first_ns"]),
                   _opt_int(doc["last_ns"]), doc["backstep_ns"], seeks, str(doc["built"]))


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int):
        raise ValueError(f"timestamp {value!r} is not an integer")
    return value


def index_path(chunk: Path) -> Path:
    """The sidecar of a chunk: <chunk>.idx.json in the same folder."""
    chunk = Path(chunk)
    return chunk.with_name(chunk.name + INDEX_SUFFIX)


def write_index(index: ChunkIndex, chunk: Path) -> Path:
    """Write the sidecar atomically, so a crash leaves the old, the new or none."""
    return write_sidecar(index.to_json(), index_path(chunk))


def write_sidecar(doc: dict[str, Any], path: Path) -> Path:
    """A chunk's JSON sidecar (index, flow summary) written atomically: temp + fsync + rename."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    data = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    return path


def read_sidecar(path: Path, problem: type[Exception], unreadable: str) -> bytes | None:
    """A chunk's JSON sidecar's bytes; None when there is none; `problem` saying `unreadable` when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise problem(f"{path}: {unreadable} ({exc.strerror or exc})") from None


def read_index(chunk: Path) -> ChunkIndex | None:
    """The chunk's sidecar index; None when there is none; IndexProblem when it exists but cannot be trusted."""
    chunk = Path(chunk)
    path = index_path(chunk)
    raw = read_sidecar(path, IndexProblem, "unreadable")
    if raw is None:
        return None
    try:
        index = ChunkIndex.from_json(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise IndexProblem(f"{path}: corrupt index ({exc})") from None
    size = chunk.stat().st_size
    if index.chunk != chunk.name:
        raise IndexProblem(f"{path}: describes {index.chunk}, not {chunk.name}")
    if index.bytes != size:
        raise IndexProblem(f"{path}: describes {index.bytes} bytes but {chunk.name} has {size} (repaired or "
                           "rewritten since)")
    return index


def load_index(chunk: Path, *, cache: bool = True) -> tuple[ChunkIndex, str | None]:
    """A trusted index for the chunk, building (and caching) one when it is missing or unusable; plus the note why."""
    note = None
    try:
        index = read_index(chunk)
    except IndexProblem as exc:
        index, note = None, f"{exc}: rebuilt by reading the whole chunk"
    if index is not None:
        return index, None
    index = build_index(chunk)
    if note is None:
        note = f"{Path(chunk).name}: no index: built by reading the whole chunk"
    if cache:
        try:
            write_index(index, chunk)
        except OSError:
            note += " (not cached: the folder is not writable)"
    return index, note


def _header(data: bytes | mmap.mmap, path: Path) -> tuple[str, int]:
    """(struct byte order, ns per timestamp fraction unit) of a classic pcap; IndexProblem otherwise."""
    if len(data) < FILE_HEADER_LEN:
        raise IndexProblem(f"{path}: shorter than a pcap header; not indexable")
    for order in "<>":
        magic = struct.unpack_from(order + "I", data, 0)[0]
        if magic == _MAGIC_US:
            return order, NS_PER_US
        if magic == _MAGIC_NS:
            return order, 1
    raise IndexProblem(f"{path}: not a classic pcap (pcapng or other); it is read in full")


def first_timestamp(chunk: Path) -> int | None:
    """The first record's timestamp, from the first 40 bytes; None for an empty chunk."""
    with open(chunk, "rb") as f:
        return head_timestamp(f.read(HEAD_BYTES), Path(chunk))


def head_timestamp(head: bytes, where: Path) -> int | None:
    """The first record's timestamp from a chunk's first 40 bytes (a local read or an S3 range read)."""
    order, unit = _header(head, where)
    if len(head) < FILE_HEADER_LEN + RECORD_HEADER_LEN:
        return None
    sec, frac = struct.unpack_from(order + "II", head, FILE_HEADER_LEN)
    return sec * NS_PER_S + frac * unit


def build_index(chunk: Path) -> ChunkIndex:
    """Index a classic pcap by hopping over its record headers (no packet is parsed); a torn tail ends it."""
    chunk = Path(chunk)
    size = chunk.stat().st_size
    if size < FILE_HEADER_LEN:
        raise IndexProblem(f"{chunk}: {size} bytes, shorter than a pcap header; not indexable")
    with open(chunk, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        order, unit = _header(data, chunk)
        unpack = struct.Struct(order + "III").unpack_from
        seeks: list[tuple[int, int]] = []
        offset, packets, backstep = FILE_HEADER_LEN, 0, 0
        first = last = top = None
        next_seek = -1
        end = size - RECORD_HEADER_LEN
        while offset <= end:
            sec, frac, incl = unpack(data, offset)
            if offset + RECORD_HEADER_LEN + incl > size:
                break  # torn last record: the index covers what is whole
            ts = sec * NS_PER_S + frac * unit
            if ts >= next_seek:
                seeks.append((ts, offset))
                next_seek = ts + SEEK_INTERVAL_NS
            if top is None or ts >= top:
                top = ts
            elif top - ts > backstep:
                backstep = top - ts
            if first is None:
                first = ts
            last = ts
            packets += 1
            offset += RECORD_HEADER_LEN + incl
    return ChunkIndex(chunk.name, size, packets, first, last, backstep, tuple(seeks), BUILT_LAZY)


COPY_BLOCK = 8 << 20


def copy_ranges(chunk: Path, ranges: tuple[tuple[int, int], ...], dest: Path) -> int:
    """A classic pcap made of the chunk's header and the given record-aligned byte ranges; returns bytes copied."""
    total = 0
    with open(chunk, "rb") as src, open(dest, "wb") as out:
        header = src.read(FILE_HEADER_LEN)
        _header(header, Path(chunk))
        out.write(header)
        out.flush()
        for begin, end in ranges:
            total += _copy(src.fileno(), out.fileno(), begin, end - begin)
    return total


def _copy(src: int, dst: int, offset: int, count: int) -> int:
    """count bytes from src at offset appended to dst, in the kernel when it can."""
    done = 0
    copy_range = getattr(os, "copy_file_range", None)
    while done < count:
        n = 0
        if copy_range is not None:
            try:
                n = copy_range(src, dst, min(COPY_BLOCK, count - done), offset + done)
            except OSError:
                copy_range = None
                continue
        else:
            block = os.pread(src, min(COPY_BLOCK, count - done), offset + done)
            n = os.write(dst, block) if block else 0
        if n == 0:
            break  # the file ended early (it shrank): the filter reports what it finds
        done += n
    return done


def _copy_to_pipe(src: int, pipe: int, offset: int, count: int) -> int:
    """Bytes of a file into a pipe: sendfile on Linux (no copy through Python), pread + write elsewhere (macOS)."""
    if SPLICE_TO_PIPE:
        return os.sendfile(pipe, src, offset, count)
    view = memoryview(os.pread(src, count, offset))
    sent = len(view)
    while view:
        view = view[os.write(pipe, view):]
    return sent


@contextmanager
def ranges_stream(chunk: Path, ranges: tuple[tuple[int, int], ...]) -> Iterator[Path]:
    """A path (/dev/fd/N of a pipe) that reads as a pcap of the chunk's header and ranges: libpcap filters the
    call's bytes straight from the page cache, with no copy on disk; a feeder thread splices them in."""
    read_end, write_end = os.pipe()
    problems: list[OSError] = []

    def feed() -> None:
        try:
            with open(chunk, "rb") as src:
                head = src.read(FILE_HEADER_LEN)
                view = memoryview(head)
                while view:
                    view = view[os.write(write_end, view):]
                for begin, end in ranges:
                    offset = begin
                    while offset < end:
                        sent = _copy_to_pipe(src.fileno(), write_end, offset, min(COPY_BLOCK, end - offset))
                        if sent == 0:
                            break  # the chunk shrank: libpcap reports what it finds
                        offset += sent
        except BrokenPipeError:
            pass  # the reader stopped early (it reports its own error)
        except OSError as exc:
            problems.append(exc)
        finally:
            os.close(write_end)

    feeder = threading.Thread(target=feed, name=f"ranges-{Path(chunk).name}", daemon=True)
    feeder.start()
    try:
        yield Path(f"/dev/fd/{read_end}")
    finally:
        os.close(read_end)
        feeder.join()
    if problems:
        raise problems[0]
