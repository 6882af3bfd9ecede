"""Merge captures by time into one file, streaming, so a support engineer opens one pcap per call."""
from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from rtpcore.errors import InputError
from rtpcore.fsutil import atomic_output
from rtpcore.pcap.build import frame
from rtpcore.pcap.layers import link_payload
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.reader import CaptureReader, Frame, open_capture
from rtpcore.pcap.writer import DEFAULT_SNAPLEN, PcapWriter

__all__ = ["merge_captures"]

PCAP_MAGIC_NS = (b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1")
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

def _may_have_sub_us(path: Path) -> bool:
    """True for ns pcaps and for pcapng (whose interfaces may tick finer than 1 µs)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    return magic in PCAP_MAGIC_NS or magic == PCAPNG_MAGIC

def _records(reader: CaptureReader, out_linktype: int) -> Iterator[tuple[Frame, bytes, int]]:
    """(frame, bytes to write, wire length) in out_linktype; non-IP frames that cannot be re-framed are dropped."""
    for fr in reader:
        if fr.linktype == out_linktype:
            yield fr, fr.data, fr.orig_len
            continue
        l3 = link_payload(fr.linktype, fr.data)
        if l3 is None:
            continue
        try:
            data = frame(out_linktype, l3)
        except ValueError:
            continue        # IP header cut by the snaplen, or IPv6 for an IPv4-only link type
        yield fr, data, fr.orig_len + len(data) - len(fr.data)

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
        linktypes = {r.linktype for r in readers}
        out_linktype = linktypes.pop() if len(linktypes) == 1 else LINKTYPE_ETHERNET
        nanosecond = any(_may_have_sub_us(p) for p in paths)
        snaplen = max([DEFAULT_SNAPLEN, *(r.snaplen for r in readers)])
        streams = [_records(r, out_linktype) for r in readers]
        with atomic_output(output) as temp, PcapWriter(temp, out_linktype, snaplen=snaplen, nanosecond=nanosecond) as w:
            write = w.write
            for fr, data, orig_len in heapq.merge(*streams, key=lambda rec: rec[0].ts_ns):
                write(fr.ts_ns, data, orig_len)
            return w.packets
