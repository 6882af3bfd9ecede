"""SDP (RFC 8866) just deep enough to find where media flows and how it is keyed."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from rtpcore.sip.crypto import CryptoAttribute, CryptoLineError, CryptoProblem, redact, redact_crypto_line

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
DEFAULT_DIRECTION = "sendrecv"
MAX_PORT = 65535


def _normalise_address(text: str) -> str:
    """The address as ipaddress formats it, an IPv6 zone id (fe80::1%eth0) dropped; FQDNs are kept as written."""
    address, _, zone = text.partition("%")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return text


def is_address(text: str | None) -> bool:
    """True for an IPv4/IPv6 address; False for a name (legal in c=, RFC 8866 §5.7) or nothing."""
    if not text:
        return False
    try:
        ipaddress.ip_address(text.split("/", 1)[0].partition("%")[0])
    except ValueError:
        return False
    return True


def _connection_address(value: str) -> str:
    """Address of 'IN IP4 203.0.113.1[/ttl][/count]'."""
    parts = value.split()
    if len(parts) < 3 or parts[0].upper() != "IN" or parts[1].upper() not in ("IP4", "IP6"):
        raise ValueError(f"c={value!r} is not 'IN IP4|IP6 address'")
    return _normalise_address(parts[2].split("/", 1)[0])


def _parse_port(text: str, what: str) -> int:
    """A decimal port 0..65535."""
    if not text.isdigit() or int(text) > MAX_PORT:
        raise ValueError(f"{what} port {text!r} is not a number 0-{MAX_PORT}")
    return int(text)


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One m= section with the attributes that matter for finding and decrypting its media."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None
    rtcp_port: int | None
    rtcp_address: str | None
    rtcp_mux: bool
    direction: str
    crypto: tuple[CryptoAttribute, ...]
    fingerprint: str | None
    port_count: int = 1
    rtpmap: tuple[tuple[int, str], ...] = ()

    @property
    def is_secure(self) -> bool:
        """True for SAVP/SAVPF profiles (SDES or DTLS keyed)."""
        return "SAVP" in self.proto.upper()

    def encoding(self, payload_type: int) -> str | None:
        """'PCMA/8000' for a payload type from a=rtpmap, None when not mapped."""
        return next((name for pt, name in self.rtpmap if pt == payload_type), None)


@dataclass(slots=True)
class _MediaBuilder:
    """Mutable state while the lines of one m= section are read."""

    media: str
    port: int
    port_count: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None
    rtcp_port: int | None = None
    rtcp_address: str | None = None
    rtcp_mux: bool = False
    direction: str | None = None
    crypto: list[CryptoAttribute] = field(default_factory=list)
    fingerprint: str | None = None
    rtpmap: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def from_m_line(cls, value: str) -> _MediaBuilder:
        """'audio 49170[/2] RTP/AVP 0 8 101'."""
        parts = value.split()
        if len(parts) < 3:
            raise ValueError(f"m={value!r} is not 'media port proto fmt...'")
        port_text, _, count_text = parts[1].partition("/")
        port = _parse_port(port_text, f"m={parts[0]}")
        count = int(count_text) if count_text.isdigit() else 1
        return cls(parts[0], port, count, parts[2], tuple(parts[3:]))

    def build(self, session_direction: str, session_fingerprint: str | None) -> MediaDescription:
        """Freeze, inheriting direction and fingerprint from session level when absent."""
        return MediaDescription(
            media=self.media, port=self.port, proto=self.proto, formats=self.formats,
            connection=self.connection, rtcp_port=self.rtcp_port, rtcp_address=self.rtcp_address,
            rtcp_mux=self.rtcp_mux, direction=self.direction or session_direction,
            crypto=tuple(self.crypto), fingerprint=self.fingerprint or session_fingerprint,
            port_count=self.port_count, rtpmap=tuple(self.rtpmap),
        )


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A parsed SDP body; `problems` lists lines that were skipped (e.g. an unusable a=crypto)."""

    origin_address: str | None
    connection: str | None
    direction: str
    media: tuple[MediaDescription, ...]
    problems: tuple[str, ...] = ()
    # a=crypto lines that cannot be used (malformed, or a suite we cannot decrypt), for key findings.
    crypto_problems: tuple[CryptoProblem, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SessionDescription:
        """Parse SDP text; tolerant of LF endings, blank and unknown lines; ValueError on a bad m=/c=."""
        origin: str | None = None
        connection: str | None = None
        direction: str | None = None
        fingerprint: str | None = None
        problems: list[str] = []
        crypto_problems: list[CryptoProblem] = []
        builders: list[_MediaBuilder] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            kind, sep, value = line.partition("=")
            if not sep or len(kind) != 1:
                continue
            current = builders[-1] if builders else None
            if kind == "m":
                builders.append(_MediaBuilder.from_m_line(value))
            elif kind == "o":
                fields = value.split()
                origin = _normalise_address(fields[5]) if len(fields) >= 6 else None
            elif kind == "c":
                address = _connection_address(value)
                if current is None:
                    connection = address
                else:
                    current.connection = address
            elif kind == "a":
                name, _, attr_value = value.partition(":")
                name = name.strip().lower()
                if name in DIRECTIONS:
                    if current is None:
                        direction = name
                    else:
                        current.direction = name
                elif name == "fingerprint":
                    if current is None:
                        fingerprint = attr_value.strip()
                    else:
                        current.fingerprint = attr_value.strip()
                elif name == "crypto" and current is not None:
                    problem = _crypto_attribute(current, number, attr_value.strip())
                    if problem is not None:
                        crypto_problems.append(problem)
                        if problem.kind not in _PARSED_KINDS:
                            problems.append(f"line {number} ({current.media}): a=crypto ignored: {problem.reason}")
                elif current is not None:
                    unusable = _media_attribute(current, name, attr_value.strip())
                    if unusable:
                        problems.append(f"line {number} ({current.media}): {unusable}")
        session_direction = direction or DEFAULT_DIRECTION
        media = tuple(b.build(session_direction, fingerprint) for b in builders)
        return cls(origin, connection, session_direction, media, tuple(problems), tuple(crypto_problems))

    def audio(self) -> MediaDescription | None:
        """The first active audio stream (m=audio with a port other than 0)."""
        return next((m for m in self.media if m.media == "audio" and m.port != 0), None)

    def media_address(self, m: MediaDescription) -> str | None:
        """Media-level c= address, else the session-level one."""
        return m.connection or self.connection

    def rtcp_port(self, m: MediaDescription) -> int:
        """a=rtcp port, else the RTP port under rtcp-mux, else RTP port + 1 (RFC 3605)."""
        if m.rtcp_port is not None:
            return m.rtcp_port
        return m.port if m.rtcp_mux else m.port + 1

    def rtcp_address(self, m: MediaDescription) -> str | None:
        """a=rtcp address, else the media address."""
        return m.rtcp_address or self.media_address(m)


def _media_attribute(current: _MediaBuilder, name: str, value: str) -> str | None:
    """Apply one media-level attribute; return a problem description when it is unusable."""
    if name == "rtcp-mux":
        current.rtcp_mux = True
    elif name == "rtcp":
        parts = value.split()
        try:
            current.rtcp_port = _parse_port(parts[0] if parts else "", "a=rtcp")
            if len(parts) >= 4:
                current.rtcp_address = _connection_address(" ".join(parts[1:4]))
        except ValueError as exc:
            return str(exc)
    elif name == "rtpmap":
        pt, _, encoding = value.partition(" ")
        if pt.isdigit() and encoding.strip():
            current.rtpmap.append((int(pt), encoding.strip()))
    return None


# Kinds whose line still parses (and stays in `crypto`: the answer may name it) but cannot decrypt.
_PARSED_KINDS = frozenset({"unknown-suite", "refused-suite"})


def _crypto_attribute(current: _MediaBuilder, number: int, value: str) -> CryptoProblem | None:
    """Keep a parsed a=crypto line; describe (redacted) a line that is malformed or names a suite we cannot use."""
    text = redact_crypto_line(value)
    try:
        attribute = CryptoAttribute.parse(value)
    except CryptoLineError as exc:
        return CryptoProblem(number, current.media, text, exc.kind, redact(str(exc)))
    except ValueError as exc:
        return CryptoProblem(number, current.media, text, "malformed", redact(str(exc)))
    current.crypto.append(attribute)
    unusable = attribute.unusable()
    if unusable is None:
        return None
    return CryptoProblem(number, current.media, text, unusable.kind, str(unusable))
