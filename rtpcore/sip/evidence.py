"""What ties two hops into one call: per-hop facts, and the scored evidence for one (upstream, downstream) pair.

Each item is independent evidence with points (log-odds-like, negative when it speaks against the link)
and one plain sentence, so `rtphelper legs --explain` can say why two dialogs are one call.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field

from rtpcore.sip.dialog import SIDE_A, Hop, message_ids
from rtpcore.sip.message import (  # the same URI and tag rules as SipMessage's From/To properties
    SDP_CONTENT_TYPE,
    SipMessage,
    _angle_uri,
    _header_tag,
    canonical_header_name,
    uri_user,
)
from rtpcore.sip.numbering import NumberPlan, compare_numbers

MS = 1_000_000
S = 1_000_000_000
# A B2BUA or proxy forwards the INVITE within this time of receiving it (the candidate window).
FORWARD_WINDOW_NS = 5 * S
# INVITE forwarding delay bands and their points: an SBC turns an INVITE around in milliseconds.
INVITE_BANDS: tuple[tuple[int, float], ...] = ((100 * MS, 3.0), (500 * MS, 2.0), (2 * S, 1.0), (FORWARD_WINDOW_NS, 0.0))
# A response or BYE relayed across the box arrives within this delta of its twin on the other hop;
# SBCs take milliseconds, a loaded or remote-captured one up to a second (seen: 765 ms) for less evidence.
RELAY_TIGHT_NS = 50 * MS
RELAY_DELTA_NS = 1 * S
RELAY_TIGHT_POINTS = 1.5
# Twins further apart than this speak against the link (a B2BUA does not answer one side seconds apart).
CONTRADICTION_NS = 3 * S
RELAY_POINTS = 0.5
CONTRADICTION_POINTS = -2.0
SAME_CALL_ID_POINTS = 6.0
CORRELATION_POINTS = 6.0
SAME_BOX_POINTS = 2.0
UNTIED_BOX_POINTS = -1.0    # the INVITE went to one address and the next left from another, nothing ties them
MEDIA_RELAY_POINTS = 1.0
SDP_PASSTHROUGH_POINTS = 2.0
FROM_TAG_POINTS = 3.0
CSEQ_POINTS = 0.5
CALLED_POINTS = 3.0
CALLING_POINTS = 2.0
DIVERSION_POINTS = 2.0
CODECS_EQUAL_POINTS = 0.5   # most phones offer PCMU/PCMA at 20 ms: weak
CODECS_DISJOINT_POINTS = -1.0
PTIME_POINTS = 0.25
SRTP_FAMILY_POINTS = 0.5
ORIGIN_POINTS = 2.0
DEFAULT_CORRELATION_HEADERS = ("X-CID",)
_NULL_UUID = "0" * 32
_ICID = re.compile(r"icid-value\s*=\s*\"?([^;\"\s]+)", re.I)
_STATIC_CODECS = {0: "pcmu/8000", 3: "gsm/8000", 4: "g723/8000", 8: "pcma/8000", 9: "g722/8000", 18: "g729/8000"}
# The events compared across hops, in HopFacts.events order: (name, is a response).
EVENTS = (("18x ringing", True), ("200 OK answer", True), ("BYE", False), ("CANCEL", False))
_IDENTITY_HEADERS = ("p-asserted-identity", "remote-party-id")
_DIVERSION_HEADERS = ("diversion", "history-info")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One reason for (or against) linking two hops: its points and a sentence a support engineer can check."""

    kind: str        # timing | address | identity | sdp
    points: float
    text: str        # the sentence, or a str.format template for `args` (formatted only when shown)
    args: tuple[object, ...] = ()

    @property
    def detail(self) -> str:
        """The sentence (most candidates are scored and dropped: formatting waits until one is shown)."""
        return self.text.format(*self.args) if self.args else self.text

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "points": self.points, "detail": self.detail}


class _Codecs:
    """A set of names (codecs, suite families) that formats sorted and comma-separated when a sentence is shown."""

    __slots__ = ("codecs",)

    def __init__(self, codecs: frozenset[str]) -> None:
        self.codecs = codecs

    def __format__(self, spec: str) -> str:
        return ", ".join(sorted(self.codecs))


class _Duration:
    """A time difference that formats as '42 ms' or '12.3 s' when a sentence is shown."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __format__(self, spec: str) -> str:
        return f"{self.ns / MS:.0f} ms" if abs(self.ns) < 10 * S else f"{self.ns / S:.1f} s"


@dataclass(frozen=True, slots=True)
class SdpFacts:
    """The parts of one side's first SDP that survive (or betray) a relay."""

    address: str | None
    port: int
    codecs: frozenset[str]
    ptime: str | None
    origin: tuple[str, str] | None   # (username, sess-id) of o=
    srtp_families: frozenset[str] = frozenset()   # SDES suite families offered (AES_CM_128, AEAD_AES_256_GCM, …)


@dataclass(frozen=True, slots=True)
class HopFacts:
    """Everything assembly compares about one hop, extracted once (hops are compared many times)."""

    index: int
    call_id: str
    a: str
    b: str
    invite_ns: int
    end_ns: int
    from_tag: str | None
    cseq: int
    called: tuple[str, ...]
    calling: tuple[str, ...]
    diverted: tuple[str, ...]
    correlation: frozenset[str]
    events: tuple[int | None, int | None, int | None, int | None]   # first 18x, 200 OK, BYE, CANCEL (EVENTS)
    sdp_a: SdpFacts | None
    sdp_b: SdpFacts | None
    keys: tuple[str, ...] = field(default=())   # index keys that find this hop's candidates


@dataclass(frozen=True, slots=True)
class AssemblyConfig:
    """Number plan, correlation headers and the boxes of hosts.yaml that assembly uses as evidence."""

    numbers: NumberPlan = NumberPlan()
    correlation_headers: tuple[str, ...] = DEFAULT_CORRELATION_HEADERS
    boxes: tuple[tuple[str, str], ...] = ()   # (address, host id) from hosts.yaml sip_addresses/media_addresses

    def box_of(self, address: str | None) -> str | None:
        """The hosts.yaml host id an address belongs to, if listed."""
        if address is None:
            return None
        return next((host for addr, host in self.boxes if addr == address), None)


@functools.lru_cache(maxsize=4096)
def _canonical(name: str) -> str:
    return canonical_header_name(name)


def _headers_by_name(msg: SipMessage) -> dict[str, list[str]]:
    """One pass over the headers (header() walks them on every call)."""
    out: dict[str, list[str]] = {}
    for name, value in msg.headers:
        out.setdefault(_canonical(name), []).append(value)
    return out


def _first_user(values: list[str] | None) -> str | None:
    return uri_user(_angle_uri(values[0])) if values else None


def _users(values: list[str]) -> list[str | None]:
    users: list[str | None] = []
    for value in values:
        for part in value.split(","):
            if "sip:" in part.lower() or "tel:" in part.lower():
                users.append(uri_user(_angle_uri(part)))
    return users


def _sdp_facts(msg: SipMessage, headers: dict[str, list[str]] | None = None) -> SdpFacts | None:
    """Address, port, codecs, ptime and o= of the first audio stream: a line scan, cheaper than a full parse."""
    content_type = headers.get("content-type") if headers is not None else None
    try:
        if content_type and content_type[0].strip().lower() == SDP_CONTENT_TYPE:
            text: str | None = msg.body.decode("utf-8", "replace")
        else:
            text = msg.sdp()
    except ValueError:
        return None
    if not text:
        return None
    origin: tuple[str, str] | None = None
    session_c: str | None = None
    media_c: str | None = None
    port: int | None = None
    formats: list[str] = []
    rtpmap: dict[str, str] = {}
    ptime: str | None = None
    families: set[str] = set()
    in_audio = seen_audio = False
    for raw in text.splitlines():
        kind, _, value = raw.strip().partition("=")
        if kind == "m":
            if seen_audio:
                break
            parts = value.split()
            in_audio = len(parts) >= 3 and parts[0] == "audio" and parts[1].split("/")[0].isdigit() \
                and int(parts[1].split("/")[0]) != 0
            if in_audio:
                seen_audio = True
                port, formats = int(parts[1].split("/")[0]), parts[3:]
        elif kind == "o" and origin is None:
            fields = value.split()
            origin = (fields[0], fields[1]) if len(fields) >= 2 else None
        elif kind == "c":
            parts = value.split()
            address = parts[2].split("/")[0] if len(parts) >= 3 else None
            if not seen_audio:
                session_c = address
            elif in_audio:
                media_c = address
        elif kind == "a" and (in_audio or not seen_audio):
            name, _, attr = value.partition(":")
            if name == "rtpmap" and in_audio:
                pt, _, encoding = attr.partition(" ")
                rtpmap[pt] = encoding.strip().lower()
            elif name == "ptime":
                ptime = attr.strip()
            elif name == "crypto" and in_audio:
                parts = attr.split(None, 2)   # tag, suite, key params: the key itself is never kept
                if len(parts) >= 2:
                    families.add(parts[1].upper().split("_HMAC", 1)[0])
    if port is None:
        return None
    codecs = {rtpmap.get(f) or _STATIC_CODECS.get(int(f), "") if f.isdigit() else "" for f in formats}
    codecs = {c for c in codecs if c and not c.startswith("telephone-event")}
    return SdpFacts(_normal_address(media_c or session_c), port, frozenset(codecs), ptime, origin, frozenset(families))


@functools.lru_cache(maxsize=65536)
def _normal_address(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _correlation(headers: dict[str, list[str]], extra: tuple[str, ...]) -> frozenset[str]:
    values: set[str] = set()
    for value in headers.get("session-id", []):
        for part in value.split(";"):
            uuid = part.split("=", 1)[-1].strip().lower()
            if len(uuid) == 32 and uuid != _NULL_UUID:
                values.add(f"Session-ID {uuid}")
    for value in headers.get("p-charging-vector", []):
        match = _ICID.search(value)
        if match:
            values.add(f"P-Charging-Vector icid-value {match.group(1)}")
    for name in extra:
        for value in headers.get(name.lower(), []):
            if value.strip():
                values.add(f"{name} {value.strip()}")
    return frozenset(values)


def hop_facts(index: int, hop: Hop, config: AssemblyConfig) -> HopFacts:
    """Extract the facts of one hop in one pass over its messages."""
    invite_pkt = hop.invite
    inv = invite_pkt.message
    headers = _headers_by_name(inv)
    plan = config.numbers
    norm = plan.normalise
    from_values = headers.get("from")
    from_tag = _header_tag(from_values[0]) if from_values else None
    called = tuple(dict.fromkeys(n for n in (norm(inv.request_user), norm(_first_user(headers.get("to")))) if n))
    identities = [_first_user(from_values), *_users([v for h in _IDENTITY_HEADERS for v in headers.get(h, [])])]
    calling = tuple(dict.fromkeys(n for n in map(norm, identities) if n))
    diverted = tuple(dict.fromkeys(n for n in map(norm, _users([v for h in _DIVERSION_HEADERS for v in headers.get(h, [])])) if n))
    ringing = answer = bye = cancel = None
    sdp_a = sdp_b = None
    ids = hop.ids if len(hop.ids) == len(hop.packets) else [message_ids(p.message) for p in hop.packets]
    invite_cseq = message_ids(inv).cseq
    want_b = bool(config.boxes)   # only the hosts.yaml media check reads the B side's SDP
    for pkt, mid in zip(hop.packets, ids):
        msg = pkt.message
        method, status = msg.method, msg.status
        if method is not None:
            if method == "BYE":
                bye = bye or pkt.ts_ns
            elif method == "CANCEL":
                cancel = cancel or pkt.ts_ns
        elif status is not None and status < 300 and mid.cseq_method == "INVITE":
            if 180 <= status < 190:
                ringing = ringing or pkt.ts_ns
            elif status >= 200 and answer is None and mid.cseq == invite_cseq:
                answer = pkt.ts_ns
        if msg.body and (sdp_a is None or (sdp_b is None and want_b)):
            side = hop.side_of(pkt)
            if side == SIDE_A and sdp_a is None:
                sdp_a = _sdp_facts(msg, headers if msg is inv else None)
            elif side != SIDE_A and sdp_b is None and want_b:
                sdp_b = _sdp_facts(msg)
    correlation = _correlation(headers, config.correlation_headers)
    keys = [f"cid {hop.call_id}", *(f"corr {c}" for c in correlation), *(f"num {n}" for n in called),
            *(f"num {n}" for n in calling)]
    if from_tag:
        keys.append(f"tag {from_tag}")
    if sdp_a is not None and sdp_a.origin is not None:
        keys.append(f"o {sdp_a.origin[0]} {sdp_a.origin[1]}")
    keys += [f"tail {n.lstrip('+')[-8:]}" for n in (*called, *calling) if len(n.lstrip("+")) >= 8]
    return HopFacts(
        index=index, call_id=hop.call_id, a=hop.a, b=hop.b, invite_ns=invite_pkt.ts_ns, end_ns=hop.end_ns,
        from_tag=from_tag, cseq=invite_cseq, called=called, calling=calling, diverted=diverted,
        correlation=correlation, events=(ringing, answer, bye, cancel),
        sdp_a=sdp_a, sdp_b=sdp_b, keys=tuple(dict.fromkeys(keys)),
    )


def _relay(what: str, up: int, down: int, *, response: bool) -> Evidence | None:
    """A response travels downstream→upstream, a BYE either way; twins close in time are one event."""
    delta = up - down
    if abs(delta) <= RELAY_DELTA_NS and (not response or delta >= -RELAY_TIGHT_NS):
        points = RELAY_TIGHT_POINTS if abs(delta) <= RELAY_TIGHT_NS else RELAY_POINTS
        return Evidence("timing", points, "{} on both hops within {}", (what, _Duration(abs(delta))))
    if abs(delta) > CONTRADICTION_NS:
        return Evidence("timing", CONTRADICTION_POINTS, "{} {} apart on the two hops", (what, _Duration(abs(delta))))
    return None


def score(
    up: HopFacts, down: HopFacts, config: AssemblyConfig, learned: frozenset[tuple[str, str]] = frozenset()
) -> list[Evidence]:
    """Every piece of evidence for `down` being the onward hop of `up` (the caller sums the points).

    `learned`: (in, out) address pairs that carried other calls with the same Call-ID or correlation
    header — the two sides of one box, learned from the capture when hosts.yaml does not list them.
    """
    out: list[Evidence] = []
    dt = down.invite_ns - up.invite_ns
    points = next(p for limit, p in INVITE_BANDS if dt <= limit)
    out.append(Evidence("timing", points, "INVITE forwarded {} after the upstream INVITE", (_Duration(dt),)))
    for (what, resp), u, d in zip(EVENTS, up.events, down.events):
        if u is not None and d is not None:
            item = _relay(what, u, d, response=resp)
            if item is not None:
                out.append(item)
    # Addresses: the box that received the upstream INVITE sent the downstream one.
    if up.call_id == down.call_id:
        out.append(Evidence("identity", SAME_CALL_ID_POINTS, f"same Call-ID {up.call_id} (a proxy)"))
    if up.b == down.a:
        out.append(Evidence("address", SAME_BOX_POINTS, "the INVITE went to {} and left again from {}", (up.b, down.a)))
    else:
        box_up, box_down = config.box_of(up.b), config.box_of(down.a)
        if box_up is not None and box_up == box_down:
            out.append(Evidence("address", SAME_BOX_POINTS, f"{up.b} and {down.a} are both host {box_up} (hosts.yaml)"))
        elif (up.b, down.a) in learned:
            out.append(Evidence("address", SAME_BOX_POINTS,
                                f"{up.b} → {down.a} forwards other calls of this capture (same Call-ID or correlation id)"))
        else:
            out.append(Evidence("address", UNTIED_BOX_POINTS,
                                "the INVITE went to {} but the next left from {}; nothing ties the two "
                                "(list both in hosts.yaml sip_addresses if they are one SBC)", (up.b, down.a)))
    if up.sdp_b is not None and down.sdp_a is not None:
        relay_up, relay_down = config.box_of(up.sdp_b.address), config.box_of(down.sdp_a.address)
        if relay_up is not None and relay_up == relay_down:
            out.append(Evidence("address", MEDIA_RELAY_POINTS,
                                f"media addresses {up.sdp_b.address} and {down.sdp_a.address} both belong to host {relay_up}"))
    if up.sdp_a is not None and down.sdp_a is not None and (up.sdp_a.address, up.sdp_a.port) == (down.sdp_a.address, down.sdp_a.port):
        out.append(Evidence("sdp", SDP_PASSTHROUGH_POINTS, f"the offer's media {up.sdp_a.address}:{up.sdp_a.port} passed through unchanged"))
    # Identity.
    for corr in sorted(up.correlation & down.correlation):
        out.append(Evidence("identity", CORRELATION_POINTS, f"{corr} carried across"))
    if up.call_id != down.call_id and up.from_tag and up.from_tag == down.from_tag:
        out.append(Evidence("identity", FROM_TAG_POINTS, f"From-tag {up.from_tag} kept (topology hiding)"))
        if up.cseq == down.cseq:
            out.append(Evidence("identity", CSEQ_POINTS, f"CSeq {up.cseq} kept"))
    for match in (compare_numbers(up.called, down.called, "called number", CALLED_POINTS),
                  compare_numbers(up.calling, down.calling, "calling number", CALLING_POINTS)):
        if match is not None:
            out.append(Evidence("identity", match.points, match.detail))
    diverted = compare_numbers(up.called, down.diverted, "diverted-from number", DIVERSION_POINTS) if down.diverted else None
    if diverted is not None and diverted.points > 0:
        out.append(Evidence("identity", diverted.points, diverted.detail))
    # SDP.
    if up.sdp_a is not None and down.sdp_a is not None:
        ua, da = up.sdp_a, down.sdp_a
        if ua.codecs and da.codecs:
            if ua.codecs == da.codecs:
                out.append(Evidence("sdp", CODECS_EQUAL_POINTS, "same codecs offered ({})", (_Codecs(ua.codecs),)))
            elif not ua.codecs & da.codecs:
                out.append(Evidence("sdp", CODECS_DISJOINT_POINTS, "no codec in common between the two offers"))
        if ua.ptime and ua.ptime == da.ptime:
            out.append(Evidence("sdp", PTIME_POINTS, "same ptime {}", (ua.ptime,)))
        shared = ua.srtp_families & da.srtp_families
        if shared:  # SBCs often drop SRTP on one side, so a missing family says nothing; a shared one says a little
            out.append(Evidence("sdp", SRTP_FAMILY_POINTS, "same SRTP suite family offered ({})", (_Codecs(shared),)))
        if ua.origin is not None and ua.origin == da.origin and up.call_id != down.call_id:
            out.append(Evidence("sdp", ORIGIN_POINTS, f"o= session {ua.origin[1]} kept"))
    return out
