"""RPCAP framing, sans-I/O: the control connection's bytes into Messages, the data channel's into packets.

State machines in the h11 manner: bytes are fed in, complete units come out, a partial unit is held back
until the rest arrives; nothing here touches a socket.
"""
from __future__ import annotations

import struct

from rtpcore.rpcap.protocol import (
    HEADER_LEN,
    MAXIMUM_SNAPLEN,
    PACKET_HEADER_LEN,
    RPCAP_MSG_PACKET,
    Header,
    Message,
    message_type_name,
)
from rtpcore.rpcap.records import RecordBatch, RemotePacket, scan

__all__ = ["ControlReader", "PacketStreamParser"]

_PACKET_FRAME = struct.Struct(">BBHIIIIII")  # rpcap_header + rpcap_pkthdr, parsed in one call
_NPKT = struct.Struct(">I")


class ControlReader:
    """Frames control-connection bytes into Messages; holds back a partial one until the rest arrives."""

    __slots__ = ("_buf", "max_payload")

    def __init__(self, max_payload: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self.max_payload = max_payload

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes are fed."""
        if len(self._buf) < HEADER_LEN:
            return None
        header = Header.decode(self._buf)
        if header.plen > self.max_payload:
            raise ValueError(
                f"RPCAP {message_type_name(header.type)} announces a {header.plen}-byte payload"
                f" (limit {self.max_payload}): not an RPCAP stream or out of sync"
            )
        end = HEADER_LEN + header.plen
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER_LEN:end])
        del self._buf[:end]
        return Message(header, payload)


class PacketStreamParser:
    """Splits the TCP data channel into packets, many RPCAP_MSG_PACKET messages per feed, keeping a partial tail.

    rpcapd 1.10 writes plen as (uint16)(20 + caplen), so packets over 65515 bytes arrive with a
    wrapped plen; the header's caplen is authoritative when plen is that wrapped value.
    """

    __slots__ = ("_pending", "max_caplen", "packets", "bytes_fed")

    def __init__(self, max_caplen: int = MAXIMUM_SNAPLEN) -> None:
        self._pending = b""
        self.max_caplen = max_caplen
        self.packets = 0
        self.bytes_fed = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[RemotePacket]:
        """Every complete packet of the stream so far, one tuple each (the per-record path)."""
        return self._exact(self._take(data), 0)

    def feed_records(self, data: bytes | bytearray | memoryview) -> RecordBatch:
        """The same packets as feed() as one RecordBatch; a message that is not a plain PACKET ends the fast walk."""
        buf = self._take(data)
        total = len(buf)
        off, keys, caplens, records = scan(buf, self.max_caplen)
        if caplens and max(caplens) > self.max_caplen:
            return RecordBatch(b"", [], [], 0, self._exact(buf, 0))  # the exact parse names the culprit
        tail = self._exact(buf, off) if off < total else []
        if not keys:
            return RecordBatch(b"", keys, caplens, 0, tail)
        self.packets += len(keys)
        npkt = _NPKT.unpack_from(buf, off - caplens[-1] - 4)[0]
        return RecordBatch(records, keys, caplens, npkt, tail)

    def _take(self, data: bytes | bytearray | memoryview) -> bytes:
        """The held-back partial message followed by the new bytes."""
        self.bytes_fed += len(data)
        buf = self._pending + data if self._pending else data
        self._pending = b""
        return buf if isinstance(buf, bytes) else bytes(buf)

    def _exact(self, buf: bytes, off: int) -> list[RemotePacket]:
        """Parse from `off` one message at a time, checking each; keeps the partial tail for the next feed."""
        total = len(buf)
        frame = _PACKET_FRAME.size
        unpack_from = _PACKET_FRAME.unpack_from
        out: list[RemotePacket] = []
        append = out.append
        while total - off >= frame:
            _, msg_type, _, plen, sec, usec, caplen, length, npkt = unpack_from(buf, off)
            if msg_type != RPCAP_MSG_PACKET or caplen > self.max_caplen:
                self._pending = b""
                raise self._desync(buf, off, msg_type, caplen)
            if plen != caplen + PACKET_HEADER_LEN and plen != (caplen + PACKET_HEADER_LEN) & 0xFFFF:
                self._pending = b""
                raise ValueError(
                    f"RPCAP packet {npkt}: plen {plen} does not match caplen {caplen} + {PACKET_HEADER_LEN}"
                    f" (data channel out of sync at byte {self.bytes_fed - total + off})"
                )
            end = off + frame + caplen
            if end > total:
                break
            append((sec * 1_000_000_000 + usec * 1000, caplen, length, npkt, buf[off + frame : end]))
            off = end
        self._pending = buf[off:] if off < total else b""
        self.packets += len(out)
        return out

    def _desync(self, buf: bytes, off: int, msg_type: int, caplen: int) -> ValueError:
        """Name what broke the stream: a wrong message type or an impossible caplen."""
        where = f"at byte {self.bytes_fed - len(buf) + off}"
        if msg_type != RPCAP_MSG_PACKET:
            return ValueError(f"RPCAP data channel: {message_type_name(msg_type)} message where PACKET expected {where}")
        return ValueError(f"RPCAP data channel: caplen {caplen} exceeds {self.max_caplen} {where} (out of sync)")

