"""IPv4/IPv6 fragment reassembly with bounded state, because INVITEs over UDP are often fragmented."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from rtpcore.pcap.layers import IpPacket, ipv6_upper_layer

MAX_DATAGRAM_LEN = 65535  # without jumbograms, no reassembled payload can be longer
DEFAULT_TIMEOUT_NS = 30 * 10**9
DEFAULT_MAX_PENDING = 4096
MAX_PIECES = MAX_DATAGRAM_LEN // 8 + 1  # one per 8-byte offset; more means a flood of overlaps

_Key = tuple[int, str, str, int, int]


@dataclass(slots=True)
class _Pending:
    """The pieces of one datagram seen so far, in arrival order."""

    first_ts: int
    proto: int
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    total_len: int | None = None  # known once the piece without more-fragments arrives


class IpReassembler:
    """Rebuild fragmented IP datagrams; drops datagrams left incomplete after a timeout or past max_pending."""

    def __init__(self, timeout_ns: int = DEFAULT_TIMEOUT_NS, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if timeout_ns <= 0:
            raise ValueError(f"timeout_ns must be positive, got {timeout_ns}")
        if max_pending <= 0:
            raise ValueError(f"max_pending must be positive, got {max_pending}")
        self.timeout_ns = timeout_ns
        self.max_pending = max_pending
        self._pending: OrderedDict[_Key, _Pending] = OrderedDict()

    @property
    def pending(self) -> int:
        """How many datagrams are waiting for more fragments."""
        return len(self._pending)

    def feed(self, ip: IpPacket, ts_ns: int) -> IpPacket | None:
        """Return non-fragments as they are, the whole datagram on its last missing piece, else None."""
        if not ip.is_fragment:
            return ip
        self._expire(ts_ns)
        end = ip.frag_offset + len(ip.payload)
        if end > MAX_DATAGRAM_LEN:
            return None
        # IPv6 fragments of one datagram may in theory differ in next header; the ident alone keys them.
        key: _Key = (ip.version, ip.src, ip.dst, ip.proto if ip.version == 4 else -1, ip.ident)
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = _Pending(ts_ns, ip.proto)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
        if ip.frag_offset == 0:
            entry.proto = ip.proto  # the first fragment's next header is authoritative
        if not ip.more_fragments and entry.total_len is None:
            entry.total_len = end
        entry.pieces.append((ip.frag_offset, ip.payload))
        if len(entry.pieces) > MAX_PIECES:
            del self._pending[key]
            return None
        payload = self._assemble(entry)
        if payload is None:
            return None
        del self._pending[key]
        proto = entry.proto
        if ip.version == 6:
            upper = ipv6_upper_layer(proto, payload)
            if upper is None:
                return None
            proto, payload = upper
        return IpPacket(ip.version, ip.src, ip.dst, proto, payload, ip.ident, 0, False)

    def _expire(self, now_ns: int) -> None:
        """Drop datagrams whose first fragment is older than the timeout (oldest are first in the dict)."""
        while self._pending:
            key, entry = next(iter(self._pending.items()))
            if now_ns - entry.first_ts <= self.timeout_ns:
                return
            del self._pending[key]

    @staticmethod
    def _assemble(entry: _Pending) -> bytes | None:
        """Return the payload once the pieces cover [0, total_len); the earliest-received bytes win overlaps."""
        total = entry.total_len
        if total is None:
            return None
        covered = 0
        for offset, data in sorted(entry.pieces, key=lambda piece: piece[0]):
            if offset > covered:
                return None
            covered = max(covered, offset + len(data))
            if covered >= total:
                break
        if covered < total:
            return None
        out = bytearray(total)
        for offset, data in reversed(entry.pieces):
            chunk = data[: max(0, total - offset)]
            out[offset : offset + len(chunk)] = chunk
        return bytes(out)
