"""A blocking RPCAP client (passive mode, TCP or UDP data channel, optional TLS) over the sans-I/O protocol."""
from __future__ import annotations

import ipaddress
import select
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from rtpcore.errors import CaptureError, InputError
from rtpcore.pcap import libpcap
from rtpcore.rpcap import protocol as p
from rtpcore.rpcap.framing import ControlReader, PacketStreamParser
from rtpcore.rpcap.protocol import OpenReply, RemoteInterface, RemotePacket, Stats

__all__ = [
    "CaptureStart",
    "RpcapAuthError",
    "RpcapClient",
    "RpcapConnectError",
    "RpcapConnectionLostError",
    "RpcapError",
    "RpcapFilterError",
    "RpcapProtocolError",
]

DEFAULT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT_MS = 100
RECV_SIZE = 1 << 20
DATA_RCVBUF = 8 << 20
DLT_RAW_LINUX = 12
LINKTYPE_RAW = 101
_AUTH_CODES = {p.PCAP_ERR_AUTH, p.PCAP_ERR_AUTH_FAILED, p.PCAP_ERR_AUTH_TYPE_NOTSUP, p.PCAP_ERR_HOSTNOAUTH,
               p.PCAP_ERR_TLS_REQUIRED}


class RpcapError(CaptureError):
    """rpcapd answered with an error, or the exchange failed; `code` is rpcapd's PCAP_ERR_* when it sent one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RpcapAuthError(RpcapError):
    """rpcapd refused the credentials, the auth type, TLS-less clients or this client's address."""


class RpcapConnectError(RpcapError):
    """The TCP (or TLS) connection to rpcapd could not be made, timed out, or broke."""


class RpcapConnectionLostError(RpcapConnectError):
    """rpcapd closed or reset a connection in the middle of a session (daemon killed, host rebooted)."""


class RpcapProtocolError(RpcapError):
    """rpcapd sent something that is not the RPCAP this client speaks (wrong version, type or size)."""


class RpcapFilterError(RpcapError, InputError):
    """The capture filter does not compile for the remote link type; the message is libpcap's."""


@dataclass(frozen=True, slots=True)
class CaptureStart:
    """What a started capture runs: the full filter sent (ours + the self-exclusion), its size, the data channel."""

    expression: str
    instructions: int
    server_bufsize: int
    data_port: int
    linktype: int


def _linktype_of_remote(dlt: int) -> int:
    """rpcapd sends the server's DLT_*; on Linux servers they equal LINKTYPE_* except DLT_RAW."""
    return LINKTYPE_RAW if dlt == DLT_RAW_LINUX else dlt


def _bare_ip(address: str) -> str:
    """Drop an IPv6 scope (fe80::1%eth0) so the address compiles in a BPF expression."""
    return str(ipaddress.ip_address(address.split("%", 1)[0]))


class RpcapClient:
    """One control connection to an rpcapd: authenticate, list, open, capture, stats, end, close."""

    def __init__(
        self,
        host: str,
        port: int = p.RPCAP_DEFAULT_PORT,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        auth: tuple[str, str] | None = None,
        tls: bool | ssl.SSLContext = False,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.url = f"{'rpcaps' if tls else 'rpcap'}://{host}:{port}"
        self._auth = auth
        self._tls_context: ssl.SSLContext | None = (
            tls if isinstance(tls, ssl.SSLContext) else ssl.create_default_context() if tls else None
        )
        self._reader = ControlReader()
        self._data: socket.socket | None = None
        self._udp = False
        self._parser: PacketStreamParser | None = None
        self._opened: tuple[str, OpenReply] | None = None
        self.authenticated = False
        self.auth_reply: p.AuthReply | None = None
        self._ctrl = self._connect()

    # -- connection -------------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        """TCP (then TLS) connect, every failure told as where, what, and what to check."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except ConnectionRefusedError:
            raise RpcapConnectError(
                f"{self.url}: connection refused (is rpcapd running there, listening on port {self.port}"
                " and reachable through the firewall?)"
            ) from None
        except TimeoutError:
            raise RpcapConnectError(
                f"{self.url}: no answer within {self.timeout:g} s (host down or port filtered?)"
            ) from None
        except socket.gaierror as exc:
            raise RpcapConnectError(f"{self.url}: cannot resolve host {self.host!r}: {exc.strerror}") from None
        except OSError as exc:
            raise RpcapConnectError(f"{self.url}: cannot connect: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls_context is None:
            return sock
        try:
            return self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise RpcapConnectError(f"{self.url}: TLS handshake failed (is rpcapd started with -S?): {exc}") from None

    def _send(self, data: bytes) -> None:
        try:
            self._ctrl.sendall(data)
        except TimeoutError:
            raise RpcapConnectError(f"{self.url}: sending to rpcapd timed out after {self.timeout:g} s") from None
        except OSError as exc:
            raise RpcapConnectionLostError(f"{self.url}: connection lost while sending: {exc.strerror or exc}") from None

    def _receive(self, request: str) -> p.Message:
        """The next control message, reading as much as needed."""
        while (msg := self._next_message()) is None:
            try:
                chunk = self._ctrl.recv(65536)
            except TimeoutError:
                raise RpcapConnectError(
                    f"{self.url}: no reply to {request} within {self.timeout:g} s"
                ) from None
            except OSError as exc:
                raise RpcapConnectionLostError(
                    f"{self.url}: connection lost waiting for the reply to {request}: {exc.strerror or exc}"
                ) from None
            if not chunk:
                raise RpcapConnectionLostError(
                    f"{self.url}: rpcapd closed the connection before replying to {request}"
                )
            self._reader.feed(chunk)
        return msg

    def _next_message(self) -> p.Message | None:
        try:
            return self._reader.next_message()
        except ValueError as exc:
            raise RpcapProtocolError(f"{self.url}: {exc}") from exc

    def _raise_for_error(self, msg: p.Message, context: str) -> None:
        """Turn a MSG_ERROR into the matching exception class, keeping rpcapd's text."""
        err = p.ErrorMessage.decode(msg.header, msg.payload)
        cls = RpcapAuthError if err.code in _AUTH_CODES else RpcapError
        raise cls(f"{self.url}: {context}: {err.text}", code=err.code)

    def _request(self, msg_type: int, payload: bytes = b"", *, context: str) -> p.Message:
        """Send one request and return its reply; errors and unexpected replies raise."""
        name = p.message_type_name(msg_type)
        self._send(p.encode_message(msg_type, payload))
        msg = self._receive(name)
        if msg.header.type == p.RPCAP_MSG_ERROR:
            self._raise_for_error(msg, context)
        expected = msg_type | p.RPCAP_MSG_IS_REPLY
        if msg.header.type != expected:
            raise RpcapProtocolError(
                f"{self.url}: {p.message_type_name(msg.header.type)} received in reply to {name}"
                f" (expected {p.message_type_name(expected)})"
            )
        if msg.header.ver != p.RPCAP_VERSION:
            raise RpcapProtocolError(f"{self.url}: reply has RPCAP version {msg.header.ver}, we speak 0")
        return msg

    # -- session ----------------------------------------------------------------------------------

    def authenticate(self) -> p.AuthReply:
        """NULL auth, or username/password checked by rpcapd against the server's shadow file."""
        if self._auth is None:
            req = p.AuthRequest(p.RPCAP_RMTAUTH_NULL)
        else:
            user, password = self._auth
            req = p.AuthRequest(p.RPCAP_RMTAUTH_PWD, user.encode(), password.encode())
        who = "NULL authentication" if self._auth is None else f"authentication as {self._auth[0]!r}"
        msg = self._request(p.RPCAP_MSG_AUTH_REQ, req.encode(), context=f"{who} refused")
        try:
            reply = p.AuthReply.decode(msg.payload)
        except ValueError as exc:
            raise RpcapProtocolError(f"{self.url}: {exc}") from exc
        if not reply.min_version <= p.RPCAP_VERSION <= reply.max_version:
            raise RpcapProtocolError(
                f"{self.url}: rpcapd speaks RPCAP versions {reply.min_version}-{reply.max_version}, we speak 0"
            )
        self.auth_reply = reply
        self.authenticated = True
        return reply

    def _ensure_auth(self) -> None:
        if not self.authenticated:
            self.authenticate()

    def list_interfaces(self) -> list[RemoteInterface]:
        """The remote host's capture interfaces, as pcap_findalldevs() there sees them."""
        self._ensure_auth()
        msg = self._request(p.RPCAP_MSG_FINDALLIF_REQ, context="listing interfaces failed")
        try:
            return list(p.FindAllInterfacesReply.decode(msg.payload, msg.header.value).interfaces)
        except ValueError as exc:
            raise RpcapProtocolError(f"{self.url}: {exc}") from exc

    def open(self, interface: str) -> OpenReply:
        """Select the interface to capture on; rpcapd opens it once to learn its link type."""
        self._ensure_auth()
        msg = self._request(
            p.RPCAP_MSG_OPEN_REQ, p.OpenRequest(interface).encode(), context=f"cannot open interface {interface!r}"
        )
        try:
            reply = OpenReply.decode(msg.payload)
        except ValueError as exc:
            raise RpcapProtocolError(f"{self.url}: {exc}") from exc
        self._opened = (interface, reply)
        return reply

    @property
    def capturing(self) -> bool:
        return self._data is not None

    def start_capture(
        self,
        filter_expression: str = "",
        *,
        snaplen: int = p.MAXIMUM_SNAPLEN,
        promisc: bool = False,
        udp: bool = False,
        read_timeout_ms: int = DEFAULT_READ_TIMEOUT_MS,
    ) -> CaptureStart:
        """Start capturing with the filter compiled here for the remote link type, minus our own RPCAP traffic."""
        if self._opened is None:
            raise RpcapError(f"{self.url}: open() an interface before start_capture()")
        if self._data is not None:
            raise RpcapError(f"{self.url}: a capture is already running on this connection")
        if udp and self._tls_context is not None:
            raise RpcapError(f"{self.url}: rpcapd cannot send packets over UDP on a TLS session")
        interface, opened = self._opened
        linktype = _linktype_of_remote(opened.linktype)
        data = self._data_socket(udp)
        try:
            expression = self._expression(filter_expression, data, udp)
            try:
                program = p.bpf_program(libpcap.compile_filter(expression, linktype=linktype, snaplen=snaplen))
            except libpcap.LibpcapError as exc:
                raise RpcapFilterError(
                    f"{self.url}: filter {filter_expression!r} does not compile for {interface!r}"
                    f" (link type {opened.linktype}): {exc}"
                ) from None
            flags = (p.RPCAP_STARTCAPREQ_FLAG_PROMISC if promisc else 0) | (p.RPCAP_STARTCAPREQ_FLAG_DGRAM if udp else 0)
            portdata = data.getsockname()[1] if udp else 0
            req = p.StartCaptureRequest(snaplen, read_timeout_ms, flags, portdata, program)
            msg = self._request(
                p.RPCAP_MSG_STARTCAP_REQ, req.encode(), context=f"rpcapd refused the capture on {interface!r}"
            )
            try:
                reply = p.StartCaptureReply.decode(msg.payload)
            except ValueError as exc:  # translated where it enters, like every other reply: the engine reconnects
                raise RpcapProtocolError(f"{self.url}: start capture reply: {exc}") from exc
            if not udp:
                data = self._connect_data(data, reply.portdata)
        except BaseException:
            data.close()
            raise
        self._data, self._udp = data, udp
        self._parser = PacketStreamParser(max_caplen=max(snaplen, p.MAXIMUM_SNAPLEN))
        return CaptureStart(expression, len(program), reply.bufsize, reply.portdata or portdata, opened.linktype)

    def _data_socket(self, udp: bool) -> socket.socket:
        """Bound before the request so our data port is known and excluded from the very first packet."""
        family = self._ctrl.family
        sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DATA_RCVBUF)
            local = self._ctrl.getsockname()
            sock.bind((local[0], 0, *local[2:]))  # IPv6 keeps flowinfo and scope id
        except OSError as exc:
            sock.close()
            raise RpcapConnectError(f"{self.url}: cannot open the local data socket: {exc.strerror or exc}") from None
        return sock

    def _expression(self, user: str, data: socket.socket, udp: bool) -> str:
        """The user's filter ANDed with 'not our control connection' and 'not our data connection'."""
        local = _bare_ip(self._ctrl.getsockname()[0])
        local_port = self._ctrl.getsockname()[1]
        peer, peer_port = _bare_ip(self._ctrl.getpeername()[0]), self._ctrl.getpeername()[1]
        data_port = data.getsockname()[1]
        proto = "udp" if udp else "tcp"
        exclusion = (
            f"not (host {local} and host {peer} and tcp port {local_port} and tcp port {peer_port})"
            f" and not (host {local} and host {peer} and {proto} port {data_port})"
        )
        return f"({user}) and {exclusion}" if user.strip() else exclusion

    def _connect_data(self, sock: socket.socket, port: int) -> socket.socket:
        """Passive mode: the client connects to the port rpcapd just opened for this capture."""
        peer = self._ctrl.getpeername()
        sock.settimeout(self.timeout)
        try:
            sock.connect((peer[0], port, *peer[2:]))
        except OSError as exc:
            raise RpcapConnectError(
                f"{self.url}: cannot connect the data channel to port {port}: {exc.strerror or exc}"
            ) from None
        if self._tls_context is None:
            return sock
        try:
            return self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except (ssl.SSLError, OSError) as exc:
            raise RpcapConnectError(f"{self.url}: TLS handshake on the data channel failed: {exc}") from None

    def read_packets(self, max_bytes: int = RECV_SIZE, timeout: float | None = None) -> list[RemotePacket]:
        """Packets from one large read of the data channel; [] when nothing came within timeout."""
        parser, chunk = self._read(max_bytes, timeout)
        if not chunk:
            return []
        try:
            return parser.feed(chunk)
        except ValueError as exc:
            raise RpcapProtocolError(f"{self.url}: {exc}") from exc

    def read_batch(self, max_bytes: int = RECV_SIZE, timeout: float | None = None) -> p.RecordBatch | None:
        """read_packets() as big-endian pcap records ready for a chunk (see RecordBatch); None when nothing came."""
        parser, chunk = self._read(max_bytes, timeout)
        if not chunk:
            return None
        try:
            return parser.feed_records(chunk)
        except ValueError as exc:
            raise RpcapProtocolError(f"{self.url}: {exc}") from exc

    def _read(self, max_bytes: int, timeout: float | None) -> tuple[PacketStreamParser, bytes]:
        """One read of the data channel (b"" when nothing came within timeout); a broken channel raises."""
        data, parser = self._data, self._parser
        if data is None or parser is None:
            raise RpcapError(f"{self.url}: no capture running (start_capture() first)")
        pending_tls = isinstance(data, ssl.SSLSocket) and data.pending() > 0
        if not pending_tls:
            ready, _, _ = select.select([data, self._ctrl], [], [], timeout)
            if self._ctrl in ready:
                self._check_control()
            if data not in ready:
                return parser, b""
        try:
            chunk = data.recv(max_bytes)
        except ssl.SSLWantReadError:
            return parser, b""
        except OSError as exc:
            raise RpcapConnectionLostError(
                f"{self.url}: data channel broke during the capture: {exc.strerror or exc}"
            ) from None
        if not chunk:
            raise RpcapConnectionLostError(
                f"{self.url}: rpcapd closed the data channel during the capture (daemon stopped or killed?)"
            )
        return parser, chunk

    def _check_control(self) -> None:
        """During a capture the control channel only speaks up to report an error or to hang up."""
        try:
            chunk = self._ctrl.recv(65536)
        except ssl.SSLWantReadError:
            return
        except OSError as exc:
            raise RpcapConnectionLostError(f"{self.url}: control connection broke: {exc.strerror or exc}") from None
        if not chunk:
            raise RpcapConnectionLostError(f"{self.url}: rpcapd closed the control connection during the capture")
        self._reader.feed(chunk)
        msg = self._next_message()
        if msg is not None and msg.header.type == p.RPCAP_MSG_ERROR:
            self._raise_for_error(msg, "capture failed")
        if msg is not None:
            raise RpcapProtocolError(
                f"{self.url}: unsolicited {p.message_type_name(msg.header.type)} during the capture"
            )

    def iter_packets(self, *, until: float | None = None, poll: float = 0.2) -> Iterator[RemotePacket]:
        """Yield packets until the time.monotonic() deadline `until` (forever when None)."""
        while until is None or time.monotonic() < until:
            wait = poll if until is None else max(0.0, min(poll, until - time.monotonic()))
            yield from self.read_packets(timeout=wait)

    def stats(self) -> Stats:
        """Counters of the running (or last) capture; svrcapt counts packets rpcapd sent us."""
        msg = self._request(p.RPCAP_MSG_STATS_REQ, context="statistics request failed")
        try:
            return Stats.decode(msg.payload)
        except ValueError as exc:
            raise RpcapProtocolError(f"{self.url}: {exc}") from exc

    def end_capture(self, drain_timeout: float = 1.0) -> list[RemotePacket]:
        """Stop the capture and return the packets still in flight, so none is lost at the end."""
        if self._data is None:
            return []
        self._request(p.RPCAP_MSG_ENDCAP_REQ, context="ending the capture failed")
        rest: list[RemotePacket] = []
        deadline = time.monotonic() + drain_timeout
        try:
            # TCP: rpcapd closed its end before replying, so read to EOF; UDP: read until quiet.
            while (left := deadline - time.monotonic()) > 0:
                got = self.read_packets(timeout=min(left, 0.05) if self._udp else left)
                if self._udp and not got:
                    break
                rest += got
        except RpcapConnectionLostError:
            pass
        finally:
            self._close_data()
        return rest

    def _close_data(self) -> None:
        if self._data is not None:
            try:
                self._data.close()
            finally:
                self._data, self._parser = None, None

    def close(self) -> None:
        """Say goodbye (MSG_CLOSE, no reply) and close both connections; safe to call twice."""
        if self._ctrl.fileno() < 0:
            return
        self._close_data()
        try:
            self._ctrl.sendall(p.encode_message(p.RPCAP_MSG_CLOSE))
        except OSError:
            pass
        finally:
            self._ctrl.close()

    def __enter__(self) -> RpcapClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "capturing" if self._data is not None else "open" if self._ctrl.fileno() >= 0 else "closed"
        return f"<RpcapClient {self.url} {state}>"
