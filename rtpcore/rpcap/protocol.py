"""RPCAP wire format, sans-I/O: every message of libpcap's rpcap-protocol.h as frozen dataclasses.

All integers are big-endian on the wire (rpcapd htonl/htons them), with one exception the C
header documents: the auth reply's byte_order_magic is written in the *server's* byte order.
"""
from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rtpcore.rpcap.records import RecordBatch, RemotePacket

__all__ = [
    "AuthReply",
    "AuthRequest",
    "BpfInsn",
    "ErrorMessage",
    "FindAllInterfacesReply",
    "Header",
    "InterfaceAddress",
    "Message",
    "OpenReply",
    "OpenRequest",
    "PacketHeader",
    "RecordBatch",
    "RemoteInterface",
    "RemotePacket",
    "SamplingRequest",
    "StartCaptureReply",
    "StartCaptureRequest",
    "Stats",
    "UpdateFilterRequest",
    "bpf_program",
    "encode_message",
    "message_type_name",
]

RPCAP_VERSION = 0
RPCAP_DEFAULT_PORT = 2002
RPCAP_DEFAULT_ACTIVE_PORT = 2003
RPCAP_BYTE_ORDER_MAGIC = 0xA1B2C3D4
RPCAP_BYTE_ORDER_MAGIC_SWAPPED = 0xD4C3B2A1

RPCAP_MSG_IS_REPLY = 0x80
RPCAP_MSG_ERROR = 0x01
RPCAP_MSG_FINDALLIF_REQ = 0x02
RPCAP_MSG_OPEN_REQ = 0x03
RPCAP_MSG_STARTCAP_REQ = 0x04
RPCAP_MSG_UPDATEFILTER_REQ = 0x05
RPCAP_MSG_CLOSE = 0x06
RPCAP_MSG_PACKET = 0x07
RPCAP_MSG_AUTH_REQ = 0x08
RPCAP_MSG_STATS_REQ = 0x09
RPCAP_MSG_ENDCAP_REQ = 0x0A
RPCAP_MSG_SETSAMPLING_REQ = 0x0B
RPCAP_MSG_FINDALLIF_REPLY = RPCAP_MSG_FINDALLIF_REQ | RPCAP_MSG_IS_REPLY
RPCAP_MSG_OPEN_REPLY = RPCAP_MSG_OPEN_REQ | RPCAP_MSG_IS_REPLY
RPCAP_MSG_STARTCAP_REPLY = RPCAP_MSG_STARTCAP_REQ | RPCAP_MSG_IS_REPLY
RPCAP_MSG_UPDATEFILTER_REPLY = RPCAP_MSG_UPDATEFILTER_REQ | RPCAP_MSG_IS_REPLY
RPCAP_MSG_AUTH_REPLY = RPCAP_MSG_AUTH_REQ | RPCAP_MSG_IS_REPLY
RPCAP_MSG_STATS_REPLY = RPCAP_MSG_STATS_REQ | RPCAP_MSG_IS_REPLY
RPCAP_MSG_ENDCAP_REPLY = RPCAP_MSG_ENDCAP_REQ | RPCAP_MSG_IS_REPLY
RPCAP_MSG_SETSAMPLING_REPLY = RPCAP_MSG_SETSAMPLING_REQ | RPCAP_MSG_IS_REPLY

_TYPE_NAMES = {
    number: name.removeprefix("RPCAP_MSG_")
    for name, number in dict(globals()).items()
    if name.startswith("RPCAP_MSG_") and name != "RPCAP_MSG_IS_REPLY"
}

RPCAP_RMTAUTH_NULL = 0
RPCAP_RMTAUTH_PWD = 1

RPCAP_STARTCAPREQ_FLAG_PROMISC = 0x01
RPCAP_STARTCAPREQ_FLAG_DGRAM = 0x02
RPCAP_STARTCAPREQ_FLAG_SERVEROPEN = 0x04
RPCAP_STARTCAPREQ_FLAG_INBOUND = 0x08
RPCAP_STARTCAPREQ_FLAG_OUTBOUND = 0x10

RPCAP_UPDATEFILTER_BPF = 1

RPCAP_AF_INET = 2
RPCAP_AF_INET6 = 23  # Windows' value, fixed by the protocol whatever the server's OS

PCAP_IF_LOOPBACK = 0x01
PCAP_IF_UP = 0x02
PCAP_IF_RUNNING = 0x04

PCAP_ERR_NETW = 1
PCAP_ERR_INITTIMEOUT = 2
PCAP_ERR_AUTH = 3
PCAP_ERR_FINDALLIF = 4
PCAP_ERR_NOREMOTEIF = 5
PCAP_ERR_OPEN = 6
PCAP_ERR_UPDATEFILTER = 7
PCAP_ERR_GETSTATS = 8
PCAP_ERR_READEX = 9
PCAP_ERR_HOSTNOAUTH = 10
PCAP_ERR_REMOTEACCEPT = 11
PCAP_ERR_STARTCAPTURE = 12
PCAP_ERR_ENDCAPTURE = 13
PCAP_ERR_RUNTIMETIMEOUT = 14
PCAP_ERR_SETSAMPLING = 15
PCAP_ERR_WRONGMSG = 16
PCAP_ERR_WRONGVER = 17
PCAP_ERR_AUTH_FAILED = 18
PCAP_ERR_TLS_REQUIRED = 19
PCAP_ERR_AUTH_TYPE_NOTSUP = 20

RPCAP_SOCKADDR_LEN = 128  # struct rpcap_sockaddr: u16 family + 126 bytes
MAXIMUM_SNAPLEN = 262144  # libpcap's cap, and so rpcapd's

_HEADER = struct.Struct(">BBHI")
_PKTHDR = struct.Struct(">IIIII")
_AUTH = struct.Struct(">HHHH")
_AUTHREPLY_OLD = struct.Struct(">BB")
_AUTHREPLY = struct.Struct(">BBxxI")
_FINDALLDEVS_IF = struct.Struct(">HHIHH")
_SOCKADDR_IN = struct.Struct(">HH4s")
_SOCKADDR_IN6 = struct.Struct(">HHI16sI")
_OPENREPLY = struct.Struct(">ii")
_STARTCAPREQ = struct.Struct(">IIHH")
_STARTCAPREPLY = struct.Struct(">iHH")
_FILTER = struct.Struct(">HHI")
_BPF_INSN = struct.Struct(">HBBI")
_STATS = struct.Struct(">IIII")
_SAMPLING = struct.Struct(">BBHI")

HEADER_LEN = _HEADER.size
PACKET_HEADER_LEN = _PKTHDR.size


def message_type_name(msg_type: int) -> str:
    """Readable name of a message type for error messages ('OPEN_REPLY', or 'type 0x42')."""
    return _TYPE_NAMES.get(msg_type, f"type 0x{msg_type:02x}")


def _need(payload: bytes, size: int, what: str) -> None:
    """Refuse a payload too short for its fixed part, naming the message."""
    if len(payload) < size:
        raise ValueError(f"{what} needs {size} bytes, got {len(payload)}")


@dataclass(frozen=True, slots=True)
class Header:
    """struct rpcap_header: every RPCAP message starts with these 8 bytes."""

    ver: int
    type: int
    value: int
    plen: int

    def encode(self) -> bytes:
        return _HEADER.pack(self.ver, self.type, self.value, self.plen)

    @classmethod
    def decode(cls, data: bytes | bytearray, offset: int = 0) -> Header:
        if len(data) - offset < HEADER_LEN:
            raise ValueError(f"RPCAP header needs {HEADER_LEN} bytes, got {len(data) - offset}")
        return cls(*_HEADER.unpack_from(data, offset))


@dataclass(frozen=True, slots=True)
class Message:
    """One complete control message: the header and its payload."""

    header: Header
    payload: bytes


def encode_message(msg_type: int, payload: bytes = b"", *, value: int = 0, version: int = RPCAP_VERSION) -> bytes:
    """Header + payload, with plen computed: what a request looks like on the wire."""
    return _HEADER.pack(version, msg_type, value, len(payload)) + payload


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """struct rpcap_auth + username + password: NULL auth, or a system user's name and password."""

    MSG_TYPE: ClassVar[int] = RPCAP_MSG_AUTH_REQ
    auth_type: int = RPCAP_RMTAUTH_NULL
    username: bytes = b""
    password: bytes = b""

    def encode(self) -> bytes:
        if len(self.username) > 0xFFFF or len(self.password) > 0xFFFF:
            raise ValueError("RPCAP username and password must be at most 65535 bytes each")
        return _AUTH.pack(self.auth_type, 0, len(self.username), len(self.password)) + self.username + self.password

    @classmethod
    def decode(cls, payload: bytes) -> AuthRequest:
        _need(payload, _AUTH.size, "AUTH_REQ")
        auth_type, _, slen1, slen2 = _AUTH.unpack_from(payload)
        _need(payload, _AUTH.size + slen1 + slen2, "AUTH_REQ with its credentials")
        user = payload[_AUTH.size : _AUTH.size + slen1]
        return cls(auth_type, bytes(user), bytes(payload[_AUTH.size + slen1 : _AUTH.size + slen1 + slen2]))


@dataclass(frozen=True, slots=True)
class AuthReply:
    """Versions the server speaks; libpcap >= 1.9.1 adds its byte-order magic, older servers send 2 or 0 bytes."""

    min_version: int = 0
    max_version: int = 0
    byte_order_magic: int | None = RPCAP_BYTE_ORDER_MAGIC  # read big-endian; None for old servers

    @property
    def server_big_endian(self) -> bool | None:
        """The magic is written natively by the server, so reading it big-endian tells its byte order."""
        if self.byte_order_magic == RPCAP_BYTE_ORDER_MAGIC:
            return True
        if self.byte_order_magic == RPCAP_BYTE_ORDER_MAGIC_SWAPPED:
            return False
        return None

    def encode(self) -> bytes:
        if self.byte_order_magic is None:
            return _AUTHREPLY_OLD.pack(self.min_version, self.max_version)
        return _AUTHREPLY.pack(self.min_version, self.max_version, self.byte_order_magic)

    @classmethod
    def decode(cls, payload: bytes) -> AuthReply:
        if len(payload) == 0:
            return cls(0, 0, None)
        if len(payload) < _AUTHREPLY.size:
            _need(payload, _AUTHREPLY_OLD.size, "AUTH_REPLY")
            min_version, max_version = _AUTHREPLY_OLD.unpack_from(payload)
            return cls(min_version, max_version, None)
        return cls(*_AUTHREPLY.unpack_from(payload))


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    """struct rpcap_findalldevs_ifaddr: four sockaddrs, each None when rpcapd sent an empty one."""

    address: str | None
    netmask: str | None = None
    broadcast: str | None = None
    destination: str | None = None

    def encode(self) -> bytes:
        return b"".join(_encode_sockaddr(a) for a in (self.address, self.netmask, self.broadcast, self.destination))

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> InterfaceAddress:
        _need(data[offset:], 4 * RPCAP_SOCKADDR_LEN, "rpcap_findalldevs_ifaddr")
        return cls(*(_decode_sockaddr(data, offset + i * RPCAP_SOCKADDR_LEN) for i in range(4)))


def _encode_sockaddr(address: str | None) -> bytes:
    """An address as daemon_seraddr() serialises it: rpcap's own family numbers, big-endian, port 0."""
    if address is None:
        return bytes(RPCAP_SOCKADDR_LEN)
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        raw = _SOCKADDR_IN.pack(RPCAP_AF_INET, 0, ip.packed)
    else:
        raw = _SOCKADDR_IN6.pack(RPCAP_AF_INET6, 0, 0, ip.packed, 0)
    return raw.ljust(RPCAP_SOCKADDR_LEN, b"\0")


def _decode_sockaddr(data: bytes, offset: int) -> str | None:
    """The IP of an rpcap_sockaddr; families other than RPCAP_AF_INET/INET6 (rpcapd sends zeros) are None."""
    family = int.from_bytes(data[offset : offset + 2], "big")
    if family == RPCAP_AF_INET:
        return str(ipaddress.IPv4Address(_SOCKADDR_IN.unpack_from(data, offset)[2]))
    if family == RPCAP_AF_INET6:
        return str(ipaddress.IPv6Address(_SOCKADDR_IN6.unpack_from(data, offset)[3]))
    return None


@dataclass(frozen=True, slots=True)
class RemoteInterface:
    """One interface of the remote host as rpcapd lists it (name, description, PCAP_IF_* flags, IP addresses)."""

    name: str
    description: str = ""
    flags: int = 0
    addresses: tuple[InterfaceAddress, ...] = ()

    @property
    def is_loopback(self) -> bool:
        return bool(self.flags & PCAP_IF_LOOPBACK)

    @property
    def is_up(self) -> bool:
        return bool(self.flags & PCAP_IF_UP)

    def encode(self) -> bytes:
        name, desc = self.name.encode(), self.description.encode()
        head = _FINDALLDEVS_IF.pack(len(name), len(desc), self.flags, len(self.addresses), 0)
        return head + name + desc + b"".join(a.encode() for a in self.addresses)


@dataclass(frozen=True, slots=True)
class FindAllInterfacesReply:
    """FINDALLIF_REPLY: header.value is the interface count, the payload the interfaces back to back."""

    interfaces: tuple[RemoteInterface, ...]

    def encode(self) -> bytes:
        return b"".join(i.encode() for i in self.interfaces)

    @classmethod
    def decode(cls, payload: bytes, count: int) -> FindAllInterfacesReply:
        interfaces: list[RemoteInterface] = []
        off = 0
        for index in range(count):
            if len(payload) - off < _FINDALLDEVS_IF.size:
                raise ValueError(f"FINDALLIF_REPLY ends inside interface {index + 1} of {count} (byte {off})")
            namelen, desclen, flags, naddr, _ = _FINDALLDEVS_IF.unpack_from(payload, off)
            off += _FINDALLDEVS_IF.size
            end = off + namelen + desclen + naddr * 4 * RPCAP_SOCKADDR_LEN
            if end > len(payload):
                raise ValueError(f"FINDALLIF_REPLY interface {index + 1} needs {end} bytes, payload has {len(payload)}")
            name = bytes(payload[off : off + namelen]).decode("utf-8", errors="replace")
            desc = bytes(payload[off + namelen : off + namelen + desclen]).decode("utf-8", errors="replace")
            off += namelen + desclen
            addrs = []
            for _ in range(naddr):
                addrs.append(InterfaceAddress.decode(payload, off))
                off += 4 * RPCAP_SOCKADDR_LEN
            interfaces.append(RemoteInterface(name, desc, flags, tuple(addrs)))
        return cls(tuple(interfaces))


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """OPEN_REQ: the payload is the device name, without a terminating NUL."""

    MSG_TYPE: ClassVar[int] = RPCAP_MSG_OPEN_REQ
    device: str

    def encode(self) -> bytes:
        return self.device.encode()

    @classmethod
    def decode(cls, payload: bytes) -> OpenRequest:
        return cls(bytes(payload).decode("utf-8", errors="replace"))


@dataclass(frozen=True, slots=True)
class OpenReply:
    """struct rpcap_openreply: the remote DLT_* link type (tzoff is always 0 for live captures)."""

    linktype: int
    tzoff: int = 0

    def encode(self) -> bytes:
        return _OPENREPLY.pack(self.linktype, self.tzoff)

    @classmethod
    def decode(cls, payload: bytes) -> OpenReply:
        _need(payload, _OPENREPLY.size, "OPEN_REPLY")
        return cls(*_OPENREPLY.unpack_from(payload))


@dataclass(frozen=True, slots=True)
class BpfInsn:
    """struct rpcap_filterbpf_insn: one classic BPF instruction (k sent as its 32 bits)."""

    code: int
    jt: int
    jf: int
    k: int

    def encode(self) -> bytes:
        return _BPF_INSN.pack(self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)


def _encode_filter(program: Sequence[BpfInsn]) -> bytes:
    """struct rpcap_filter (type BPF, nitems) followed by the instructions."""
    return _FILTER.pack(RPCAP_UPDATEFILTER_BPF, 0, len(program)) + b"".join(i.encode() for i in program)


def _decode_filter(payload: bytes, offset: int) -> tuple[BpfInsn, ...]:
    """The BPF program that follows a startcap request or forms an updatefilter request."""
    _need(payload[offset:], _FILTER.size, "rpcap_filter")
    filtertype, _, nitems = _FILTER.unpack_from(payload, offset)
    if filtertype != RPCAP_UPDATEFILTER_BPF:
        raise ValueError(f"rpcap_filter type {filtertype} is not RPCAP_UPDATEFILTER_BPF ({RPCAP_UPDATEFILTER_BPF})")
    offset += _FILTER.size
    _need(payload[offset:], nitems * _BPF_INSN.size, f"rpcap_filter with {nitems} instructions")
    return tuple(BpfInsn(*_BPF_INSN.unpack_from(payload, offset + i * _BPF_INSN.size)) for i in range(nitems))


def bpf_program(instructions: Iterable[tuple[int, int, int, int]]) -> tuple[BpfInsn, ...]:
    """Adapt libpcap.compile_filter's (code, jt, jf, k) tuples."""
    return tuple(BpfInsn(*insn) for insn in instructions)


@dataclass(frozen=True, slots=True)
class StartCaptureRequest:
    """struct rpcap_startcapreq + the filter: portdata only matters when the server opens the data channel."""

    MSG_TYPE: ClassVar[int] = RPCAP_MSG_STARTCAP_REQ
    snaplen: int
    read_timeout_ms: int
    flags: int = 0
    portdata: int = 0
    program: tuple[BpfInsn, ...] = field(default=())

    def encode(self) -> bytes:
        head = _STARTCAPREQ.pack(self.snaplen, self.read_timeout_ms, self.flags, self.portdata)
        return head + _encode_filter(self.program)

    @classmethod
    def decode(cls, payload: bytes) -> StartCaptureRequest:
        _need(payload, _STARTCAPREQ.size, "STARTCAP_REQ")
        snaplen, timeout, flags, portdata = _STARTCAPREQ.unpack_from(payload)
        return cls(snaplen, timeout, flags, portdata, _decode_filter(payload, _STARTCAPREQ.size))


@dataclass(frozen=True, slots=True)
class StartCaptureReply:
    """struct rpcap_startcapreply: in passive TCP mode portdata is where the client connects for packets."""

    bufsize: int
    portdata: int
    dummy: int = 0

    def encode(self) -> bytes:
        return _STARTCAPREPLY.pack(self.bufsize, self.portdata, self.dummy)

    @classmethod
    def decode(cls, payload: bytes) -> StartCaptureReply:
        _need(payload, _STARTCAPREPLY.size, "STARTCAP_REPLY")
        return cls(*_STARTCAPREPLY.unpack_from(payload))


@dataclass(frozen=True, slots=True)
class UpdateFilterRequest:
    """UPDATEFILTER_REQ: a new BPF program for the running capture."""

    MSG_TYPE: ClassVar[int] = RPCAP_MSG_UPDATEFILTER_REQ
    program: tuple[BpfInsn, ...]

    def encode(self) -> bytes:
        return _encode_filter(self.program)

    @classmethod
    def decode(cls, payload: bytes) -> UpdateFilterRequest:
        return cls(_decode_filter(payload, 0))


@dataclass(frozen=True, slots=True)
class SamplingRequest:
    """struct rpcap_sampling (rpcapd accepts it but, on 1.10, never applies it)."""

    MSG_TYPE: ClassVar[int] = RPCAP_MSG_SETSAMPLING_REQ
    method: int
    value: int

    def encode(self) -> bytes:
        return _SAMPLING.pack(self.method, 0, 0, self.value)

    @classmethod
    def decode(cls, payload: bytes) -> SamplingRequest:
        _need(payload, _SAMPLING.size, "SETSAMPLING_REQ")
        method, _, _, value = _SAMPLING.unpack_from(payload)
        return cls(method, value)


@dataclass(frozen=True, slots=True)
class Stats:
    """struct rpcap_stats: kernel counters plus svrcapt, the packets rpcapd sent on the data channel."""

    ifrecv: int
    ifdrop: int
    krnldrop: int
    svrcapt: int

    def encode(self) -> bytes:
        return _STATS.pack(self.ifrecv, self.ifdrop, self.krnldrop, self.svrcapt)

    @classmethod
    def decode(cls, payload: bytes) -> Stats:
        _need(payload, _STATS.size, "STATS_REPLY")
        return cls(*_STATS.unpack_from(payload))


@dataclass(frozen=True, slots=True)
class PacketHeader:
    """struct rpcap_pkthdr: 32-bit seconds and microseconds, caplen, wire length, 1-based packet ordinal."""

    timestamp_sec: int
    timestamp_usec: int
    caplen: int
    length: int
    npkt: int

    def encode(self) -> bytes:
        return _PKTHDR.pack(self.timestamp_sec, self.timestamp_usec, self.caplen, self.length, self.npkt)

    @classmethod
    def decode(cls, payload: bytes) -> PacketHeader:
        _need(payload, _PKTHDR.size, "rpcap_pkthdr")
        return cls(*_PKTHDR.unpack_from(payload))


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """MSG_ERROR: the PCAP_ERR_* code travels in header.value, the text (no NUL) in the payload."""

    code: int
    text: str

    def encode(self) -> bytes:
        return self.text.encode()

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> ErrorMessage:
        return cls(header.value, bytes(payload).decode("utf-8", errors="replace").rstrip("\0"))
