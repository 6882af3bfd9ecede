"""SIP messages (RFC 3261): parse one message, recognise one cheaply, frame a TCP byte stream."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

SIP_VERSION = "SIP/2.0"

# RFC 3261 §7.3.3 and later RFCs (3265, 3515, 3841, 3892, 4028, 4474).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
    "l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
    "e": "content-encoding", "o": "event", "r": "refer-to", "u": "allow-events",
    "b": "referred-by", "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}

SDP_CONTENT_TYPE = "application/sdp"
MULTIPART_TYPES = frozenset({"multipart/mixed", "multipart/related", "multipart/alternative"})

# Framer bounds: a start line plus headers never legitimately needs more than this.
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
# RFC 3261 §8.1.1.5: a CSeq number is below 2**31; more digits than this is not a sequence number.
MAX_CSEQ_DIGITS = 10
MAX_CSEQ = 2**31 - 1
UNKNOWN_CSEQ = -1  # cseq_number of a message whose CSeq number is unusable (kept, with a warning)
# A Content-Length with more digits than this cannot be honoured (and int() of 5000 digits raises).
MAX_LENGTH_DIGITS = 12

_TOKEN = rb"[A-Za-z0-9.!%*_+`'~-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") +(\S+) +SIP/2\.0 *\r?$")
_STATUS_LINE = re.compile(rb"SIP/2\.0 +([1-6]\d\d)(?: |\r?$)")
_START_LINE_ANYWHERE = re.compile(
    rb"(?:^|\n)((?:SIP/2\.0 +[1-6]\d\d[ \r\n])|(?:[A-Z]+ +[^\s]+ +SIP/2\.0 *\r?\n))"
)
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.I | re.M)
_INVITE_START = re.compile(rb"INVITE +\S+ +SIP/2\.0")
_CALL_ID_LINE = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)[ \t]*\r?$", re.I | re.M)
_TO_TAG_LINE = re.compile(rb"^(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.I | re.M)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_TAG_PARAM = re.compile(r";\s*tag\s*=\s*([^;>\s,]+)", re.I)
_LOOKS_LIKE_SCAN = 512


def canonical_header_name(name: str) -> str:
    """Lower-case long form, so "i", "Call-ID" and "call-id" compare equal."""
    lowered = name.strip().lower()
    return COMPACT_FORMS.get(lowered, lowered)


def _split_head_body(data: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line, tolerating bare-LF line endings."""
    match = _HEADER_END.search(data)
    if match is None:
        return data, b""
    return data[: match.start()], data[match.end():]


def _parse_start_line(line: str) -> tuple[str | None, str | None, int | None, str | None]:
    """(method, request_uri, status, reason) from a request line or a status line."""
    if line.startswith(SIP_VERSION + " "):
        parts = line.split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        if len(code) != 3 or not code.isdigit() or not "100" <= code <= "699":
            raise ValueError(f"status line {line[:80]!r} has no 3-digit status code 100-699")
        return None, None, int(code), parts[2].strip() if len(parts) > 2 else ""
    parts = line.split()
    if len(parts) != 3 or parts[2] != SIP_VERSION:
        raise ValueError(f"start line {line[:80]!r} is neither 'METHOD URI SIP/2.0' nor 'SIP/2.0 CODE REASON'")
    if _REQUEST_LINE.match(line.encode("utf-8", "replace")) is None:
        raise ValueError(f"request line {line[:80]!r} has an invalid method token")
    return parts[0], parts[1], None, None


def _parse_header_lines(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """Headers in order, continuation lines (leading SP/HTAB) folded into the previous value."""
    headers: list[list[str]] = []
    for number, line in enumerate(lines, start=2):
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise ValueError(f"line {number} is a continuation line but no header precedes it")
            headers[-1][1] = f"{headers[-1][1]} {line.strip()}".strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c in name.strip() for c in " \t"):
            raise ValueError(f"line {number} {line[:60]!r} is not a 'Name: value' header")
        headers.append([name.strip(), value.strip()])
    return tuple((name, value) for name, value in headers)


def _angle_uri(value: str) -> str:
    """The URI inside a name-addr ("Bob" <sip:bob@x>;tag=1) or the bare addr-spec (sip:bob@x;tag=1)."""
    value = value.strip()
    if value.startswith('"'):
        end = 1
        while end < len(value) and value[end] != '"':
            end += 2 if value[end] == "\\" else 1
        rest = value[end + 1:]
    else:
        rest = value
    lt = rest.find("<")
    if lt >= 0:
        gt = rest.find(">", lt)
        return rest[lt + 1: gt if gt >= 0 else len(rest)].strip()
    # Without <>, parameters after ';' belong to the header (RFC 3261 §20.10).
    return rest.split(";", 1)[0].strip()


def uri_user(uri: str) -> str | None:
    """User part of a sip:/sips: URI, or the number of a tel: URI; None for other schemes or no user."""
    scheme, sep, rest = uri.strip().partition(":")
    if not sep:
        return None
    scheme = scheme.lower()
    if scheme == "tel":
        number = rest.split(";", 1)[0].strip()
        return unquote(number) or None
    if scheme not in ("sip", "sips"):
        return None
    userinfo, at, _host = rest.rpartition("@")
    if not at:
        return None
    user = userinfo.split(":", 1)[0].split(";", 1)[0]
    return unquote(user) or None


def _header_tag(value: str | None) -> str | None:
    """The tag= parameter of a From/To header value, looked for after the URI."""
    if value is None:
        return None
    gt = value.rfind(">")
    params = value[gt + 1:] if gt >= 0 else value
    match = _TAG_PARAM.search(params)
    return match.group(1) if match else None


def _media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """("type/subtype" lower-case, {param: value}) of a Content-Type value."""
    kind, *params = content_type.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, sep, val = param.partition("=")
        if sep:
            parsed[key.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), parsed


def _multipart_sdp(body: bytes, boundary: str) -> bytes | None:
    """The first application/sdp part of a multipart body (RFC 2046 §5.1)."""
    delimiter = b"--" + boundary.encode("utf-8", "replace")
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        part = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, content = _split_head_body(part)
        if not head.strip() and content == b"":
            continue
        part_type = ""
        for line in head.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition(":")
            if canonical_header_name(name) == "content-type":
                part_type = _media_type(value)[0]
        if part_type == SDP_CONTENT_TYPE:
            # The CRLF before the next delimiter belongs to that delimiter.
            if content.endswith(b"\r\n"):
                content = content[:-2]
            elif content.endswith(b"\n"):
                content = content[:-1]
            return content
    return None


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One SIP request or response, headers in wire order, body already cut to Content-Length."""

    method: str | None
    request_uri: str | None
    status: int | None
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        """Parse a whole message; Call-ID and a valid CSeq are required so every property works."""
        data = data.lstrip(b"\r\n")
        if not data:
            raise ValueError("empty SIP message")
        head, body = _split_head_body(data)
        lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        lines = [line.rstrip("\r") for line in lines]
        method, request_uri, status, reason = _parse_start_line(lines[0].strip())
        headers = _parse_header_lines(lines[1:])
        message = cls(method, request_uri, status, reason, headers, body)
        length = message.header("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise ValueError(f"Content-Length {length[:40]!r} is not a decimal number")
            if len(length) > MAX_LENGTH_DIGITS:
                raise ValueError(f"Content-Length has {len(length)} digits; no message is that long")
            wanted = int(length)
            if len(body) < wanted:
                raise ValueError(f"body has {len(body)} bytes but Content-Length says {wanted}")
            if len(body) > wanted:
                message = cls(method, request_uri, status, reason, headers, body[:wanted])
        if message.header("call-id") is None:
            raise ValueError("no Call-ID header")
        cseq = message.header("cseq")
        if cseq is None:
            raise ValueError("no CSeq header")
        if len(cseq.split()) != 2:
            raise ValueError(f"CSeq {cseq[:60]!r} is not 'NUMBER METHOD'")
        return message

    def header(self, name: str) -> str | None:
        """First value of a header, matched case-insensitively and through compact forms."""
        wanted = canonical_header_name(name)
        for key, value in self.headers:
            if canonical_header_name(key) == wanted:
                return value
        return None

    def headers_named(self, name: str) -> list[str]:
        """Every value of a header, in wire order (Via, Record-Route, ... repeat)."""
        wanted = canonical_header_name(name)
        return [value for key, value in self.headers if canonical_header_name(key) == wanted]

    @property
    def is_request(self) -> bool:
        """True for a request, False for a response."""
        return self.method is not None

    @property
    def call_id(self) -> str:
        """The Call-ID (validated present by parse)."""
        return self.header("call-id") or ""

    @property
    def cseq_number(self) -> int:
        """The CSeq sequence number; UNKNOWN_CSEQ when it is not a number below 2**31 (see cseq_problem)."""
        text = (self.header("cseq") or "0").split()[0]
        if not _valid_cseq_number(text):
            return UNKNOWN_CSEQ
        return int(text)

    @property
    def cseq_problem(self) -> str | None:
        """Why the CSeq number cannot be used, for a warning on this message; None when it is fine."""
        text = (self.header("cseq") or "0").split()[0]
        if _valid_cseq_number(text):
            return None
        shown = text if len(text) <= 24 else f"{text[:12]}…({len(text)} characters)"
        return f"CSeq number {shown!r} is not a number below 2^31; message kept, its CSeq treated as unknown"

    @property
    def cseq_method(self) -> str:
        """The CSeq method; for a response, the method of the request it answers."""
        parts = (self.header("cseq") or "").split()
        return parts[1] if len(parts) > 1 else ""

    @property
    def from_tag(self) -> str | None:
        """tag= of the From header."""
        return _header_tag(self.header("from"))

    @property
    def to_tag(self) -> str | None:
        """tag= of the To header; None on a dialog-creating request."""
        return _header_tag(self.header("to"))

    @property
    def from_user(self) -> str | None:
        """User part of the From URI (the calling number, usually)."""
        value = self.header("from")
        return None if value is None else uri_user(_angle_uri(value))

    @property
    def to_user(self) -> str | None:
        """User part of the To URI."""
        value = self.header("to")
        return None if value is None else uri_user(_angle_uri(value))

    @property
    def request_user(self) -> str | None:
        """User part of the Request-URI (the dialled number after routing), None for responses."""
        return None if self.request_uri is None else uri_user(self.request_uri)

    def sdp(self) -> str | None:
        """The SDP body: application/sdp, the SDP part of a multipart body, or an untyped "v=0" body."""
        if not self.body:
            return None
        content_type = self.header("content-type")
        if content_type is None:
            return self.body.decode("utf-8", "replace") if self.body.lstrip().startswith(b"v=0") else None
        kind, params = _media_type(content_type)
        if kind == SDP_CONTENT_TYPE:
            return self.body.decode("utf-8", "replace")
        if kind in MULTIPART_TYPES and params.get("boundary"):
            part = _multipart_sdp(self.body, params["boundary"])
            return None if part is None else part.decode("utf-8", "replace")
        return None

    def summary(self) -> str:
        """One line for logs: "INVITE sip:bob@x" or "200 OK", with the CSeq."""
        first = f"{self.method} {self.request_uri}" if self.is_request else f"{self.status} {self.reason}"
        return f"{first} (CSeq {self.cseq_number} {self.cseq_method}, Call-ID {self.call_id})"


def _valid_cseq_number(text: str) -> bool:
    """ASCII digits, at most MAX_CSEQ_DIGITS of them, value at most MAX_CSEQ (RFC 3261 §8.1.1.5)."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_CSEQ_DIGITS and int(text) <= MAX_CSEQ


def looks_like_sip(payload: bytes) -> bool:
    """Cheap test that a payload starts with a SIP request line or status line."""
    if payload.startswith(b"SIP/2.0 "):
        return _STATUS_LINE.match(payload, 0, min(len(payload), 16)) is not None
    end = payload.find(b"\n", 0, _LOOKS_LIKE_SCAN)
    if end < 0:
        return False
    return _REQUEST_LINE.match(payload, 0, end) is not None


@dataclass(frozen=True, slots=True)
class DroppedMessage:
    """A message the framer gave up on (too big to frame): a finding, because a lost INVITE misleads the legs."""

    start_line: str
    call_id: str | None
    reason: str
    to_tag: bool = False   # the To header had a tag: a re-INVITE inside a dialog, not the one that starts a hop

    @property
    def is_invite(self) -> bool:
        """True when the lost message was an INVITE."""
        return _INVITE_START.match(self.start_line.encode("utf-8", "replace")) is not None

    @property
    def is_initial_invite(self) -> bool:
        """An INVITE without a To tag: the message that defines a hop (and the call's direction)."""
        return self.is_invite and not self.to_tag


class SipFramer:
    """Sans-I/O framer for one TCP direction: bytes in, whole messages out, by Content-Length."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.keepalives = 0         # CRLF pings/pongs skipped (RFC 5626 §3.5.1)
        self.discarded_bytes = 0    # non-SIP bytes dropped while resynchronising
        self.dropped: list[DroppedMessage] = []   # messages given up on, oldest first

    @property
    def pending(self) -> int:
        """Bytes held for a message that is not complete yet."""
        return len(self._buffer)

    def reset(self) -> None:
        """Drop partial data, e.g. after the TCP layer skipped a gap."""
        self.discarded_bytes += len(self._buffer)
        self._buffer.clear()

    def feed(self, data: bytes) -> list[bytes]:
        """Add stream bytes; return every message they complete, in order."""
        self._buffer += data
        messages: list[bytes] = []
        while self._buffer:
            if not self._skip_keepalives() or not self._resync():
                break
            message = self._take_message()
            if message is None:
                break
            if message:
                messages.append(message)
        return messages

    def _skip_keepalives(self) -> bool:
        """Strip leading CR/LF; True when bytes remain."""
        stripped = self._buffer.lstrip(b"\r\n")
        skipped = len(self._buffer) - len(stripped)
        if skipped:
            self.keepalives += 1
            del self._buffer[:skipped]
        return bool(self._buffer)

    def _resync(self) -> bool:
        """Make the buffer start at a start line; False when more data is needed first."""
        line_end = self._buffer.find(b"\n")
        if line_end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                self.reset()
            return False
        if looks_like_sip(bytes(self._buffer[: line_end + 1])):
            return True
        match = _START_LINE_ANYWHERE.search(self._buffer, line_end)
        if match is None:
            # Keep the last partial line: it may be the start of a start line.
            last_nl = self._buffer.rfind(b"\n")
            self.discarded_bytes += last_nl + 1
            del self._buffer[: last_nl + 1]
            return False
        self.discarded_bytes += match.start(1)
        del self._buffer[: match.start(1)]
        return True

    def _take_message(self) -> bytes | None:
        """Cut one whole message off the buffer; None while incomplete, b"" after dropping junk."""
        match = _HEADER_END.search(self._buffer)
        if match is None:
            if len(self._buffer) > MAX_HEADER_BYTES:
                self._note_dropped(f"its headers run past {MAX_HEADER_BYTES // 1024} KiB without an empty line")
                self._drop_first_line()
                return b""
            return None
        length_match = _CONTENT_LENGTH.search(self._buffer, 0, match.start() + 2)
        digits = length_match.group(1) if length_match else b"0"
        length = int(digits) if len(digits) <= MAX_LENGTH_DIGITS else MAX_BODY_BYTES + 1
        if length > MAX_BODY_BYTES:
            shown = digits.decode() if len(digits) <= MAX_LENGTH_DIGITS else f"of {len(digits)} digits"
            self._note_dropped(f"Content-Length {shown} is over the {MAX_BODY_BYTES // 1024 // 1024} MiB a SIP body may have")
            self._drop_first_line()
            return b""
        end = match.end() + length
        if len(self._buffer) < end:
            return None
        message = bytes(self._buffer[:end])
        del self._buffer[:end]
        return message

    def _note_dropped(self, reason: str) -> None:
        """Remember what the message at the buffer's start was, before it is given up."""
        head = bytes(self._buffer[:MAX_HEADER_BYTES])
        line_end = head.find(b"\n")
        start = head[: line_end if line_end >= 0 else 200].decode("utf-8", "replace").strip()[:200]
        found = _CALL_ID_LINE.search(head)
        call_id = found.group(1).decode("utf-8", "replace") if found else None
        self.dropped.append(DroppedMessage(start, call_id, reason, _TO_TAG_LINE.search(head) is not None))

    def _drop_first_line(self) -> None:
        """Give up on an implausible message so the resync can find the next one."""
        line_end = self._buffer.find(b"\n")
        cut = len(self._buffer) if line_end < 0 else line_end + 1
        self.discarded_bytes += cut
        del self._buffer[:cut]
