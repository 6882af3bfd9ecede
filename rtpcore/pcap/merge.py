"""Merge captures by time into one file, streaming, so a support engineer opens one pcap per call."""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from itertools import chain
from operator import itemgetter
from pathlib import Path

from rtpcore.errors import InputError
from rtpcore.fsutil import atomic_output
from rtpcore.pcap.build import frame
from rtpcore.pcap.layers import link_payload
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.reader import CaptureReader, open_capture
from rtpcore.pcap.writer import DEFAULT_SNAPLEN, RECORD_HEADER, PcapWriter

__all__ = ["common_linktype", "merge_captures"]

PCAP_MAGIC_NS = (b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1")
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
IN_MEMORY_BYTES = 256 << 20     # inputs up to this size are merged in memory; larger ones stream
PCAP_FILE_HEADER_LEN = 24
LE_MAGIC_US, LE_MAGIC_NS = b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"   # little-endian classic pcap, as we write it
NS_PER_S = 1_000_000_000
US_PER_S = 1_000_000
NS_PER_US = 1_000

def common_linktype(linktypes: Iterable[int]) -> int:
    """The one link type several captures share, or Ethernet when they differ (frames are then re-framed)."""
    kinds = set(linktypes)
    return kinds.pop() if len(kinds) == 1 else LINKTYPE_ETHERNET


def _may_have_sub_us(path: Path) -> bool:
    """True for ns pcaps and for pcapng (whose interfaces may tick finer than 1 µs)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    return magic in PCAP_MAGIC_NS or magic == PCAPNG_MAGIC

def _records(reader: CaptureReader, out_linktype: int) -> Iterator[tuple[int, bytes, int]]:
    """(ts_ns, bytes to write, wire length) in out_linktype; non-IP frames that cannot be re-framed are dropped."""
    for ts_ns, linktype, data, orig_len in reader.records():
        if linktype == out_linktype:
            yield ts_ns, data, orig_len
            continue
        l3 = link_payload(linktype, data)
        if l3 is None:
            continue
        try:
            framed = frame(out_linktype, l3)
        except ValueError:
            continue        # IP header cut by the snaplen, or IPv6 for an IPv4-only link type
        yield ts_ns, framed, orig_len + len(framed) - len(data)


def _same_link(reader: CaptureReader, out_linktype: int) -> Iterator[tuple[int, bytes, int]]:
    """_records for a classic pcap already in out_linktype: nothing to re-frame."""
    return ((ts_ns, data, orig_len) for ts_ns, _, data, orig_len in reader.records())


def _in_order(streams: list[Iterator[tuple[int, bytes, int]]]) -> Iterable[tuple[int, bytes, int]]:
    """The k-way merge of small inputs: a stable sort of their time-ordered runs gives the same order at C speed."""
    lists = [list(s) for s in streams]
    key = itemgetter(0)
    for records in lists:
        times = [r[0] for r in records]
        if times != sorted(times):
            return heapq.merge(*lists, key=key)     # an input out of time order: merge exactly as streaming would
    return sorted(chain.from_iterable(lists), key=key)


def merge_captures(inputs: Sequence[Path], output: Path) -> int:
    """k-way merge by timestamp (ties keep input order) into a classic pcap; returns packets written.

    One shared link type is kept; mixed link types are re-framed to Ethernet (non-IP frames from
    non-Ethernet inputs are dropped). Timestamps are written in µs unless an input is a ns pcap or a
    pcapng, which may carry sub-µs times: then the output is a ns pcap so no timestamp is rounded.
    """
    if not inputs:
        raise InputError("merge needs at least one input capture")
    paths = [Path(p) for p in inputs]
    with ExitStack() as stack:
        readers = [stack.enter_context(open_capture(p)) for p in paths]
        out_linktype = common_linktype(r.linktype for r in readers)
        nanosecond = any(_may_have_sub_us(p) for p in paths)
        snaplen = max([DEFAULT_SNAPLEN, *(r.snaplen for r in readers)])
        streams = [
            _same_link(r, out_linktype) if r.format == "pcap" and r.linktype == out_linktype else _records(r, out_linktype)
            for r in readers
        ]
        small = sum(p.stat().st_size for p in paths) <= IN_MEMORY_BYTES
        verbatim = _verbatim(paths, nanosecond, snaplen) if small and all(
            r.format == "pcap" and r.linktype == out_linktype for r in readers) else None
        with atomic_output(output) as temp, PcapWriter(temp, out_linktype, snaplen=snaplen, nanosecond=nanosecond) as w:
            if verbatim is not None:
                w.write_packed([record for _, record in _in_order_lists(verbatim)])
            else:
                w.write_many(_in_order(streams) if small else heapq.merge(*streams, key=itemgetter(0)))
            return w.packets


def _verbatim(paths: Sequence[Path], nanosecond: bool, snaplen: int) -> list[list[tuple[int, bytes]]] | None:
    """Each input's (ts_ns, record as the writer would write it), or None when one needs the general path.

    For little-endian classic pcaps whose records the writer would not change (time fraction in range,
    orig_len ≥ incl_len ≤ snaplen) the record bytes are copied as they are (a µs record into a ns output
    only gets its fraction scaled): no per-record parse into frames and re-pack, the same output bytes.
    """
    out: list[list[tuple[int, bytes]]] = []
    unpack, pack = RECORD_HEADER.unpack_from, RECORD_HEADER.pack
    hlen = RECORD_HEADER.size
    for path in paths:
        data = path.read_bytes()
        magic = data[:4]
        if magic not in (LE_MAGIC_US, LE_MAGIC_NS):
            return None
        ns_in = magic == LE_MAGIC_NS
        unit, mul, rescale = (NS_PER_S, 1, False) if ns_in else (US_PER_S, NS_PER_US, nanosecond)
        records: list[tuple[int, bytes]] = []
        append = records.append
        pos, size = PCAP_FILE_HEADER_LEN, len(data)
        while pos < size:
            if pos + hlen > size:
                return None                              # truncated: the reader says where
            sec, frac, incl, orig = unpack(data, pos)
            end = pos + hlen + incl
            if end > size or frac >= unit or orig < incl or incl > snaplen:
                return None
            if rescale:
                append((sec * NS_PER_S + frac * mul, pack(sec, frac * mul, incl, orig) + data[pos + hlen:end]))
            else:
                append((sec * NS_PER_S + frac * mul, data[pos:end]))
            pos = end
        out.append(records)
    return out


def _in_order_lists(lists: list[list[tuple[int, bytes]]]) -> Iterable[tuple[int, bytes]]:
    """_in_order for lists already read: a stable sort of time-ordered runs, else the exact k-way merge."""
    key = itemgetter(0)
    for records in lists:
        times = [r[0] for r in records]
        if times != sorted(times):
            return heapq.merge(*lists, key=key)
    return sorted(chain.from_iterable(lists), key=key)
