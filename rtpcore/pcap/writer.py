"""Streaming pcap / pcapng writers: hundreds of MB of frames, one pack and two writes per frame."""
from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

__all__ = ["PcapWriter", "PcapngWriter", "DEFAULT_SNAPLEN", "RECORD_HEADER"]

DEFAULT_SNAPLEN = 262144
WRITE_BUFFER_SIZE = 1 << 20
BULK_RECORDS = 8192                              # records packed before one write in write_many

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_VERSION = (2, 4)
_PCAP_FILE_HEADER = struct.Struct("<IHHiIII")    # magic, major, minor, thiszone, sigfigs, snaplen, network
_PCAP_RECORD_HEADER = struct.Struct("<IIII")     # ts_sec, ts_frac, incl_len, orig_len
RECORD_HEADER = _PCAP_RECORD_HEADER              # for callers that pack records in bulk (PcapWriter.write_packed)

PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_EPB = 0x00000006
PCAPNG_OPT_END = 0
PCAPNG_OPT_IF_NAME = 2
PCAPNG_OPT_IF_TSRESOL = 9
PCAPNG_TSRESOL_NS = 9                            # 10^-9 s: timestamps stay exact integers of ts_ns
SECTION_LENGTH_UNKNOWN = -1
_EPB_HEADER = struct.Struct("<IIIIIII")          # type, total len, if id, ts high, ts low, cap len, orig len
_BLOCK_TRAILER = struct.Struct("<I")
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")   # indexed by len % 4

NS_PER_S = 1_000_000_000
NS_PER_US = 1_000


class _Sink:
    """Owns the buffered output and closes only a file it opened itself."""

    __slots__ = ("out", "_owned")

    def __init__(self, dest: str | Path | BinaryIO) -> None:
        self._owned = isinstance(dest, (str, Path))
        self.out: BinaryIO
        if isinstance(dest, (str, Path)):
            # open(buffering=N) gives a BufferedWriter with an N-byte buffer: few syscalls for small frames.
            self.out = open(dest, "wb", buffering=WRITE_BUFFER_SIZE)  # noqa: SIM115 - closed in close()
        else:
            self.out = dest

    def close(self) -> None:
        if self._owned:
            self.out.close()
        else:
            self.out.flush()


class PcapWriter:
    """Classic little-endian pcap, microsecond timestamps by default (every tool reads those)."""

    def __init__(
        self,
        dest: str | Path | BinaryIO,
        linktype: int,
        *,
        snaplen: int = DEFAULT_SNAPLEN,
        nanosecond: bool = False,
    ) -> None:
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"link type {linktype} is outside 0..65535")
        if snaplen <= 0:
            raise ValueError(f"snaplen must be positive, got {snaplen}")
        self.linktype = linktype
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self.packets = 0
        self.bytes_written = 0
        self._divisor = 1 if nanosecond else NS_PER_US
        self._sink = _Sink(dest)
        self._write = self._sink.out.write
        self._closed = False
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        header = _PCAP_FILE_HEADER.pack(magic, *PCAP_VERSION, 0, 0, snaplen, linktype)
        self._write(header)
        self.bytes_written = len(header)

    def write(self, ts_ns: int, data: bytes, orig_len: int | None = None) -> None:
        """Append one record; data longer than snaplen is cut, orig_len keeps the wire length."""
        if ts_ns < 0:
            raise ValueError(f"timestamp {ts_ns} ns is before 1970")
        incl = len(data)
        if orig_len is None or orig_len < incl:
            orig_len = incl
        if incl > self.snaplen:
            data = data[: self.snaplen]
            incl = self.snaplen
        sec, frac = divmod(ts_ns, NS_PER_S)
        self._write(_PCAP_RECORD_HEADER.pack(sec, frac // self._divisor, incl, orig_len))
        self._write(data)
        self.packets += 1
        self.bytes_written += _PCAP_RECORD_HEADER.size + incl

    def write_many(self, records: Iterable[tuple[int, bytes, int]]) -> None:
        """write() for many (ts_ns, data, orig_len) records, packed in bulk: same bytes, a fraction of the calls."""
        pack, snaplen, divisor = _PCAP_RECORD_HEADER.pack, self.snaplen, self._divisor
        packed: list[bytes] = []
        for ts_ns, data, orig_len in records:
            incl = len(data)
            if incl > snaplen or ts_ns < 0:  # write() cuts or refuses it
                self.write_packed(packed)
                packed.clear()
                self.write(ts_ns, data, orig_len)
                continue
            sec, frac = divmod(ts_ns, NS_PER_S)
            packed.append(pack(sec, frac // divisor, incl, orig_len if orig_len > incl else incl) + data)
            if len(packed) >= BULK_RECORDS:
                self.write_packed(packed)
                packed.clear()
        self.write_packed(packed)

    def write_packed(self, records: list[bytes]) -> None:
        """Append records already packed as RECORD_HEADER + data (ts_frac in this writer's unit, data ≤ snaplen)."""
        blob = b"".join(records)
        self._write(blob)
        self.packets += len(records)
        self.bytes_written += len(blob)

    def close(self) -> None:
        """Flush, and close the file only if this writer opened it."""
        if not self._closed:
            self._closed = True
            self._sink.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PcapngWriter:
    """pcapng for several link types in one file; ns resolution so timestamps round-trip exactly."""

    def __init__(self, dest: str | Path | BinaryIO) -> None:
        self.packets = 0
        self.bytes_written = 0
        self._snaplens: list[int] = []
        self._sink = _Sink(dest)
        self._write = self._sink.out.write
        self._closed = False
        body = struct.pack("<IHHq", PCAPNG_BYTE_ORDER_MAGIC, 1, 0, SECTION_LENGTH_UNKNOWN)
        self._block(PCAPNG_SHB, body)

    def _block(self, block_type: int, body: bytes) -> None:
        total = 12 + len(body)
        self._write(struct.pack("<II", block_type, total) + body + _BLOCK_TRAILER.pack(total))
        self.bytes_written += total

    def add_interface(self, linktype: int, *, snaplen: int = DEFAULT_SNAPLEN, name: str | None = None) -> int:
        """Declare an interface (IDB) and return its id for write(interface=...)."""
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"link type {linktype} is outside 0..65535")
        if snaplen < 0:
            raise ValueError(f"snaplen must not be negative, got {snaplen}")
        options = _option(PCAPNG_OPT_IF_TSRESOL, bytes([PCAPNG_TSRESOL_NS]))
        if name is not None:
            options += _option(PCAPNG_OPT_IF_NAME, name.encode("utf-8"))
        options += _option(PCAPNG_OPT_END, b"")
        self._block(PCAPNG_IDB, struct.pack("<HHI", linktype, 0, snaplen) + options)
        self._snaplens.append(snaplen)
        return len(self._snaplens) - 1

    def write(self, ts_ns: int, data: bytes, *, interface: int = 0, orig_len: int | None = None) -> None:
        """Append one Enhanced Packet Block, cut to the interface's snaplen (0 means unlimited)."""
        if not 0 <= interface < len(self._snaplens):
            raise ValueError(f"interface {interface} was not added (have {len(self._snaplens)})")
        if ts_ns < 0:
            raise ValueError(f"timestamp {ts_ns} ns is before 1970")
        incl = len(data)
        if orig_len is None or orig_len < incl:
            orig_len = incl
        snaplen = self._snaplens[interface]
        if snaplen and incl > snaplen:
            data = data[:snaplen]
            incl = snaplen
        pad = _PADDING[incl & 3]
        total = _EPB_HEADER.size + incl + len(pad) + _BLOCK_TRAILER.size
        self._write(_EPB_HEADER.pack(PCAPNG_EPB, total, interface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, incl, orig_len))
        self._write(data + pad + _BLOCK_TRAILER.pack(total))
        self.packets += 1
        self.bytes_written += total

    def close(self) -> None:
        """Flush, and close the file only if this writer opened it."""
        if not self._closed:
            self._closed = True
            self._sink.close()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _option(code: int, value: bytes) -> bytes:
    """One pcapng option: code, length, value padded to 32 bits."""
    return struct.pack("<HH", code, len(value)) + value + _PADDING[len(value) & 3]
