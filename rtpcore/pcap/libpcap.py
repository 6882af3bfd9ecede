"""libpcap through ctypes: BPF compilation and C-speed filter-and-dump of large captures, no Python per packet."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rtpcore.errors import PcapError
from rtpcore.fsutil import atomic_output, new_temp

__all__ = [
    "FilterResult",
    "LibpcapError",
    "available",
    "compile_filter",
    "filter_file",
    "linktype_of",
    "version",
]

PCAP_ERRBUF_SIZE = 256
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
PCAP_TSTAMP_PRECISION_MICRO = 0
PCAP_TSTAMP_PRECISION_NANO = 1
PCAP_ERROR = -1
DEFAULT_SNAPLEN = 262144

_LIBRARY_NAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so", "libpcap.A.dylib", "/usr/lib/libpcap.A.dylib")
_NOT_FOUND = "libpcap not found: install libpcap (Debian: apt-get install libpcap0.8; macOS: it ships with the OS)"

# Capture files carry LINKTYPE_* numbers; libpcap handles speak DLT_* numbers, which differ for these
# platform-dependent values (LINKTYPE_RAW 101 is DLT_RAW 12 on Linux/macOS, 14 on OpenBSD).
_PLATFORM_DLT_NAMES: dict[int, str] = {
    100: "ATM_RFC1483",
    101: "RAW",
    102: "SLIP_BSDOS",
    103: "PPP_BSDOS",
    108: "LOOP",
    109: "ENC",
    258: "PKTAP",
}

_PCAPNG_SHB = 0x0A0D0D0A
_PCAP_FILE_HEADER_LEN = 24
_PCAP_RECORD_HEADER_LEN = 16
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\xa1\xb2\x3c\x4d": ">",
}


class LibpcapError(PcapError):
    """libpcap refused a file, a filter expression or an output; the message carries libpcap's own text."""


@dataclass(frozen=True, slots=True)
class FilterResult:
    """What filter_file kept, and whether the source ended badly (the packets before the damage are kept)."""

    packets_matched: int
    linktype: int
    snaplen: int
    src_error: str | None


class _BpfInsn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _BpfProgram(ctypes.Structure):
    _fields_ = [
        ("bf_len", ctypes.c_uint),
        ("bf_insns", ctypes.POINTER(_BpfInsn)),
    ]


# void (*pcap_handler)(u_char *user, const struct pcap_pkthdr *h, const u_char *bytes); the header is
# only passed through to pcap_dump, so its platform-dependent struct timeval layout never matters here.
PCAP_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)

_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "pcap_lib_version": (ctypes.c_char_p, []),
    "pcap_open_dead": (_P, [ctypes.c_int, ctypes.c_int]),
    "pcap_open_offline_with_tstamp_precision": (_P, [ctypes.c_char_p, ctypes.c_uint, ctypes.c_char_p]),
    "pcap_close": (None, [_P]),
    "pcap_geterr": (ctypes.c_char_p, [_P]),
    "pcap_datalink": (ctypes.c_int, [_P]),
    "pcap_snapshot": (ctypes.c_int, [_P]),
    "pcap_datalink_name_to_val": (ctypes.c_int, [ctypes.c_char_p]),
    "pcap_compile": (
        ctypes.c_int,
        [_P, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32],
    ),
    "pcap_freecode": (None, [ctypes.POINTER(_BpfProgram)]),
    "pcap_setfilter": (ctypes.c_int, [_P, ctypes.POINTER(_BpfProgram)]),
    "pcap_dispatch": (ctypes.c_int, [_P, ctypes.c_int, PCAP_HANDLER, _P]),
    "pcap_dump_open": (_P, [_P, ctypes.c_char_p]),
    "pcap_dump_flush": (ctypes.c_int, [_P]),
    "pcap_dump_close": (None, [_P]),
    "pcap_dump": (None, [_P, _P, _P]),
}


@functools.cache
def _load() -> ctypes.CDLL | None:
    """Load libpcap once per process and declare every signature (64-bit pointers must not be truncated to int)."""
    candidates = [name for name in (ctypes.util.find_library("pcap"),) if name] + list(_LIBRARY_NAMES)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            for fname, (restype, argtypes) in _SIGNATURES.items():
                func = getattr(lib, fname)
                func.restype = restype
                func.argtypes = argtypes
        except AttributeError:
            continue  # too old (pcap_open_offline_with_tstamp_precision is libpcap >= 1.5): try the next name
        return lib
    return None


def _lib() -> ctypes.CDLL:
    """The loaded library, or the install hint."""
    lib = _load()
    if lib is None:
        raise LibpcapError(_NOT_FOUND)
    return lib


def _text(raw: bytes | None) -> str:
    """libpcap's messages are in the locale's encoding; never let a stray byte hide one."""
    return (raw or b"").decode("utf-8", errors="replace").strip()


def available() -> bool:
    """Whether libpcap can be loaded here, so callers can fall back to the pure-Python reader."""
    return _load() is not None


def version() -> str:
    """libpcap's own version string, for logs and bug reports."""
    return _text(_lib().pcap_lib_version())


@functools.cache
def _dlt_maps() -> tuple[dict[int, int], dict[int, int]]:
    """LINKTYPE→DLT and DLT→LINKTYPE for the values that differ on this platform."""
    lib = _lib()
    to_dlt: dict[int, int] = {}
    for linktype, name in _PLATFORM_DLT_NAMES.items():
        dlt = lib.pcap_datalink_name_to_val(name.encode("ascii"))
        if dlt >= 0:
            to_dlt[linktype] = dlt
    return to_dlt, {dlt: linktype for linktype, dlt in to_dlt.items()}


def _to_dlt(linktype: int) -> int:
    return _dlt_maps()[0].get(linktype, linktype)


def _to_linktype(dlt: int) -> int:
    return _dlt_maps()[1].get(dlt, dlt)


def _compile(lib: ctypes.CDLL, handle: int, expression: str, optimize: bool) -> _BpfProgram:
    """pcap_compile for a handle; the caller owns the program and must pcap_freecode it."""
    program = _BpfProgram()
    source = expression.encode("utf-8")
    if lib.pcap_compile(handle, ctypes.byref(program), source, int(optimize), PCAP_NETMASK_UNKNOWN) == PCAP_ERROR:
        raise LibpcapError(f"filter {expression!r} does not compile: {_text(lib.pcap_geterr(handle))}")
    return program


def compile_filter(
    expression: str, *, linktype: int, snaplen: int = DEFAULT_SNAPLEN, optimize: bool = True
) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump expression to classic BPF for a link type (e.g. the filter an rpcapd must run)."""
    lib = _lib()
    handle = lib.pcap_open_dead(_to_dlt(linktype), snaplen)
    if not handle:
        raise LibpcapError(f"pcap_open_dead failed for link type {linktype}")
    try:
        program = _compile(lib, handle, expression, optimize)
        try:
            return [(i.code, i.jt, i.jf, i.k) for i in program.bf_insns[: program.bf_len]]
        finally:
            lib.pcap_freecode(ctypes.byref(program))
    finally:
        lib.pcap_close(handle)


def _open_offline(lib: ctypes.CDLL, src: Path, precision: int) -> int:
    """Open a pcap or pcapng file; libpcap's message names what is wrong with it."""
    errbuf = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
    handle = lib.pcap_open_offline_with_tstamp_precision(os.fsencode(src), precision, errbuf)
    if not handle:
        raise LibpcapError(f"{src}: cannot be read as a capture: {_text(errbuf.value)}")
    return handle


def linktype_of(src: Path) -> int:
    """The LINKTYPE_* number of a capture file (pcap or pcapng), as written in its header."""
    lib = _lib()
    handle = _open_offline(lib, Path(src), PCAP_TSTAMP_PRECISION_MICRO)
    try:
        return _to_linktype(lib.pcap_datalink(handle))
    finally:
        lib.pcap_close(handle)


def _count_records(path: Path) -> int:
    """Count the records of a classic pcap libpcap has just written, hopping over record headers only."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        order = _PCAP_MAGICS.get(data[:4]) if len(data) >= _PCAP_FILE_HEADER_LEN else None
        if order is None:
            raise LibpcapError(f"{path}: libpcap wrote no valid pcap header")
        caplen_at = struct.Struct(order + "I")
        count, offset, end = 0, _PCAP_FILE_HEADER_LEN, len(data)
        while offset + _PCAP_RECORD_HEADER_LEN <= end:
            offset += _PCAP_RECORD_HEADER_LEN + caplen_at.unpack_from(data, offset + 8)[0]
            count += 1
    if offset != end:
        raise LibpcapError(f"{path}: output ends inside a record after {count} packets")
    return count


def filter_file(src: Path, dst: Path, expression: str, *, nanosecond: bool = True, scratch: bool = False) -> FilterResult:
    """Copy the packets of `src` matching `expression` to the classic pcap `dst`; libpcap filters and writes in C.

    scratch: `dst` is the caller's scratch file, read back and removed at once: still written beside and renamed
    into place, but not forced to disk (fsync of the file and its folder: ~5 ms per raw file).
    """
    lib = _lib()
    src, dst = Path(src), Path(dst)
    precision = PCAP_TSTAMP_PRECISION_NANO if nanosecond else PCAP_TSTAMP_PRECISION_MICRO
    handle = _open_offline(lib, src, precision)
    try:
        linktype = _to_linktype(lib.pcap_datalink(handle))
        snaplen = lib.pcap_snapshot(handle)
        program = _compile(lib, handle, expression, optimize=True)
        try:
            if lib.pcap_setfilter(handle, ctypes.byref(program)) == PCAP_ERROR:
                raise LibpcapError(f"filter {expression!r} rejected: {_text(lib.pcap_geterr(handle))}")
        finally:
            lib.pcap_freecode(ctypes.byref(program))  # the handle keeps its own copy
        with _scratch_output(dst) if scratch else atomic_output(dst, overwrite=True) as temp:
            matched, read_error = _dump_matches(lib, handle, temp)
            if read_error is not None:
                # pcap_dispatch's count is lost when it fails midway: count what reached the (small) output.
                matched = _count_records(temp)
    finally:
        lib.pcap_close(handle)
    src_error = None
    if read_error is not None:
        src_error = f"{src}: truncated or corrupt after {matched} matching packets: {read_error}"
    return FilterResult(packets_matched=matched, linktype=linktype, snaplen=snaplen, src_error=src_error)


@contextmanager
def _scratch_output(dst: Path) -> Iterator[Path]:
    """atomic_output without forcing anything to disk: a fresh temp beside `dst`, renamed onto it on success."""
    temp = new_temp(dst.parent, dst.name)
    try:
        yield temp
        os.replace(temp, dst)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _dump_matches(lib: ctypes.CDLL, handle: int, out: Path) -> tuple[int, str | None]:
    """Run the savefile to EOF with pcap_dump itself as the callback; return (packets dumped, read error)."""
    dumper = lib.pcap_dump_open(handle, os.fsencode(out))
    if not dumper:
        raise LibpcapError(f"{out}: cannot write: {_text(lib.pcap_geterr(handle))}")
    matched = 0
    read_error: str | None = None
    try:
        callback = ctypes.cast(lib.pcap_dump, PCAP_HANDLER)
        while True:
            # On a savefile a count of -1 reads to EOF in one call and returns how many packets passed
            # the filter; loop anyway in case a build returns earlier.
            rc = lib.pcap_dispatch(handle, -1, callback, dumper)
            if rc == 0:
                break
            if rc < 0:
                read_error = _text(lib.pcap_geterr(handle)) or f"pcap_dispatch returned {rc}"
                break
            matched += rc
        if lib.pcap_dump_flush(dumper) == PCAP_ERROR:
            raise LibpcapError(f"{out}: write failed (disk full?)")
    finally:
        lib.pcap_dump_close(dumper)
    return matched, read_error
