"""RPCAP packet messages → big-endian pcap records in a few C calls per batch (the capture's 100k pps path).

rpcap_pkthdr starts with ts_sec, ts_usec, caplen, len in network order: a big-endian pcap record header
as it stands, so a record is a message with its 8-byte rpcap_header and its 4-byte npkt cut out. scan()
finds the messages (equal-size runs by compiled structs, the rest one message at a time), checks every
header as PacketStreamParser does and leaves anything unusual to its exact per-message parse.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import repeat

__all__ = ["FRAME_LEN", "RecordBatch", "RemotePacket", "scan"]

# (ts_ns, caplen, orig_len, npkt, data): plain tuples, because this runs once per packet at 100k pps.
RemotePacket = tuple[int, int, int, int, bytes]

FRAME_LEN = 28                  # rpcap_header (8) + rpcap_pkthdr (20), as protocol.py lays them out
_PKTHDR_LEN = 20
_MSG_PACKET = 7                 # RPCAP_MSG_PACKET
# rpcap_header as a 64-bit word minus caplen for a plain packet: ver 0, PACKET, value 0, plen = 20 + caplen.
_PACKET_WORD = (_MSG_PACKET << 48) + _PKTHDR_LEN
_USEC_LIMIT = 1_000_000
_PREFIX = struct.Struct(">QQII")         # rpcap_header word, ts_sec << 32 | ts_usec, caplen, len
_GROUPS = (256, 16)                      # equal-size messages checked and cut per compiled struct
_WALK = 8 << 10                          # bytes walked message by message before equal sizes are tried again,
_WALK_MAX = 512 << 10                    # ... growing 8-fold up to this while sizes keep differing
_CUT_GROUP = 2048                        # messages per compiled cut struct on the walked path
_CACHE_LIMIT = 512


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Packets of one read as big-endian µs pcap records, then any `tail` the exact per-packet parse took.

    keys[i] is record i's ts_sec << 32 | ts_usec (ordered as its time, ts_usec < 10^6).
    """

    records: bytes
    keys: list[int]
    caplens: list[int]
    last_npkt: int
    tail: list[RemotePacket]

    @property
    def count(self) -> int:
        """Packets in the batch: the records and the tail."""
        return len(self.keys) + len(self.tail)


class _Structs(dict[tuple[str, int, int], struct.Struct]):
    """Compiled structs per (kind, caplen, count): "check" (word, key, caplen, len), "usec", "cut" (header, data)."""

    def __missing__(self, key: tuple[str, int, int]) -> struct.Struct:
        if len(self) >= _CACHE_LIMIT:  # bounded whatever sizes arrive
            self.clear()
        kind, caplen, count = key
        code = {"check": f"QQII4x{caplen}x", "usec": f"12xI{caplen + 12}x", "cut": f"8x16s4x{caplen}s"}[kind]
        compiled = self[key] = struct.Struct(">" + code * count)
        return compiled


class _CutCodes(dict[int, str]):
    """struct codes that cut one message into (record header, data), per caplen."""

    def __missing__(self, caplen: int) -> str:
        if len(self) >= 4096:
            self.clear()
        code = self[caplen] = f"8x16s4x{caplen}s"
        return code


_STRUCTS = _Structs()
_CUT_CODES = _CutCodes()


def scan(buf: bytes, max_caplen: int) -> tuple[int, list[int], list[int], bytes]:
    """(offset where plain complete messages end, keys, caplens, their records) from the start of buf."""
    keys: list[int] = []
    caplens: list[int] = []
    parts: list[bytes] = []
    total = len(buf)
    off = walked_at = walked_from = 0  # walked messages are cut together, from walked_at (message walked_from)
    walk = _WALK
    while True:
        done = len(caplens)
        groups: list[bytes] = []
        off = _equal_sizes(buf, off, total, max_caplen, keys, caplens, groups)
        if groups:
            if done > walked_from:
                parts.append(_cut(buf, walked_at, caplens[walked_from:done]))
            parts += groups
            walked_at, walked_from = off, len(caplens)
            walk = _WALK
        else:
            walk = min(8 * walk, _WALK_MAX)
        off, more = _walk(buf, off, total, keys, caplens, walk)
        if not more:
            break
    if len(caplens) > walked_from:
        parts.append(_cut(buf, walked_at, caplens[walked_from:]))
    return off, keys, caplens, b"".join(parts)


def _equal_sizes(buf: bytes, off: int, total: int, max_caplen: int, keys: list[int], caplens: list[int],
                 parts: list[bytes]) -> int:
    """Take groups of messages of the first one's size, each checked in bulk; returns where they end."""
    structs, word, prefix = _STRUCTS, _PACKET_WORD, _PREFIX.unpack_from
    while total - off >= FRAME_LEN:
        head, _, caplen, _ = prefix(buf, off)
        if head - caplen != word or caplen > max_caplen:
            return off
        size = FRAME_LEN + caplen
        for count in _GROUPS:
            end = off + count * size
            if end > total:
                continue
            last_head, _, last_caplen, _ = prefix(buf, end - size)
            if last_caplen != caplen or last_head != head:
                continue  # not one size all the way: a smaller group, or the walk
            fields = structs["check", caplen, count].unpack_from(buf, off)
            if (fields[0::4].count(head) != count or fields[2::4].count(caplen) != count
                    or min(fields[3::4]) < caplen
                    or max(structs["usec", caplen, count].unpack_from(buf, off)) >= _USEC_LIMIT):
                return off  # something odd inside: the walk finds it
            keys += fields[1::4]
            caplens += repeat(caplen, count)
            parts.append(b"".join(structs["cut", caplen, count].unpack_from(buf, off)))
            off = end
            break
        else:
            return off
    return off


def _walk(buf: bytes, off: int, total: int, keys: list[int], caplens: list[int], run: int) -> tuple[int, bool]:
    """Messages one by one for about `run` bytes; (where it stopped, True when equal sizes are worth another try)."""
    key_append, caplen_append = keys.append, caplens.append
    prefix, word, usec_limit, frame = _PREFIX.unpack_from, _PACKET_WORD, _USEC_LIMIT, FRAME_LEN
    end = min(total, off + run)
    window = buf if end == total else memoryview(buf)[:end]  # struct.error at its end stops the loop
    try:
        while True:
            head, key, caplen, length = prefix(window, off)
            if head - caplen != word or length < caplen or key & 0xFFFFFFFF >= usec_limit:
                return off, False
            key_append(key)
            caplen_append(caplen)
            off += frame + caplen
    except struct.error:  # fewer than 28 bytes left in the window
        pass
    if off > end:  # only the last message can run past the window: the next walk or read takes it
        off -= frame + caplens.pop()
        keys.pop()
    return off, end < total


def _cut(buf: bytes, off: int, caplens: list[int]) -> bytes:
    """The records of consecutive messages from off: rpcap_header and npkt cut out by compiled structs."""
    codes, compile_ = _CUT_CODES, struct.Struct
    parts = []
    for start in range(0, len(caplens), _CUT_GROUP):
        group = caplens[start:start + _CUT_GROUP]
        parts.append(b"".join(compile_(">" + "".join(map(codes.__getitem__, group))).unpack_from(buf, off)))
        off += FRAME_LEN * len(group) + sum(group)
    return parts[0] if len(parts) == 1 else b"".join(parts)
