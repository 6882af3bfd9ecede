"""SIP messages out of a capture file: UDP, TCP (reassembled), SCTP; any port, through tunnels."""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

from rtpcore.errors import UnsupportedLinkTypeError
from rtpcore.pcap.fragments import IpReassembler
from rtpcore.pcap.layers import IpPacket, link_payload, parse_ip, parse_tcp, parse_udp, unwrap_tunnels
from rtpcore.pcap.reader import open_capture
from rtpcore.sip.message import DroppedMessage, SipFramer, SipMessage, looks_like_sip
from rtpcore.sip.tcp import TcpReassembler

log = logging.getLogger(__name__)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132

SCTP_COMMON_HEADER_LEN = 12
SCTP_CHUNK_HEADER_LEN = 4
SCTP_DATA_HEADER_LEN = 16          # chunk header + TSN, stream id, stream seq, PPID
SCTP_CHUNK_DATA = 0
SCTP_FLAG_END = 0x01
SCTP_FLAG_BEGIN = 0x02
SCTP_DATA_UNFRAGMENTED = SCTP_FLAG_BEGIN | SCTP_FLAG_END
MAX_SCTP_MESSAGE = 1024 * 1024
SEQ_MODULO = 1 << 32
MAX_UNWRAP_ROUNDS = 4              # fragments inside a tunnel inside fragments ...

_sctp_ports = struct.Struct("!HH").unpack_from
_sctp_chunk_header = struct.Struct("!BBH").unpack_from
_sctp_data_header = struct.Struct("!IH").unpack_from

FlowKey = tuple[str, int, str, int]


@dataclass(frozen=True, slots=True)
class SipPacket:
    """One SIP message with where and when it was seen (the frame that completed it)."""

    ts_ns: int
    frame_index: int
    transport: str          # "udp" | "tcp" | "sctp"
    src: str
    sport: int
    dst: str
    dport: int
    message: SipMessage

    @property
    def src_endpoint(self) -> str:
        """'ip:port', '[ip]:port' for IPv6."""
        return _endpoint(self.src, self.sport)

    @property
    def dst_endpoint(self) -> str:
        """'ip:port', '[ip]:port' for IPv6."""
        return _endpoint(self.dst, self.dport)


@dataclass(slots=True)
class SipCaptureStats:
    """What read_sip saw besides the messages it returns; for logs and the report."""

    frames: int = 0
    messages: int = 0
    parse_errors: int = 0
    tcp_gaps: int = 0
    tcp_discarded_bytes: int = 0
    sctp_dropped_chunks: int = 0
    errors: list[str] = field(default_factory=list)   # first few parse errors, with the frame number
    message_warnings: list[str] = field(default_factory=list)   # messages kept despite an odd field, by frame
    dropped: list[DroppedSip] = field(default_factory=list)     # messages the TCP framer gave up on

    MAX_ERRORS_KEPT = 20

    def note_warning(self, frame_index: int, transport: str, text: str) -> None:
        """A message that is used although one of its fields is odd: the user sees which and where."""
        if len(self.message_warnings) < self.MAX_ERRORS_KEPT:
            self.message_warnings.append(f"frame {frame_index + 1} ({transport}): {text}")

    def warnings(self, source: str) -> list[str]:
        """Everything the user should know about reading this SIP capture, one line each, frame numbers included."""
        out = [f"{source}: SIP message at {e} — not used" for e in self.errors]
        if self.parse_errors > len(self.errors):
            out.append(f"{source}: {self.parse_errors - len(self.errors)} more SIP message(s) could not be parsed")
        out += [f"{source}: {w}" for w in self.message_warnings]
        out += [f"{source}: {d.text()}" for d in self.dropped]
        return out

    def note_error(self, frame_index: int, transport: str, reason: str) -> None:
        """Count a message that did not parse and keep the first few reasons."""
        self.parse_errors += 1
        if len(self.errors) < self.MAX_ERRORS_KEPT:
            self.errors.append(f"frame {frame_index + 1} ({transport}): {reason}")


@dataclass(frozen=True, slots=True)
class DroppedSip:
    """A SIP message over TCP that could not be framed: where and when it was, and what it was."""

    frame_index: int
    ts_ns: int
    src: str
    dst: str
    message: DroppedMessage

    def text(self) -> str:
        """One line for the findings: frame, addresses, start line, Call-ID, why."""
        call = f", Call-ID {self.message.call_id}" if self.message.call_id else ""
        return (f"frame {self.frame_index + 1} (tcp {self.src} → {self.dst}): {self.message.start_line[:80]!r}{call} "
                f"was dropped: {self.message.reason}")


@dataclass(frozen=True, slots=True)
class SipCapture:
    """Result of scan_sip: the time-ordered messages and the counters."""

    packets: tuple[SipPacket, ...]
    stats: SipCaptureStats


def _first_line(data: bytes) -> str:
    """The start line of a message, short, for warnings."""
    end = data.find(b"\n")
    return data[: end if 0 <= end < 100 else 100].decode("utf-8", "replace").strip()


def _endpoint(address: str, port: int) -> str:
    """Endpoint string as the contracts define it."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class _SctpData:
    """One DATA chunk: what fragment reassembly (RFC 9260 §6.9) needs."""

    tsn: int
    stream_id: int
    flags: int
    data: bytes


def _sctp_data_chunks(payload: bytes) -> list[_SctpData]:
    """DATA chunks of one SCTP packet, in order; other chunk types are skipped."""
    chunks: list[_SctpData] = []
    offset = SCTP_COMMON_HEADER_LEN
    while offset + SCTP_CHUNK_HEADER_LEN <= len(payload):
        chunk_type, flags, length = _sctp_chunk_header(payload, offset)
        if length < SCTP_CHUNK_HEADER_LEN or offset + length > len(payload):
            break
        if chunk_type == SCTP_CHUNK_DATA and length > SCTP_DATA_HEADER_LEN:
            tsn, stream_id = _sctp_data_header(payload, offset + SCTP_CHUNK_HEADER_LEN)
            chunks.append(_SctpData(tsn, stream_id, flags, payload[offset + SCTP_DATA_HEADER_LEN: offset + length]))
        offset += (length + 3) & ~3
    return chunks


class _SctpReassembler:
    """Joins B…E fragment runs of consecutive TSNs per association stream; bounded."""

    def __init__(self) -> None:
        self._runs: dict[tuple[FlowKey, int], tuple[int, list[bytes], int]] = {}
        self.dropped = 0

    def feed(self, flow: FlowKey, chunk: _SctpData) -> bytes | None:
        """Whole user message when this chunk completes one, else None."""
        key = (flow, chunk.stream_id)
        if chunk.flags & SCTP_DATA_UNFRAGMENTED == SCTP_DATA_UNFRAGMENTED:
            return chunk.data
        if chunk.flags & SCTP_FLAG_BEGIN:
            if key in self._runs:
                self.dropped += 1
            self._runs[key] = (chunk.tsn, [chunk.data], len(chunk.data))
            return None
        run = self._runs.get(key)
        if run is None or chunk.tsn != (run[0] + 1) % SEQ_MODULO:
            self.dropped += 1
            return None
        parts = run[1] + [chunk.data]
        size = run[2] + len(chunk.data)
        if chunk.flags & SCTP_FLAG_END:
            del self._runs[key]
            return b"".join(parts)
        if size > MAX_SCTP_MESSAGE:
            del self._runs[key]
            self.dropped += 1
            return None
        self._runs[key] = (chunk.tsn, parts, size)
        return None


class _SipExtractor:
    """Per-file state: IP reassembly, TCP streams and their framers."""

    def __init__(self) -> None:
        self.ip_reassembler = IpReassembler()
        self.tcp = TcpReassembler()
        self.framers: dict[FlowKey, SipFramer] = {}
        self.sctp = _SctpReassembler()
        self.packets: list[SipPacket] = []
        self.stats = SipCaptureStats()

    def frame(self, index: int, ts_ns: int, linktype: int, data: bytes) -> None:
        """Decode one frame down to its transport and extract any SIP it completes."""
        self.stats.frames += 1
        l3 = link_payload(linktype, data)
        if l3 is None:
            return
        ip = parse_ip(l3)
        for _ in range(MAX_UNWRAP_ROUNDS):
            if ip is None:
                return
            ip = self.ip_reassembler.feed(ip, ts_ns)
            if ip is None:
                return
            inner = unwrap_tunnels(ip)
            if inner is ip:
                break
            ip = inner
            if not ip.is_fragment:
                break
        if ip is None or ip.is_fragment:
            return
        if ip.proto == IPPROTO_UDP:
            self._udp(index, ts_ns, ip)
        elif ip.proto == IPPROTO_TCP:
            self._tcp(index, ts_ns, ip)
        elif ip.proto == IPPROTO_SCTP:
            self._sctp(index, ts_ns, ip)

    def _emit(self, index: int, ts_ns: int, transport: str, flow: FlowKey, data: bytes) -> None:
        """Parse one message's bytes; count it when it does not parse."""
        try:
            message = SipMessage.parse(data)
        except ValueError as exc:
            self.stats.note_error(index, transport, str(exc))
            return
        src, sport, dst, dport = flow
        problem = message.cseq_problem
        if problem:
            self.stats.note_warning(index, transport, f"{_first_line(data)}: {problem}")
        self.packets.append(SipPacket(ts_ns, index, transport, src, sport, dst, dport, message))
        self.stats.messages += 1

    def _udp(self, index: int, ts_ns: int, ip: IpPacket) -> None:
        """One datagram carries at most one SIP message (RFC 3261 §18.1.1)."""
        udp = parse_udp(ip)
        if udp is None or not looks_like_sip(udp.payload):
            return
        self._emit(index, ts_ns, "udp", (udp.src, udp.sport, udp.dst, udp.dport), udp.payload)

    def _tcp(self, index: int, ts_ns: int, ip: IpPacket) -> None:
        """Reassemble the direction, then let its framer cut messages by Content-Length."""
        seg = parse_tcp(ip)
        if seg is None:
            return
        flow = (seg.src, seg.sport, seg.dst, seg.dport)
        gaps_before = self.tcp.gaps
        chunks = self.tcp.feed(seg, ts_ns)
        framer = self.framers.get(flow)
        if framer is not None and self.tcp.gaps != gaps_before:
            framer.reset()
        for chunk_ts, chunk in chunks:
            if framer is None:
                framer = self.framers[flow] = SipFramer()
            dropped = len(framer.dropped)
            for raw in framer.feed(chunk):
                self._emit(index, chunk_ts, "tcp", flow, raw)
            for lost in framer.dropped[dropped:]:
                self.stats.dropped.append(DroppedSip(index, chunk_ts, seg.src, seg.dst, lost))

    def _sctp(self, index: int, ts_ns: int, ip: IpPacket) -> None:
        """SIP over SCTP (RFC 4168): each user message (DATA chunk or B…E run) is one SIP message."""
        if len(ip.payload) < SCTP_COMMON_HEADER_LEN:
            return
        sport, dport = _sctp_ports(ip.payload, 0)
        flow = (ip.src, sport, ip.dst, dport)
        for chunk in _sctp_data_chunks(ip.payload):
            data = self.sctp.feed(flow, chunk)
            if data is not None and looks_like_sip(data):
                self._emit(index, ts_ns, "sctp", flow, data)

    def finish(self) -> SipCapture:
        """Freeze the result in time order (stable for equal timestamps)."""
        self.stats.tcp_gaps = self.tcp.gaps
        self.stats.sctp_dropped_chunks = self.sctp.dropped
        self.stats.tcp_discarded_bytes = sum(f.discarded_bytes for f in self.framers.values())
        packets = tuple(sorted(self.packets, key=lambda p: p.ts_ns))
        return SipCapture(packets, self.stats)


def scan_sip(path: Path) -> SipCapture:
    """Every SIP message in a capture, plus counters of what could not be used."""
    extractor = _SipExtractor()
    with open_capture(path) as reader:
        for frame in reader:
            try:
                extractor.frame(frame.index, frame.ts_ns, frame.linktype, frame.data)
            except UnsupportedLinkTypeError as exc:
                raise UnsupportedLinkTypeError(f"{path}: {exc}", linktype=exc.linktype) from exc
    result = extractor.finish()
    stats = result.stats
    if stats.parse_errors:
        log.warning(
            "%s: %d SIP message(s) could not be parsed; first: %s", path, stats.parse_errors, stats.errors[0]
        )
    for dropped in stats.dropped:
        log.warning("%s: %s", path, dropped.text())
    if stats.tcp_gaps:
        log.warning("%s: %d TCP gap(s) in the capture; SIP around them may be missing", path, stats.tcp_gaps)
    return result


def read_sip(path: Path) -> list[SipPacket]:
    """Every SIP message in a capture (UDP, TCP, SCTP; any port; fragments; tunnels), time-ordered."""
    return list(scan_sip(path).packets)
