"""Flow summaries of pcap chunks: which UDP address:port pairs a chunk's bytes hold, so a later call skips hosts.

Kept at capture time it cost +7 % CPU at 100k pps (bench/RESULTS.md, `session`), so it is built lazily: when
a correlation reads byte ranges of a chunk, the filter step summarizes those same ranges (one Python pass over
the records, the demux's own parsing) and caches `<chunk>.flows.json` beside the chunk (or the S3 object).
A summary says which byte ranges it covers; a later correlation trusts it only for ranges inside them, and
only while the chunk is the one it describes (size + mtime locally, size + ETag in S3) — anything else is
ignored with a warning and rebuilt.
"""
from __future__ import annotations

import json
import mmap
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtpcore.pcap.index import FILE_HEADER_LEN, RECORD_HEADER_LEN, IndexProblem, _header, read_sidecar, write_sidecar
from rtpcore.pcap.layers import ETH_HEADER_LEN, SLL2_HEADER_LEN, SLL_HEADER_LEN, link_payload, parse_ip, parse_udp
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW

__all__ = [
    "FLOWS_SUFFIX",
    "FlowSummary",
    "FlowProblem",
    "covers",
    "flows_path",
    "local_identity",
    "read_summary",
    "subtract_spans",
    "summarize",
    "write_summary",
]

FLOWS_SUFFIX = ".flows.json"
FLOWS_VERSION = 1
NS_PER_S = 10**9

Span = tuple[int, int]
Endpoint = tuple[str, int]
FlowKey = tuple[str, int, str, int]   # src ip, src port, dst ip, dst port (ip as the demux's routing spells it)

# The demux's fast path (rtpcore.media.demux._route): IPv4 without options carrying UDP, by its raw bytes;
# everything else is parsed by rtpcore.pcap.layers like the demux does, so every packet the demux could route
# has its flow here. Per link type one struct from the frame's start: the ethertype that must say IPv4 (none
# on raw IP), IPv4 ver/IHL+TOS, total length, flags+offset, TTL+protocol, addresses+ports, UDP length.
_IP_FIELDS = "HH2xHH2x12sH"
_FAST_LINKS: dict[int, tuple[struct.Struct, bool, int]] = {   # link type → (struct, has ethertype, IP offset)
    LINKTYPE_ETHERNET: (struct.Struct(f"!{ETH_HEADER_LEN - 2}xH{_IP_FIELDS}"), True, ETH_HEADER_LEN),
    LINKTYPE_LINUX_SLL: (struct.Struct(f"!{SLL_HEADER_LEN - 2}xH{_IP_FIELDS}"), True, SLL_HEADER_LEN),
    LINKTYPE_LINUX_SLL2: (struct.Struct(f"!H{SLL2_HEADER_LEN - 2}x{_IP_FIELDS}"), True, SLL2_HEADER_LEN),
    LINKTYPE_RAW: (struct.Struct(f"!{_IP_FIELDS}"), False, 0),
    LINKTYPE_IPV4: (struct.Struct(f"!{_IP_FIELDS}"), False, 0),
}
_ETHERTYPE_IPV4 = 0x0800
_IPV4_NO_OPTIONS, _IPPROTO_UDP, _FRAGMENT_BITS, _IPV4_HEADER_LEN, _UDP_HEADER_LEN = 0x45, 17, 0x3FFF, 20, 8
_KEY = struct.Struct("!4s4sHH")


class FlowProblem(IndexProblem):
    """A summary that cannot be used (torn, foreign, stale): the message names the file and why."""


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """Per-direction UDP flows (packets, first/last ns) in the byte ranges `covered` of one chunk."""

    chunk: str
    identity: dict[str, Any]              # what the chunk was: {"bytes", "mtime_ns"} or {"bytes", "etag"}
    covered: tuple[Span, ...]             # record-aligned byte ranges of the chunk this summary has read
    flows: dict[FlowKey, tuple[int, int, int]]
    other: int = 0                        # records that are no UDP the demux could route (not summarized)

    def endpoints(self) -> set[Endpoint]:
        """Every address:port that sent or received a summarized packet."""
        out: set[Endpoint] = set()
        for src, sport, dst, dport in self.flows:
            out.add((src, sport))
            out.add((dst, dport))
        return out

    def touching(self, endpoints: Iterable[Endpoint]) -> list[tuple[FlowKey, tuple[int, int, int]]]:
        """The flows with one of `endpoints` on either side (any peer: the learned-peer rule)."""
        wanted = set(endpoints)
        return [(k, v) for k, v in self.flows.items() if (k[0], k[1]) in wanted or (k[2], k[3]) in wanted]

    def merged(self, other: FlowSummary) -> FlowSummary:
        """This summary plus one of other (disjoint) ranges of the same chunk."""
        flows = dict(self.flows)
        for key, (n, first, last) in other.flows.items():
            had = flows.get(key)
            flows[key] = (n, first, last) if had is None else (had[0] + n, min(had[1], first), max(had[2], last))
        return FlowSummary(self.chunk, other.identity, _union([*self.covered, *other.covered]), flows,
                           self.other + other.other)

    def to_json(self) -> dict[str, Any]:
        return {"version": FLOWS_VERSION, "chunk": self.chunk, "identity": self.identity,
                "covered": [list(s) for s in self.covered], "other": self.other,
                "flows": [[*k, *v] for k, v in sorted(self.flows.items())]}

    @classmethod
    def from_json(cls, doc: object) -> FlowSummary:
        """The summary of a decoded file; ValueError names what is wrong."""
        if not isinstance(doc, dict) or doc.get("version") != FLOWS_VERSION:
            raise ValueError(f"not a version {FLOWS_VERSION} flow summary")
        identity = doc.get("identity")
        if not isinstance(identity, dict) or not isinstance(identity.get("bytes"), int):
            raise ValueError("identity missing")
        covered = tuple((int(b), int(e)) for b, e in doc["covered"])
        if any(e <= b or b < FILE_HEADER_LEN for b, e in covered):
            raise ValueError("a covered range is empty or inside the file header")
        flows: dict[FlowKey, tuple[int, int, int]] = {}
        for row in doc["flows"]:
            src, sport, dst, dport, n, first, last = row
            if not (isinstance(src, str) and isinstance(dst, str)):
                raise ValueError(f"flow {row!r}: addresses must be text")
            flows[(src, int(sport), dst, int(dport))] = (int(n), int(first), int(last))
        return cls(str(doc["chunk"]), identity, covered, flows, int(doc.get("other", 0)))


def _union(spans: Iterable[Span]) -> tuple[Span, ...]:
    merged: list[Span] = []
    for b, e in sorted(spans):
        if merged and b <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((b, e))
    return tuple(merged)


def subtract_spans(spans: Sequence[Span], covered: Sequence[Span]) -> tuple[Span, ...]:
    """The parts of spans outside covered (both sorted, non-overlapping)."""
    out: list[Span] = []
    for b, e in spans:
        cur = b
        for cb, ce in covered:
            if ce <= cur or cb >= e:
                continue
            if cb > cur:
                out.append((cur, cb))
            cur = max(cur, ce)
        if cur < e:
            out.append((cur, e))
    return tuple(out)


def covers(summary: FlowSummary, spans: Sequence[Span]) -> bool:
    """True when every byte of spans was summarized."""
    return not subtract_spans(_union(spans), summary.covered)


def flows_path(chunk: Path) -> Path:
    """The summary of a chunk: <chunk>.flows.json in the same folder."""
    chunk = Path(chunk)
    return chunk.with_name(chunk.name + FLOWS_SUFFIX)


def local_identity(chunk: Path) -> dict[str, Any]:
    """What a local chunk is now: size and modification time (a rewritten or repaired chunk changes both)."""
    st = os.stat(chunk)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_summary(summary: FlowSummary, path: Path) -> Path:
    """Write atomically: a reader sees the old summary, the new one or none."""
    return write_sidecar(summary.to_json(), path)


def read_summary(path: Path, chunk_name: str, identity: dict[str, Any]) -> FlowSummary | None:
    """The summary at path; None when there is none; FlowProblem when it is unreadable or describes another chunk."""
    raw = read_sidecar(path, FlowProblem, "unreadable flow summary")
    return None if raw is None else parse_summary(raw, str(path), chunk_name, identity)


def parse_summary(raw: bytes, where: str, chunk_name: str, identity: dict[str, Any]) -> FlowSummary:
    """A summary from its bytes, checked against the chunk as it is now; FlowProblem says why not."""
    try:
        summary = FlowSummary.from_json(json.loads(raw))
    except (ValueError, TypeError, KeyError) as exc:
        raise FlowProblem(f"{where}: corrupt flow summary ({exc})") from None
    if summary.chunk != chunk_name:
        raise FlowProblem(f"{where}: describes {summary.chunk}, not {chunk_name}")
    if summary.identity != identity:
        raise FlowProblem(f"{where}: stale flow summary (it describes {_shown(summary.identity)}, the chunk is now "
                          f"{_shown(identity)})")
    return summary


def _shown(identity: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(identity.items()))


def summarize(path: Path, spans: Sequence[Span] | None, *, chunk: str, identity: dict[str, Any],
              covered: Sequence[Span] | None = None) -> FlowSummary:
    """One pass over the records in `spans` of the classic pcap at path (None: all of it).

    covered: the chunk's byte ranges these spans are (an S3 part file holds the chunk's ranges back to back);
    by default the spans themselves.
    """
    path = Path(path)
    size = path.stat().st_size
    raw: dict[bytes, list[int]] = {}
    text: dict[FlowKey, list[int]] = {}
    other = 0
    if size > FILE_HEADER_LEN:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            order, unit = _header(data, path)
            linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF
            todo = [(FILE_HEADER_LEN, size)] if spans is None else list(spans)
            for begin, end in todo:
                other += _scan(data, order, unit, linktype, begin, min(end, size), raw, text)
    flows: dict[FlowKey, tuple[int, int, int]] = {}
    for key, (n, first, last) in raw.items():
        a, b, sport, dport = _KEY.unpack(key)
        flows[(socket.inet_ntoa(a), sport, socket.inet_ntoa(b), dport)] = (n, first, last)
    for tkey, (n, first, last) in text.items():
        had = flows.get(tkey)
        flows[tkey] = (n, first, last) if had is None else (had[0] + n, min(had[1], first), max(had[2], last))
    done = covered if covered is not None else (spans if spans is not None else [(FILE_HEADER_LEN, size)])
    return FlowSummary(chunk, identity, _union(s for s in done if s[1] > s[0]), flows, other)


def _scan(data: mmap.mmap, order: str, unit: int, linktype: int, offset: int, end: int,
          raw: dict[bytes, list[int]], text: dict[FlowKey, list[int]]) -> int:
    """Count the records in [offset, end) into raw (fast path) and text flows; returns the records not UDP."""
    header = struct.Struct(order + "III").unpack_from
    fast = _FAST_LINKS.get(linktype)
    layout, typed, o = fast if fast is not None else (_FAST_LINKS[LINKTYPE_RAW][0], False, 0)
    fields = layout.unpack_from
    need = layout.size if fast is not None else 1 << 62
    other = 0
    while offset + RECORD_HEADER_LEN <= end:
        sec, frac, incl = header(data, offset)
        start = offset + RECORD_HEADER_LEN
        stop = start + incl
        if stop > end:
            break  # torn tail
        offset = stop
        ts = sec * NS_PER_S + frac * unit
        if incl >= need:
            if typed:
                et, w0, total, frag, w4, key, udp_len = fields(data, start)
            else:
                w0, total, frag, w4, key, udp_len = fields(data, start)
                et = _ETHERTYPE_IPV4
            if (et == _ETHERTYPE_IPV4 and w0 >> 8 == _IPV4_NO_OPTIONS and w4 & 0xFF == _IPPROTO_UDP
                    and not frag & _FRAGMENT_BITS and _IPV4_HEADER_LEN <= total <= incl - o
                    and _UDP_HEADER_LEN <= udp_len <= total - _IPV4_HEADER_LEN):
                flow = raw.get(key)
                if flow is None:
                    raw[key] = [1, ts, ts]
                else:
                    flow[0] += 1
                    if ts > flow[2]:
                        flow[2] = ts
                    elif ts < flow[1]:
                        flow[1] = ts
                continue
        l3 = link_payload(linktype, data[start:stop])
        ip = parse_ip(l3) if l3 else None
        udp = parse_udp(ip) if ip else None
        if udp is None:
            other += 1
            continue
        tkey = (udp.src, udp.sport, udp.dst, udp.dport)
        tflow = text.get(tkey)
        if tflow is None:
            text[tkey] = [1, ts, ts]
        else:
            tflow[0] += 1
            tflow[1], tflow[2] = min(tflow[1], ts), max(tflow[2], ts)
    return other
