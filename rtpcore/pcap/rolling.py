"""Rolling pcap chunks <stem>-0001.pcap, -0002 …: each a valid pcap whenever the process dies."""
from __future__ import annotations

import hashlib
import os
import re
import struct
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rtpcore.errors import StorageError
from rtpcore.fsutil import fsync_dir
from rtpcore.pcap.linktypes import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_RAW,
)
from rtpcore.pcap.writer import DEFAULT_SNAPLEN, NS_PER_S, NS_PER_US, PCAP_MAGIC_NS, PCAP_MAGIC_US, PCAP_VERSION

__all__ = [
    "BIG_ENDIAN_LINKTYPES",
    "CLOSE_REASONS",
    "ChunkInfo",
    "RollingPcapWriter",
    "chunk_name",
    "existing_indices",
    "decode_be_records",
    "parse_chunk_name",
]

DEFAULT_MAX_BYTES = 500 * 2**20
DEFAULT_FLUSH_INTERVAL = 1.0          # seconds of wall time a SIGKILL may lose at most
DEFAULT_FLUSH_BYTES = 256 * 1024      # pending bytes that force a write() before the interval ends
SEEK_INTERVAL_NS = NS_PER_S           # the index gets a seek point at least every second of capture time
FILE_HEADER_LEN = 24
RECORD_HEADER_LEN = 16
CLOSE_REASONS = frozenset({"size", "time", "stop", "repair"})
_MAX_NAME_ATTEMPTS = 1000             # another process racing us for names: give up after this many
_PCAP_FILE_HEADER = struct.Struct("<IHHiIII")    # same layout PcapWriter writes
_PCAP_RECORD_HEADER = struct.Struct("<IIII")
_BE_RECORD_HEADER = struct.Struct(">IIII")
_LOW32 = 0xFFFFFFFF
# Link types whose frames hold no field in the capturing host's byte order, so a big-endian file reads the
# same everywhere; libpcap's BPF and readers take NULL/ENC's AF_ word, PFLOG, USB and NFLOG headers in the
# file's byte order (gencode.c, pcap-util.c), so those stay little-endian. (SLL/SLL2 swap only SocketCAN ids.)
BIG_ENDIAN_LINKTYPES = frozenset({LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4,
                                  LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2})
_CHUNK_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{4,})\.pcap$")


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """A closed chunk, as the manifest and the uploader need it."""

    name: str
    path: Path
    index: int
    packets: int
    bytes: int
    first_ns: int | None
    last_ns: int | None
    sha256: str
    closed_reason: str  # "size" | "time" | "stop" | "repair"
    # For the chunk index (rtpcore.pcap.index): (ts_ns, byte offset) of the first record at least every
    # second, and the largest step back in time between records (0 when the chunk is in time order).
    seeks: tuple[tuple[int, int], ...] = ()
    backstep_ns: int = 0


def chunk_name(stem: str, index: int) -> str:
    """The seed's chunk file name: stem plus a 4-digit (or wider) index."""
    return f"{stem}-{index:04d}.pcap"


def parse_chunk_name(name: str) -> tuple[str, int] | None:
    """(stem, index) of a chunk file name, or None when it does not follow the pattern."""
    m = _CHUNK_NAME.match(name)
    return (m["stem"], int(m["index"])) if m else None


def existing_indices(folder: Path, stem: str) -> list[int]:
    """Indices already used by `stem` in folder, sorted; another stem's chunks never match."""
    if not folder.is_dir():
        return []
    found = []
    for entry in os.scandir(folder):
        parsed = parse_chunk_name(entry.name)
        if parsed is not None and parsed[0] == stem:
            found.append(parsed[1])
    return sorted(found)


def pcap_file_header(
    linktype: int, snaplen: int = DEFAULT_SNAPLEN, *, nanosecond: bool = False, big_endian: bool = False
) -> bytes:
    """The 24-byte global header every chunk starts with (big-endian: magic bytes a1 b2 c3 d4, every field BE)."""
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    header = struct.Struct(">IHHiIII") if big_endian else _PCAP_FILE_HEADER
    return header.pack(magic, *PCAP_VERSION, 0, 0, snaplen, linktype)


def decode_be_records(records: bytes, count: int) -> list[tuple[int, bytes, int]]:
    """(ts_ns, data, orig_len) of `count` big-endian µs pcap records: the per-record form of a record batch."""
    out = []
    off = 0
    for _ in range(count):
        sec, usec, caplen, length = _BE_RECORD_HEADER.unpack_from(records, off)
        out.append((sec * NS_PER_S + usec * NS_PER_US, records[off + RECORD_HEADER_LEN:off + RECORD_HEADER_LEN + caplen],
                    length))
        off += RECORD_HEADER_LEN + caplen
    return out


def _key_ns(key: int) -> int:
    """ns of a record key (ts_sec << 32 | ts_usec)."""
    return (key >> 32) * NS_PER_S + (key & _LOW32) * NS_PER_US


def _key_at_least(ts_ns: int) -> int:
    """The smallest record key whose time is at least ts_ns: key >= it exactly when key's ns >= ts_ns."""
    usec = -(-ts_ns // NS_PER_US)
    return (usec // 1_000_000) << 32 | usec % 1_000_000


class RollingPcapWriter:
    """Classic pcap chunks rolled on size and/or capture time; data reaches the kernel every flush_interval."""

    current: Path | None
    chunks: list[ChunkInfo]

    def __init__(
        self,
        folder: Path,
        stem: str,
        linktype: int,
        *,
        snaplen: int = DEFAULT_SNAPLEN,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = 0,
        nanosecond: bool = False,
        on_close: Callable[[ChunkInfo], None] | None = None,
        start_index: int = 1,
        on_open: Callable[[Path], None] | None = None,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        big_endian: bool = False,
    ) -> None:
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"link type {linktype} is outside 0..65535")
        if snaplen <= 0:
            raise ValueError(f"snaplen must be positive, got {snaplen}")
        if max_bytes < FILE_HEADER_LEN + RECORD_HEADER_LEN:
            raise ValueError(f"max_bytes must be at least {FILE_HEADER_LEN + RECORD_HEADER_LEN}, got {max_bytes}")
        if max_seconds < 0:
            raise ValueError(f"max_seconds must be 0 (off) or positive, got {max_seconds}")
        if start_index < 1:
            raise ValueError(f"start_index must be at least 1, got {start_index}")
        if flush_interval < 0 or flush_bytes < 0:
            raise ValueError(f"flush_interval and flush_bytes must not be negative, got {flush_interval}, {flush_bytes}")
        if not stem or "/" in stem or os.sep in stem:
            raise ValueError(f"stem {stem!r} must be a non-empty file name part without '/'")
        self.folder = Path(folder)
        self.stem = stem
        self.linktype = linktype
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.flush_interval = flush_interval
        self.flush_bytes = flush_bytes
        self.on_close = on_close
        self.on_open = on_open
        self.current = None
        self.chunks = []
        self.big_endian = big_endian
        self._header = pcap_file_header(linktype, snaplen, nanosecond=nanosecond, big_endian=big_endian)
        self._record_header = _BE_RECORD_HEADER if big_endian else _PCAP_RECORD_HEADER
        self._divisor = 1 if nanosecond else NS_PER_US
        self._max_ns = int(max_seconds * NS_PER_S)
        self._closed = False
        self._fd: int | None = None
        self._index = 0
        self._packets = 0
        self._bytes = 0
        self._first_raw = 0
        self._last_raw = 0
        self._hash = hashlib.sha256()
        self._seeks: list[tuple[int, int]] = []
        self._next_seek = 0
        self._top = 0
        self._backstep = 0
        self._buf = bytearray()
        self._last_flush = time.monotonic()
        used = existing_indices(self.folder, stem)
        self._next_index = max(start_index, used[-1] + 1 if used else 1)
        self._open_next()

    # -- writing ---------------------------------------------------------------------------

    def write(self, ts_ns: int, data: bytes, orig_len: int | None = None) -> None:
        """Append one record (cut to snaplen), rolling first when it would overflow the chunk."""
        self.write_many(((ts_ns, data, len(data) if orig_len is None else orig_len),))

    def write_many(self, records: Iterable[tuple[int, bytes, int]]) -> None:
        """Append (ts_ns, data, orig_len) records; the per-record path stays in locals for 100k+ pps."""
        if self._closed:
            raise ValueError(f"{self.stem}: write after close")
        pack = self._record_header.pack
        div, snaplen, max_bytes, max_ns = self._divisor, self.snaplen, self.max_bytes, self._max_ns
        flush_bytes = self.flush_bytes
        buf = self._buf
        need_open = self._fd is None
        packets, nbytes, first, last = self._packets, self._bytes, self._first_raw, self._last_raw
        seeks, next_seek, top, backstep = self._seeks, self._next_seek, self._top, self._backstep
        try:
            for ts_ns, data, orig_len in records:
                incl = len(data)
                if incl > snaplen:
                    data = data[:snaplen]
                    incl = snaplen
                if orig_len < incl:
                    orig_len = incl
                if ts_ns < 0:
                    raise ValueError(f"timestamp {ts_ns} ns is before 1970")
                size = RECORD_HEADER_LEN + incl
                if need_open:
                    self._open_next()
                    need_open = False
                    packets, nbytes = 0, self._bytes
                    seeks, next_seek, top, backstep = self._seeks, 0, 0, 0
                elif packets and (nbytes + size > max_bytes or (max_ns and ts_ns - first >= max_ns)):
                    reason = "size" if nbytes + size > max_bytes else "time"
                    self._packets, self._bytes, self._first_raw, self._last_raw = packets, nbytes, first, last
                    self._next_seek, self._top, self._backstep = next_seek, top, backstep
                    self._close_chunk(reason)
                    self._open_next()
                    packets, nbytes = 0, self._bytes
                    seeks, next_seek, top, backstep = self._seeks, 0, 0, 0
                sec, frac = divmod(ts_ns, NS_PER_S)
                try:
                    header = pack(sec, frac // div, incl, orig_len)
                except struct.error:
                    raise ValueError(f"timestamp {ts_ns} ns is past 2106 (pcap seconds are 32-bit)") from None
                buf += header
                buf += data
                if ts_ns >= next_seek:
                    seeks.append((ts_ns, nbytes))
                    next_seek = ts_ns + SEEK_INTERVAL_NS
                if ts_ns >= top:
                    top = ts_ns
                elif top - ts_ns > backstep:
                    backstep = top - ts_ns
                if not packets:
                    first = ts_ns
                last = ts_ns
                packets += 1
                nbytes += size
                if len(buf) >= flush_bytes:
                    self._flush()
        finally:
            self._packets, self._bytes, self._first_raw, self._last_raw = packets, nbytes, first, last
            self._next_seek, self._top, self._backstep = next_seek, top, backstep
        if buf and time.monotonic() - self._last_flush >= self.flush_interval:
            self._flush()

    def write_records(self, records: bytes, keys: Sequence[int], caplens: Sequence[int]) -> None:
        """Append big-endian µs pcap records as one block (keys[i] = ts_sec << 32 | ts_usec): what write_many
        would write, with the bookkeeping done per batch; other writers and caplens over snaplen go through it."""
        if self._closed:
            raise ValueError(f"{self.stem}: write after close")
        n = len(keys)
        if not n:
            return
        if not self.big_endian or self.nanosecond or max(caplens) > self.snaplen:
            self.write_many(decode_be_records(records, n))
            return
        start, pos = 0, 0
        while start < n:
            if self._fd is None:
                self._open_next()
            stop, reason = self._room(keys, caplens, start)
            if stop > start:
                pos = self._append_records(records, keys, caplens, start, stop, pos)
            if stop < n:
                self._close_chunk(reason)
                self._open_next()
            start = stop
        if self._buf and time.monotonic() - self._last_flush >= self.flush_interval:
            self._flush()

    def _room(self, keys: Sequence[int], caplens: Sequence[int], start: int) -> tuple[int, str]:
        """(index of the first record from `start` that must go to a new chunk, or len(keys); "size" or "time")."""
        n = len(keys)
        first_may_roll = start if self._packets else start + 1  # an empty chunk takes its first record
        if first_may_roll >= n:
            return n, ""
        stop, reason = n, ""
        room = self.max_bytes - self._bytes
        if RECORD_HEADER_LEN * (n - start) + sum(caplens[start:]) > room:
            used = 0
            for j in range(start, n):
                used += RECORD_HEADER_LEN + caplens[j]
                if used > room and j >= first_may_roll:
                    stop, reason = j, "size"
                    break
        if self._max_ns and first_may_roll < stop:
            first = self._first_raw if self._packets else _key_ns(keys[start])
            due = _key_at_least(first + self._max_ns)
            if max(keys[first_may_roll:stop]) >= due:
                stop = next(j for j in range(first_may_roll, stop) if keys[j] >= due)
                reason = "time"
        return stop, reason

    def _append_records(
        self, records: bytes, keys: Sequence[int], caplens: Sequence[int], a: int, b: int, pos: int
    ) -> int:
        """Copy records a..b-1 (starting at byte pos of records) into the chunk; returns the byte after them."""
        whole = a == 0 and b == len(keys)
        size = len(records) if whole else RECORD_HEADER_LEN * (b - a) + sum(caplens[a:b])
        at = self._bytes  # chunk offset of record a
        if whole:
            self._buf += records
        else:
            with memoryview(records) as view:
                self._buf += view[pos:pos + size]
        if not self._packets:
            self._first_raw = _key_ns(keys[a])
        self._last_raw = _key_ns(keys[b - 1])
        span = keys if whole else keys[a:b]
        if b - a == 1 or span == sorted(span):
            self._ordered_index(keys, caplens, a, b, at)
        else:
            self._unordered_index(keys, caplens, a, b, at)
        self._packets += b - a
        self._bytes += size
        if len(self._buf) >= self.flush_bytes:
            self._flush()
        return pos + size

    def _ordered_index(self, keys: Sequence[int], caplens: Sequence[int], a: int, b: int, at: int) -> None:
        """Seek points and time order of records in time order: bisect to each second instead of a loop."""
        if keys[a] < _key_at_least(self._top):
            self._unordered_index(keys, caplens, a, b, at)
            return
        self._top = _key_ns(keys[b - 1])
        j = bisect_left(keys, _key_at_least(self._next_seek), a, b)
        while j < b:
            ts = _key_ns(keys[j])
            self._seeks.append((ts, at + RECORD_HEADER_LEN * (j - a) + sum(caplens[a:j])))
            self._next_seek = ts + SEEK_INTERVAL_NS
            j = bisect_left(keys, _key_at_least(self._next_seek), j + 1, b)

    def _unordered_index(self, keys: Sequence[int], caplens: Sequence[int], a: int, b: int, at: int) -> None:
        """Seek points and the largest step back, record by record, as write_many keeps them."""
        seeks, next_seek, top, backstep = self._seeks, self._next_seek, self._top, self._backstep
        for j in range(a, b):
            ts = _key_ns(keys[j])
            if ts >= next_seek:
                seeks.append((ts, at))
                next_seek = ts + SEEK_INTERVAL_NS
            if ts >= top:
                top = ts
            elif top - ts > backstep:
                backstep = top - ts
            at += RECORD_HEADER_LEN + caplens[j]
        self._next_seek, self._top, self._backstep = next_seek, top, backstep

    def tick(self, now_ns: int) -> ChunkInfo | None:
        """Roll a chunk whose time is up although no packet came, and flush on wall time; call it ~1/s."""
        closed = None
        if (
            self._fd is not None
            and self._max_ns
            and self._packets
            and now_ns - self._first_raw >= self._max_ns
        ):
            closed = self._close_chunk("time")  # the next chunk opens with the next packet: no empty files
        elif self._buf and time.monotonic() - self._last_flush >= self.flush_interval:
            self._flush()
        return closed

    def flush(self) -> None:
        """Hand every pending record to the kernel now (survives SIGKILL, not a power cut)."""
        if self._buf:
            self._flush()

    def close(self, reason: str = "stop") -> ChunkInfo | None:
        """Close the open chunk (flush, fsync, hash, on_close); the writer accepts no more packets."""
        if reason not in CLOSE_REASONS:
            raise ValueError(f"close reason {reason!r} is not one of {sorted(CLOSE_REASONS)}")
        self._closed = True
        if self._fd is None:
            return None
        return self._close_chunk(reason)

    def __enter__(self) -> RollingPcapWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- chunk life cycle ------------------------------------------------------------------

    def _open_next(self) -> None:
        """Create the next free chunk name exclusively and write its header straight to the kernel."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(_MAX_NAME_ATTEMPTS):
            index = self._next_index
            self._next_index += 1
            path = self.folder / chunk_name(self.stem, index)
            try:
                fd = os.open(path, flags, 0o644)
            except FileExistsError:
                continue  # a file appeared after our scan: never overwrite, take the next number
            except OSError as exc:
                raise StorageError(f"{path}: cannot create capture chunk: {exc.strerror or exc}") from exc
            break
        else:
            raise StorageError(f"{self.folder}: no free chunk name for {self.stem} after {_MAX_NAME_ATTEMPTS} tries")
        self._fd, self._index, self.current = fd, index, path
        self._packets, self._bytes, self._first_raw, self._last_raw = 0, FILE_HEADER_LEN, 0, 0
        self._seeks, self._next_seek, self._top, self._backstep = [], 0, 0, 0
        self._hash = hashlib.sha256()
        self._buf.clear()
        self._buf += self._header
        self._flush()
        fsync_dir(self.folder)
        if self.on_open is not None:
            self.on_open(path)

    def _flush(self) -> None:
        """Write the pending bytes (whole records only, so SIGKILL never tears one) and hash them."""
        assert self._fd is not None
        done, total = 0, len(self._buf)
        try:
            with memoryview(self._buf) as view:
                while done < total:
                    done += os.write(self._fd, view[done:])
        except OSError as exc:
            raise StorageError(f"{self.current}: cannot write capture chunk: {exc.strerror or exc}") from exc
        self._hash.update(self._buf)
        self._buf.clear()
        self._last_flush = time.monotonic()

    def _close_chunk(self, reason: str) -> ChunkInfo:
        """Flush, fsync and describe the open chunk, then tell on_close."""
        assert self._fd is not None and self.current is not None
        fd, path = self._fd, self.current
        try:
            if self._buf:
                self._flush()
            os.fsync(fd)
        except OSError as exc:
            raise StorageError(f"{path}: cannot sync capture chunk: {exc.strerror or exc}") from exc
        finally:
            self._fd, self.current = None, None
            os.close(fd)
        div = self._divisor
        first = self._first_raw - self._first_raw % div if self._packets else None
        last = self._last_raw - self._last_raw % div if self._packets else None
        info = ChunkInfo(
            name=path.name,
            path=path,
            index=self._index,
            packets=self._packets,
            bytes=self._bytes,
            first_ns=first,
            last_ns=last,
            sha256=self._hash.hexdigest(),
            closed_reason=reason,
            seeks=tuple(self._seeks),
            backstep_ns=self._backstep,
        )
        self.chunks.append(info)
        if self.on_close is not None:
            self.on_close(info)
        return info
