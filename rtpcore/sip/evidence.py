"""What ties two hops into one call: per-hop facts, and the scored evidence for one (upstream, downstream) pair.

Each item is independent evidence with points (log-odds-like, negative when it speaks against the link)
and one plain sentence, so `rtphelper legs --explain` can say why two dialogs are one call.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from rtpcore.sip.dialog import SIDE_A, Hop
from rtpcore.sip.message import SipMessage, uri_user, _angle_uri  # noqa: PLC2701 - the same URI rules as From/To
from rtpcore.sip.numbering import NumberPlan, compare_numbers
from rtpcore.sip.sdp import SessionDescription

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
ORIGIN_POINTS = 2.0
DEFAULT_CORRELATION_HEADERS = ("X-CID",)
_NULL_UUID = "0" * 32
_ICID = re.compile(r"icid-value\s*=\s*\"?([^;\"\s]+)", re.I)
_STATIC_CODECS = {0: "pcmu/8000", 3: "gsm/8000", 4: "g723/8000", 8: "pcma/8000", 9: "g722/8000", 18: "g729/8000"}
_IDENTITY_HEADERS = ("p-asserted-identity", "remote-party-id")
_DIVERSION_HEADERS = ("diversion", "history-info")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One reason for (or against) linking two hops: its points and a sentence a support engineer can check."""

    kind: str        # timing | address | identity | sdp
    points: float
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "points": self.points, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class SdpFacts:
    """The parts of one side's first SDP that survive (or betray) a relay."""

    address: str | None
    port: int
    codecs: frozenset[str]
    ptime: str | None
    origin: tuple[str, str] | None   # (username, sess-id) of o=


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
    ringing_ns: int | None
    answer_ns: int | None
    bye_ns: int | None
    cancel_ns: int | None
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


def _headers_by_name(msg: SipMessage) -> dict[str, list[str]]:
    """One pass over the headers (header() walks them on every call)."""
    from rtpcore.sip.message import canonical_header_name

    out: dict[str, list[str]] = {}
    for name, value in msg.headers:
        out.setdefault(canonical_header_name(name), []).append(value)
    return out


def _users(values: list[str]) -> list[str | None]:
    users: list[str | None] = []
    for value in values:
        for part in value.split(","):
            if "sip:" in part.lower() or "tel:" in part.lower():
                users.append(uri_user(_angle_uri(part)))
    return users


def _sdp_facts(msg: SipMessage) -> SdpFacts | None:
    try:
        text = msg.sdp()
        sdp = SessionDescription.parse(text) if text else None
    except ValueError:
        return None
    m = sdp.audio() if sdp is not None else None
    if sdp is None or m is None or text is None:
        return None
    codecs = {name.lower() for _, name in m.rtpmap}
    codecs |= {_STATIC_CODECS[int(f)] for f in m.formats if f.isdigit() and int(f) in _STATIC_CODECS}
    codecs = {c for c in codecs if not c.startswith("telephone-event")}
    ptime = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("a=ptime:")), None)
    origin = next((tuple(line[2:].split()[:2]) for line in text.splitlines() if line.startswith("o=")), None)
    return SdpFacts(sdp.media_address(m), m.port, frozenset(codecs), ptime,
                    origin if origin is not None and len(origin) == 2 else None)  # type: ignore[arg-type]


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
    called = tuple(dict.fromkeys(n for n in (norm(inv.request_user), norm(inv.to_user)) if n))
    ids = [inv.from_user, *_users([v for h in _IDENTITY_HEADERS for v in headers.get(h, [])])]
    calling = tuple(dict.fromkeys(n for n in map(norm, ids) if n))
    diverted = tuple(dict.fromkeys(n for n in map(norm, _users([v for h in _DIVERSION_HEADERS for v in headers.get(h, [])])) if n))
    ringing = answer = bye = cancel = None
    sdp_a = sdp_b = None
    for pkt in hop.packets:
        msg = pkt.message
        if msg.is_request:
            if msg.method == "BYE" and bye is None:
                bye = pkt.ts_ns
            elif msg.method == "CANCEL" and cancel is None:
                cancel = pkt.ts_ns
        elif msg.status is not None and msg.status < 300 and msg.cseq_method == "INVITE":
            if 180 <= msg.status < 190 and ringing is None:
                ringing = pkt.ts_ns
            elif msg.status >= 200 and answer is None and msg.cseq_number == inv.cseq_number:
                answer = pkt.ts_ns
        if msg.body and (sdp_a is None or sdp_b is None):
            side = hop.side_of(pkt)
            if side == SIDE_A and sdp_a is None:
                sdp_a = _sdp_facts(msg)
            elif side != SIDE_A and sdp_b is None:
                sdp_b = _sdp_facts(msg)
    correlation = _correlation(headers, config.correlation_headers)
    facts = HopFacts(
        index=index, call_id=hop.call_id, a=hop.a, b=hop.b, invite_ns=invite_pkt.ts_ns, end_ns=hop.end_ns,
        from_tag=inv.from_tag, cseq=inv.cseq_number, called=called, calling=calling, diverted=diverted,
        correlation=correlation, ringing_ns=ringing, answer_ns=answer, bye_ns=bye, cancel_ns=cancel,
        sdp_a=sdp_a, sdp_b=sdp_b,
    )
    keys = [f"cid {hop.call_id}", *(f"corr {c}" for c in correlation), *(f"num {n}" for n in called)]
    if inv.from_tag:
        keys.append(f"tag {inv.from_tag}")
    if sdp_a is not None and sdp_a.origin is not None:
        keys.append(f"o {sdp_a.origin[0]} {sdp_a.origin[1]}")
    keys += [f"tail {n.lstrip('+')[-8:]}" for n in called if len(n.lstrip("+")) >= 8]
    return replace(facts, keys=tuple(dict.fromkeys(keys)))


def _ms(ns: int) -> str:
    return f"{ns / MS:.0f} ms" if abs(ns) < 10 * S else f"{ns / S:.1f} s"


def _relay(what: str, up: int | None, down: int | None, *, response: bool) -> Evidence | None:
    """A response travels downstream→upstream, a BYE either way; twins close in time are one event."""
    if up is None or down is None:
        return None
    delta = up - down
    if abs(delta) <= RELAY_DELTA_NS and (not response or delta >= -RELAY_TIGHT_NS):
        points = RELAY_TIGHT_POINTS if abs(delta) <= RELAY_TIGHT_NS else RELAY_POINTS
        return Evidence("timing", points, f"{what} on both hops within {_ms(abs(delta))}")
    if abs(delta) > CONTRADICTION_NS:
        return Evidence("timing", CONTRADICTION_POINTS, f"{what} {_ms(abs(delta))} apart on the two hops")
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
    out.append(Evidence("timing", points, f"INVITE forwarded {_ms(dt)} after the upstream INVITE"))
    for what, u, d, resp in (("18x ringing", up.ringing_ns, down.ringing_ns, True),
                             ("200 OK answer", up.answer_ns, down.answer_ns, True),
                             ("BYE", up.bye_ns, down.bye_ns, False), ("CANCEL", up.cancel_ns, down.cancel_ns, False)):
        item = _relay(what, u, d, response=resp)
        if item is not None:
            out.append(item)
    # Addresses: the box that received the upstream INVITE sent the downstream one.
    if up.call_id == down.call_id:
        out.append(Evidence("identity", SAME_CALL_ID_POINTS, f"same Call-ID {up.call_id} (a proxy)"))
    if up.b == down.a:
        out.append(Evidence("address", SAME_BOX_POINTS, f"the INVITE went to {up.b} and left again from {down.a}"))
    else:
        box_up, box_down = config.box_of(up.b), config.box_of(down.a)
        if box_up is not None and box_up == box_down:
            out.append(Evidence("address", SAME_BOX_POINTS, f"{up.b} and {down.a} are both host {box_up} (hosts.yaml)"))
        elif (up.b, down.a) in learned:
            out.append(Evidence("address", SAME_BOX_POINTS,
                                f"{up.b} → {down.a} forwards other calls of this capture (same Call-ID or correlation id)"))
        else:
            out.append(Evidence("address", UNTIED_BOX_POINTS,
                                f"the INVITE went to {up.b} but the next left from {down.a}; nothing ties the two "
                                "(list both in hosts.yaml sip_addresses if they are one SBC)"))
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
    diverted = compare_numbers(up.called, down.diverted, "diverted-from number", DIVERSION_POINTS)
    if diverted is not None and diverted.points > 0:
        out.append(Evidence("identity", diverted.points, diverted.detail))
    # SDP.
    if up.sdp_a is not None and down.sdp_a is not None:
        ua, da = up.sdp_a, down.sdp_a
        if ua.codecs and da.codecs:
            if ua.codecs == da.codecs:
                out.append(Evidence("sdp", CODECS_EQUAL_POINTS, f"same codecs offered ({', '.join(sorted(ua.codecs))})"))
            elif not ua.codecs & da.codecs:
                out.append(Evidence("sdp", CODECS_DISJOINT_POINTS, "no codec in common between the two offers"))
        if ua.ptime and ua.ptime == da.ptime:
            out.append(Evidence("sdp", PTIME_POINTS, f"same ptime {ua.ptime}"))
        if ua.origin is not None and ua.origin == da.origin and up.call_id != down.call_id:
            out.append(Evidence("sdp", ORIGIN_POINTS, f"o= session {ua.origin[1]} kept"))
    return out
