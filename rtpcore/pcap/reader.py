"""Streaming reader for classic pcap and pcapng captures: bounded memory, large reads, no per-packet syscalls."""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from rtpcore.errors import PcapError, PcapFormatError, TruncatedCaptureError
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET

CHUNK_SIZE = 1 << 20
# Larger than any real record (libpcap allows 256 KiB, Wireshark 16 MiB blocks); past it a header is corrupt.
MAX_RECORD_BYTES = 1 << 24

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_KUZNETZOV = 0xA1B2CD34
PCAP_FILE_HEADER_LEN = 24
LINKTYPE_MASK = 0x03FFFFFF  # upper bits of the header's network field carry FCS information

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_PB = 0x00000002  # obsolete Packet Block
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_MIN_BLOCK_LEN = 12
EPB_MIN_LEN = 32
OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14
DEFAULT_TSRESOL = 6  # microseconds, when an IDB has no if_tsresol option

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured record, with the link type needed to decode it."""

    index: int
    ts_ns: int
    linktype: int
    data: bytes
    orig_len: int


@dataclass(frozen=True, slots=True)
class _Interface:
    """A pcapng interface: its link type, and ns = ((units * mul) >> shift) // div + offset_ns."""

    linktype: int
    snaplen: int
    mul: int
    shift: int
    div: int
    offset_ns: int


def _interface(linktype: int, snaplen: int, tsresol: int, tsoffset_s: int) -> _Interface:
    """Precompute integer scaling for an if_tsresol byte (MSB set: power of 2, else power of 10)."""
    offset_ns = tsoffset_s * NS_PER_S
    if tsresol & 0x80:
        return _Interface(linktype, snaplen, NS_PER_S, tsresol & 0x7F, 1, offset_ns)
    if tsresol <= 9:
        return _Interface(linktype, snaplen, 10 ** (9 - tsresol), 0, 1, offset_ns)
    return _Interface(linktype, snaplen, 1, 0, 10 ** (tsresol - 9), offset_ns)


class CaptureReader:
    """Iterate the records of a pcap/pcapng file in file order, reading it in 1 MiB chunks."""

    path: Path
    format: str
    linktype: int
    snaplen: int
    packets_read: int

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.packets_read = 0
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()/EOF
        except OSError as exc:
            raise PcapError(f"{self.path}: cannot open capture: {exc.strerror or exc}") from exc
        self._buf = b""
        self._pos = 0
        self._base = 0  # file offset of self._buf[0]
        self._eof = False
        self._interfaces: list[_Interface] = []
        self._endian = "<"
        try:
            self._read_preamble()
        except BaseException:
            self.close()
            raise
        self._records = self._iter_pcapng() if self.format == "pcapng" else self._iter_pcap()

    # -- context manager / iteration -------------------------------------------------------

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        return self._records

    def records(self) -> Iterator[tuple[int, int, bytes, int]]:
        """(ts_ns, linktype, data, orig_len) per record, instead of iterating: no Frame built per packet."""
        if self.format == "pcapng":
            return ((f.ts_ns, f.linktype, f.data, f.orig_len) for f in self._records)
        return self._iter_pcap_tuples()

    def close(self) -> None:
        """Release the file handle; iteration afterwards ends."""
        self._file.close()

    # -- buffer ----------------------------------------------------------------------------

    def _fill(self, need: int) -> int:
        """Make at least `need` bytes available at self._pos unless the file ends; return how many are."""
        avail = len(self._buf) - self._pos
        if avail >= need or self._eof:
            return avail
        parts = [self._buf[self._pos :]]
        self._base += self._pos
        self._pos = 0
        while avail < need:
            chunk = self._file.read(max(CHUNK_SIZE, need - avail))
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            avail += len(chunk)
        self._buf = b"".join(parts)
        return avail

    def _truncated(self, offset: int, need: int) -> TruncatedCaptureError:
        """Build the error for a record that runs past the end of the file."""
        end = self._base + len(self._buf)
        return TruncatedCaptureError(
            f"{self.path}: truncated after {self.packets_read} packets: the record at byte offset {offset} "
            f"needs {need} bytes but the file ends at {end}",
            packets_read=self.packets_read,
            offset=offset,
        )

    def _corrupt(self, offset: int, what: str) -> PcapFormatError:
        """Build the error for a header whose fields cannot be right."""
        return PcapFormatError(f"{self.path}: corrupt {self.format} {what} at byte offset {offset}")

    # -- file header -----------------------------------------------------------------------

    def _read_preamble(self) -> None:
        """Identify the format from the magic number and read the file/section header."""
        avail = self._fill(PCAP_FILE_HEADER_LEN)
        head = self._buf[:4]
        if avail == 0:
            raise PcapFormatError(f"{self.path}: empty file")
        if len(head) == 4 and struct.unpack("<I", head)[0] == PCAPNG_SHB:
            self.format = "pcapng"
            self._read_pcapng_preamble()
            return
        self.format = "pcap"
        magic_le = struct.unpack("<I", head)[0] if len(head) == 4 else None
        magic_be = struct.unpack(">I", head)[0] if len(head) == 4 else None
        magics = (PCAP_MAGIC_US, PCAP_MAGIC_NS, PCAP_MAGIC_KUZNETZOV)
        if magic_le in magics:
            self._endian, magic = "<", magic_le
        elif magic_be in magics:
            self._endian, magic = ">", magic_be
        else:
            raise PcapFormatError(
                f"{self.path}: not a pcap or pcapng file (starts with 0x{head.hex()}); "
                "save it from Wireshark as pcap or pcapng"
            )
        if avail < PCAP_FILE_HEADER_LEN:
            raise self._truncated(0, PCAP_FILE_HEADER_LEN)
        _, _, _, _, snaplen, network = struct.unpack_from(self._endian + "HHiIII", self._buf, 4)
        self._ts_mul = 1 if magic == PCAP_MAGIC_NS else 1000
        self._record_header = struct.Struct(self._endian + ("IIII8x" if magic == PCAP_MAGIC_KUZNETZOV else "IIII"))
        self.linktype = network & LINKTYPE_MASK
        self.snaplen = snaplen
        self._pos = PCAP_FILE_HEADER_LEN

    def _read_pcapng_preamble(self) -> None:
        """Read blocks up to the first interface description so linktype/snaplen are known."""
        self.linktype = LINKTYPE_ETHERNET  # until an IDB says otherwise (a section may have none)
        self.snaplen = 0
        while not self._interfaces:
            avail = self._fill(8)
            if avail == 0:
                return  # a section with no interface yet: nothing to read
            if avail < 8:
                raise self._truncated(self._base + self._pos, PCAPNG_MIN_BLOCK_LEN)
            btype = struct.unpack_from(self._endian + "I", self._buf, self._pos)[0]
            if btype in (PCAPNG_EPB, PCAPNG_SPB, PCAPNG_PB):
                raise self._corrupt(self._base + self._pos, "file: packet block before any interface description block")
            self._meta_block(self._block_length(btype))
        self.linktype, self.snaplen = self._interfaces[0].linktype, self._interfaces[0].snaplen

    # -- classic pcap ----------------------------------------------------------------------

    def _iter_pcap(self) -> Iterator[Frame]:
        """Classic pcap records as Frames; the reading itself is the tuple loop below."""
        try:
            for index, (ts_ns, linktype, data, orig_len) in enumerate(self._iter_pcap_tuples()):
                self.packets_read = index + 1
                yield Frame(index, ts_ns, linktype, data, orig_len)
        finally:
            self.close()

    def _iter_pcap_tuples(self) -> Iterator[tuple[int, int, bytes, int]]:
        """Classic pcap records as plain tuples; locals keep the per-packet path short (decrypt, merge, demux)."""
        unpack = self._record_header.unpack_from
        hlen = self._record_header.size
        ts_mul = self._ts_mul
        linktype = self.linktype
        count = self.packets_read
        try:
            while True:
                buf, pos = self._buf, self._pos
                if len(buf) - pos < hlen:
                    avail = self._fill(hlen)
                    if avail == 0:
                        return
                    if avail < hlen:
                        self.packets_read = count
                        raise self._truncated(self._base + self._pos, hlen)
                    buf, pos = self._buf, self._pos
                sec, frac, caplen, orig_len = unpack(buf, pos)
                end = pos + hlen + caplen
                if end > len(buf):
                    self.packets_read = count
                    if caplen > MAX_RECORD_BYTES:
                        raise self._corrupt(
                            self._base + pos,
                            f"record header: captured length {caplen} exceeds the {MAX_RECORD_BYTES}-byte limit",
                        )
                    if self._fill(hlen + caplen) < hlen + caplen:
                        raise self._truncated(self._base + self._pos, hlen + caplen)
                    buf, pos = self._buf, self._pos
                    end = pos + hlen + caplen
                self._pos = end
                count += 1
                yield sec * NS_PER_S + frac * ts_mul, linktype, buf[pos + hlen : end], orig_len
        finally:
            self.packets_read = count
            self.close()

    # -- pcapng ----------------------------------------------------------------------------

    def _block_length(self, btype: int) -> int:
        """Validate the block at self._pos, buffer all of it, and return its total length."""
        offset = self._base + self._pos
        if btype == PCAPNG_SHB:
            if self._fill(12) < 12:
                raise self._truncated(offset, 12)
            bom = self._buf[self._pos + 8 : self._pos + 12]
            if struct.unpack("<I", bom)[0] == PCAPNG_BYTE_ORDER_MAGIC:
                self._endian = "<"
            elif struct.unpack(">I", bom)[0] == PCAPNG_BYTE_ORDER_MAGIC:
                self._endian = ">"
            else:
                raise self._corrupt(offset, f"section header block: byte-order magic 0x{bom.hex()}")
        blen: int = struct.unpack_from(self._endian + "I", self._buf, self._pos + 4)[0]
        if blen < PCAPNG_MIN_BLOCK_LEN or blen % 4 or blen > MAX_RECORD_BYTES:
            raise self._corrupt(offset, f"block header: block type 0x{btype:08x} has total length {blen}")
        if self._fill(blen) < blen:
            raise self._truncated(offset, blen)
        trailer = struct.unpack_from(self._endian + "I", self._buf, self._pos + blen - 4)[0]
        if trailer != blen:
            raise self._corrupt(offset, f"block: leading length {blen} differs from trailing length {trailer}")
        return blen

    def _meta_block(self, blen: int) -> None:
        """Consume a non-packet block: a new section, an interface, or anything we skip (NRB, ISB, DSB, custom)."""
        buf, pos, e = self._buf, self._pos, self._endian
        btype = struct.unpack_from(e + "I", buf, pos)[0]
        if btype == PCAPNG_SHB:
            self._interfaces = []  # interface ids are per section
        elif btype == PCAPNG_IDB:
            if blen < 20:
                raise self._corrupt(self._base + pos, f"interface description block: total length {blen}")
            linktype, _, snaplen = struct.unpack_from(e + "HHI", buf, pos + 8)
            tsresol, tsoffset = DEFAULT_TSRESOL, 0
            opt, opt_end = pos + 16, pos + blen - 4
            while opt + 4 <= opt_end:
                code, length = struct.unpack_from(e + "HH", buf, opt)
                if code == OPT_ENDOFOPT or opt + 4 + length > opt_end:
                    break
                if code == OPT_IF_TSRESOL and length >= 1:
                    tsresol = buf[opt + 4]
                elif code == OPT_IF_TSOFFSET and length >= 8:
                    tsoffset = struct.unpack_from(e + "q", buf, opt + 4)[0]
                opt += 4 + (length + 3) // 4 * 4
            self._interfaces.append(_interface(linktype, snaplen, tsresol, tsoffset))
        self._pos = pos + blen

    def _iface(self, iface_id: int, offset: int) -> _Interface:
        """Look up an interface id, rejecting ids no IDB declared."""
        if iface_id < len(self._interfaces):
            return self._interfaces[iface_id]
        raise self._corrupt(
            offset, f"packet block: interface id {iface_id} but the section declares {len(self._interfaces)}"
        )

    def _iter_pcapng(self) -> Iterator[Frame]:
        """Yield pcapng packet records (EPB, SPB, obsolete PB) across sections and interfaces."""
        index = 0
        last_ts = 0
        endian = ""
        try:
            while True:
                if self._endian != endian:  # a new section may switch byte order
                    endian = self._endian
                    block_header = struct.Struct(endian + "II").unpack_from
                    epb_header = struct.Struct(endian + "IIIII").unpack_from
                    u32 = struct.Struct(endian + "I").unpack_from
                buf, pos = self._buf, self._pos
                if len(buf) - pos < 8:
                    avail = self._fill(8)
                    if avail == 0:
                        return
                    if avail < 8:
                        raise self._truncated(self._base + self._pos, PCAPNG_MIN_BLOCK_LEN)
                    buf, pos = self._buf, self._pos
                btype, blen = block_header(buf, pos)
                # Fast path: an EPB wholly in the buffer with sane lengths; anything else is validated slowly.
                if (
                    btype != PCAPNG_EPB
                    or blen < EPB_MIN_LEN
                    or blen & 3
                    or pos + blen > len(buf)
                    or u32(buf, pos + blen - 4)[0] != blen
                ):
                    blen = self._block_length(btype)
                    buf, pos = self._buf, self._pos
                if btype == PCAPNG_EPB:
                    iface_id, hi, lo, caplen, orig_len = epb_header(buf, pos + 8)
                    data_at = pos + 28
                elif btype == PCAPNG_SPB:
                    iface_id, hi, lo = 0, -1, 0
                    orig_len = u32(buf, pos + 8)[0]
                    snaplen = self._iface(0, self._base + pos).snaplen
                    caplen = min(orig_len, blen - 16, snaplen or orig_len)
                    data_at = pos + 12
                elif btype == PCAPNG_PB:
                    iface_id, _, hi, lo, caplen, orig_len = struct.unpack_from(endian + "HHIIII", buf, pos + 8)
                    data_at = pos + 28
                else:
                    self._meta_block(blen)
                    continue
                if data_at + caplen > pos + blen - 4:
                    raise self._corrupt(
                        self._base + pos, f"packet block: captured length {caplen} exceeds block length {blen}"
                    )
                iface = self._iface(iface_id, self._base + pos)
                # A Simple Packet Block has no timestamp: keep the previous one so time order holds.
                if hi >= 0:
                    last_ts = (((hi << 32 | lo) * iface.mul) >> iface.shift) // iface.div + iface.offset_ns
                self._pos = pos + blen
                index += 1
                self.packets_read = index
                yield Frame(index - 1, last_ts, iface.linktype, buf[data_at : data_at + caplen], orig_len)
        finally:
            self.close()


def open_capture(path: str | Path) -> CaptureReader:
    """Open a pcap or pcapng file for streaming; format errors surface here, truncation while iterating."""
    return CaptureReader(path)
