"""SIP and SDP text composition for generated calls: plain strings, CRLF line ends, exact Content-Length."""
from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass

__all__ = ["SdpMedia", "CryptoLine", "compose_sdp", "Dialog", "request", "response", "host_part", "endpoint"]

SIP_PORT = 5060
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK"
CODECS = {0: "PCMU/8000", 8: "PCMA/8000"}
DTMF_PT = 101


def host_part(address: str) -> str:
    """An address as it appears in a SIP URI or Via: IPv6 in brackets."""
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def endpoint(address: str, port: int) -> str:
    """The contract's endpoint string: ip:port, [ip]:port for IPv6."""
    return f"{host_part(address)}:{port}"


def _addrtype(address: str) -> str:
    return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"


@dataclass(frozen=True, slots=True)
class CryptoLine:
    """One a=crypto line: the key is master key followed by master salt."""

    tag: int
    suite: str
    key: bytes
    text: str | None = None             # wt-keys: the whole line as a faulty sender writes it (broken-keys)

    def render(self) -> str:
        if self.text is not None:
            return self.text
        inline = base64.b64encode(self.key).decode("ascii")
        lifetime = "" if self.suite.startswith("AEAD") else "|2^31"
        return f"a=crypto:{self.tag} {self.suite} inline:{inline}{lifetime}"


@dataclass(frozen=True, slots=True)
class SdpMedia:
    """What one side advertises for its audio: where it receives, which codecs, which keys."""

    address: str
    port: int
    payload_types: tuple[int, ...]
    crypto: tuple[CryptoLine, ...] = ()
    rtcp_port: int | None = None
    rtcp_mux: bool = False
    media_level_c: bool = False         # SBCs put c= on the m= line's level, phones at session level
    session_id: int = 1
    version: int = 1
    padding_lines: int = 0              # extra a= lines to make a message large
    secure: bool = False                # wt-keys: RTP/SAVP even without a=crypto (a sender that forgot its key)
    direction: str = "sendrecv"         # issue 11: a=sendonly / a=recvonly in a hold re-INVITE and its answer


def compose_sdp(m: SdpMedia) -> str:
    """An SDP body for one audio stream (RTP/SAVP when it carries a=crypto)."""
    kind = _addrtype(m.address)
    proto = "RTP/SAVP" if m.crypto or m.secure else "RTP/AVP"
    formats = " ".join(str(pt) for pt in (*m.payload_types, DTMF_PT))
    lines = [
        "v=0",
        f"o=- {m.session_id} {m.version} IN {kind} {m.address}",
        "s=-",
    ]
    connection = f"c=IN {kind} {m.address}"
    if not m.media_level_c:
        lines.append(connection)
    lines += ["t=0 0", f"m=audio {m.port} {proto} {formats}"]
    if m.media_level_c:
        lines.append(connection)
    lines += [f"a=rtpmap:{pt} {CODECS[pt]}" for pt in m.payload_types]
    lines += [f"a=rtpmap:{DTMF_PT} telephone-event/8000", f"a=fmtp:{DTMF_PT} 0-16"]
    if m.rtcp_port is not None:
        lines.append(f"a=rtcp:{m.rtcp_port} IN {kind} {m.address}")
    if m.rtcp_mux:
        lines.append("a=rtcp-mux")
    lines += [c.render() for c in m.crypto]
    lines += [f"a=x-carrier-route:{i:04d}-{'ab' * 30}" for i in range(m.padding_lines)]
    lines += ["a=ptime:20", f"a={m.direction}"]
    return "\r\n".join(lines) + "\r\n"


@dataclass(frozen=True, slots=True)
class Dialog:
    """One SIP dialog on one hop: who called whom, with which identifiers and transport."""

    call_id: str
    caller_user: str
    callee_user: str
    caller_ip: str
    callee_ip: str
    from_tag: str
    to_tag: str
    transport: str                      # "UDP" | "TCP"
    caller_port: int = SIP_PORT
    callee_port: int = SIP_PORT


def _uri(user: str, address: str, port: int | None = None) -> str:
    suffix = "" if port in (None, SIP_PORT) else f":{port}"
    return f"sip:{user}@{host_part(address)}{suffix}"


def _body_headers(body: str) -> list[str]:
    if not body:
        return ["Content-Length: 0"]
    return ["Content-Type: application/sdp", f"Content-Length: {len(body.encode('ascii'))}"]


def request(
    d: Dialog,
    method: str,
    cseq: int,
    *,
    from_caller: bool,
    branch: str,
    body: str = "",
    extra: tuple[str, ...] = (),
    established: bool = True,
) -> bytes:
    """A request inside (or opening) the dialog, sent by the caller or by the callee."""
    src_ip, dst_ip = (d.caller_ip, d.callee_ip) if from_caller else (d.callee_ip, d.caller_ip)
    src_port = d.caller_port if from_caller else d.callee_port
    target_user = d.callee_user if from_caller else d.caller_user
    from_user, to_user = (d.caller_user, d.callee_user) if from_caller else (d.callee_user, d.caller_user)
    from_tag, to_tag = (d.from_tag, d.to_tag) if from_caller else (d.to_tag, d.from_tag)
    to = f"<{_uri(to_user, dst_ip)}>" + (f";tag={to_tag}" if established else "")
    headers = [
        f"{method} {_uri(target_user, dst_ip)};user=phone SIP/2.0",
        f"Via: SIP/2.0/{d.transport} {host_part(src_ip)}:{src_port};branch=z9hG4bK{branch}",
        "Max-Forwards: 70",
        f"From: <{_uri(from_user, src_ip)}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {d.call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <{_uri(from_user, src_ip, src_port)};transport={d.transport.lower()}>",
        *extra,
    ]
    if method == "INVITE":
        headers += [f"Allow: {ALLOW}", "Supported: timer, 100rel"]
    headers.append("User-Agent: rtpcore-callgen")
    return _finish(headers, body)


def response(
    d: Dialog,
    status: int,
    reason: str,
    cseq: int,
    method: str,
    *,
    to_caller: bool,
    branch: str,
    body: str = "",
    with_to_tag: bool = True,
) -> bytes:
    """A response to the request the other party sent (to_caller: the caller sent the request)."""
    req_src, req_dst = (d.caller_ip, d.callee_ip) if to_caller else (d.callee_ip, d.caller_ip)
    req_port, resp_port = (d.caller_port, d.callee_port) if to_caller else (d.callee_port, d.caller_port)
    from_user, to_user = (d.caller_user, d.callee_user) if to_caller else (d.callee_user, d.caller_user)
    from_tag, to_tag = (d.from_tag, d.to_tag) if to_caller else (d.to_tag, d.from_tag)
    to = f"<{_uri(to_user, req_dst)}>" + (f";tag={to_tag}" if with_to_tag else "")
    headers = [
        f"SIP/2.0 {status} {reason}",
        f"Via: SIP/2.0/{d.transport} {host_part(req_src)}:{req_port};branch=z9hG4bK{branch}",
        f"From: <{_uri(from_user, req_src)}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {d.call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if status != 100:
        headers.append(f"Contact: <{_uri(to_user, req_dst, resp_port)};transport={d.transport.lower()}>")
    headers.append("Server: rtpcore-callgen")
    return _finish(headers, body)


def _finish(headers: list[str], body: str) -> bytes:
    return ("\r\n".join(headers + _body_headers(body)) + "\r\n\r\n" + body).encode("ascii")
