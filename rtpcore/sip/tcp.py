"""TCP stream reassembly for SIP: in-order bytes per direction, from whatever the capture caught."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from rtpcore.pcap.layers import TcpSegment

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
SEQ_MODULO = 1 << 32
SEQ_HALF = 1 << 31

DEFAULT_MAX_PENDING_BYTES = 256 * 1024   # out-of-order bytes held per stream before giving up a gap
DEFAULT_MAX_STREAMS = 65536

StreamKey = tuple[str, int, str, int]


@dataclass(slots=True)
class _Stream:
    """One direction: the next expected sequence number and the segments waiting for a gap."""

    next_seq: int
    isn: int | None = None
    pending: dict[int, bytes] = field(default_factory=dict)
    pending_bytes: int = 0
    fin_seq: int | None = None
    closed: bool = False


def _distance(seq: int, base: int) -> int:
    """Signed distance from base to seq in 32-bit sequence space (RFC 1982 style)."""
    delta = (seq - base) % SEQ_MODULO
    return delta - SEQ_MODULO if delta >= SEQ_HALF else delta


class TcpReassembler:
    """Per-direction in-order byte streams; retransmissions and overlaps dropped, out-of-order held."""

    def __init__(
        self,
        *,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()
        self._max_pending = max_pending_bytes
        self._max_streams = max_streams
        self.gaps = 0              # holes given up on (capture loss); the bytes after them are delivered
        self.gap_bytes = 0         # sequence space skipped over by those holes
        self.duplicate_bytes = 0   # retransmitted/overlapping bytes dropped

    def feed(self, seg: TcpSegment, ts_ns: int) -> list[tuple[int, bytes]]:
        """Add one segment; return the new in-order bytes it releases, stamped with its ts."""
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        stream = self._streams.get(key)
        if seg.flags & TCP_SYN:
            if stream is None or stream.closed or stream.isn != seg.seq:
                # A retransmitted SYN of the live connection must not rewind it.
                stream = _Stream(next_seq=(seg.seq + 1) % SEQ_MODULO, isn=seg.seq)
                self._store(key, stream)
            seq = (seg.seq + 1) % SEQ_MODULO
        else:
            seq = seg.seq
            if stream is None:
                # Mid-stream capture: the first segment seen defines the start.
                stream = _Stream(next_seq=seq)
                self._store(key, stream)
        if stream.closed:
            self.duplicate_bytes += len(seg.payload)
            return []
        if seg.flags & TCP_RST:
            stream.closed = True
            stream.pending.clear()
            stream.pending_bytes = 0
            return []
        if seg.flags & TCP_FIN:
            stream.fin_seq = (seq + len(seg.payload)) % SEQ_MODULO
        out = bytearray()
        if seg.payload:
            self._accept(stream, seq, seg.payload, out)
        self._drain(stream, out)
        if stream.fin_seq is not None and stream.next_seq == stream.fin_seq:
            stream.closed = True
        return [(ts_ns, bytes(out))] if out else []

    def _store(self, key: StreamKey, stream: _Stream) -> None:
        """Remember a stream, forgetting the least recently created one beyond the bound."""
        self._streams[key] = stream
        self._streams.move_to_end(key)
        while len(self._streams) > self._max_streams:
            self._streams.popitem(last=False)

    def _accept(self, stream: _Stream, seq: int, payload: bytes, out: bytearray) -> None:
        """Append in-order bytes, trim what was already delivered, hold what is ahead."""
        offset = _distance(seq, stream.next_seq)
        if offset <= 0:
            fresh = payload[-offset:] if -offset < len(payload) else b""
            self.duplicate_bytes += len(payload) - len(fresh)
            if fresh:
                out += fresh
                stream.next_seq = (stream.next_seq + len(fresh)) % SEQ_MODULO
            return
        held = stream.pending.get(seq)
        if held is not None and len(held) >= len(payload):
            self.duplicate_bytes += len(payload)
            return
        stream.pending_bytes += len(payload) - (len(held) if held else 0)
        stream.pending[seq] = payload
        if stream.pending_bytes > self._max_pending:
            # Capture loss: the hole will never fill, so resume at the earliest held segment.
            first = min(stream.pending, key=lambda s: _distance(s, stream.next_seq))
            self.gaps += 1
            self.gap_bytes += _distance(first, stream.next_seq)
            stream.next_seq = first

    def _drain(self, stream: _Stream, out: bytearray) -> None:
        """Release held segments that are now in order (or already covered)."""
        while stream.pending:
            ready = [s for s in stream.pending if _distance(s, stream.next_seq) <= 0]
            if not ready:
                return
            for seq in sorted(ready, key=lambda s: _distance(s, stream.next_seq)):
                payload = stream.pending.pop(seq)
                stream.pending_bytes -= len(payload)
                self._accept(stream, seq, payload, out)
