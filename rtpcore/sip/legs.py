"""Resolve a call's media legs (carrier ↔ media host ↔ core) from its SIP for a given direction."""
from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from rtpcore.errors import CallSelectionError, DirectionMismatchError, SipError
from rtpcore.literals import DIRECTIONS, Direction, HopSide, is_direction
from rtpcore.plan import (
    LEG_CARRIER,
    LEG_CORE,
    LEG_ORDER,
    SIDE_HOST,
    SIDE_PEER,
    Endpoint,
    KeyProblem,
    Leg,
    LegPlan,
    MediaSide,
    Negotiation,
)
from rtpcore.sip.assembly import (
    AssembledCall,
    AssemblyConfig,
    assemble,
    assemble_packets,
    load_assembly_config,
    paused_gc,
)
from rtpcore.sip.capture import DroppedSip, SipPacket, scan_sip
from rtpcore.sip.crypto import CryptoAttribute
from rtpcore.sip.dialog import SIDE_A, SIDE_B, Hop, OfferAnswer, Sdp, build_hops, numbers_match
from rtpcore.sip.evidence import FORWARD_WINDOW_NS
from rtpcore.sip.sdp import MAX_PORT, MediaDescription, SessionDescription, is_address

log = logging.getLogger(__name__)

# Media clocks and SIP clocks are different hosts' clocks, and media outlives the BYE.
DEFAULT_MARGIN_NS = 2 * 10**9
_UNSPECIFIED = ("0.0.0.0", "::")
UNRESOLVED_V4, UNRESOLVED_V6 = _UNSPECIFIED  # a peer whose c= is a name: it sends from no address we know


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One assembled call, as listed to the user when a selection is needed."""

    call_id: str
    call_ids: tuple[str, ...]
    from_user: str | None
    to_user: str | None
    start_ns: int
    ambiguous: bool = False

    def line(self) -> str:
        when = datetime.fromtimestamp(self.start_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        ids = f"  (Call-IDs {', '.join(self.call_ids)})" if len(self.call_ids) > 1 else ""
        flag = "  [assembly ambiguous: see --explain]" if self.ambiguous else ""
        return f"{self.call_id}  from {self.from_user or '?'}  to {self.to_user or '?'}  at {when}{ids}{flag}"


def resolve_legs(
    sip_path: Path,
    direction: str,
    *,
    call_id: str | None = None,
    number: str | None = None,
    margin_ns: int = DEFAULT_MARGIN_NS,
    assembly: AssemblyConfig | None = None,
) -> LegPlan:
    """Read a SIP pcap and build the leg plan of the selected call (assembly settings: runtime.env + hosts.yaml)."""
    capture = scan_sip(Path(sip_path))
    try:
        plan = plan_from_packets(
            list(capture.packets), direction, source=str(sip_path), call_id=call_id, number=number, margin_ns=margin_ns,
            assembly=assembly if assembly is not None else load_assembly_config(),
        )
    except SipError as exc:
        if capture.packets or not capture.stats.tcp_discarded_bytes:
            raise
        raise SipError(
            f"{exc}; it has {capture.stats.tcp_discarded_bytes} bytes of TCP that are not plain SIP — SIP over TLS "
            "(port 5061) or WebSocket cannot be read: capture the SIP where it is in clear, or export it decrypted"
        ) from None
    _refuse_lost_invite(plan, capture.stats.dropped, str(sip_path))
    extra = capture.stats.warnings(str(sip_path))
    lost = tuple(f"{sip_path}: {d.text()}" for d in capture.stats.dropped if d.message.is_invite)
    if not extra:
        return plan
    for line in extra:
        log.warning(line)
    return replace(plan, warnings=tuple(dict.fromkeys(plan.warnings + tuple(x for x in extra if x not in lost))),
                   findings=plan.findings + lost)


def _refuse_lost_invite(plan: LegPlan, dropped: Sequence[DroppedSip], source: str) -> None:
    """A hop whose INVITE was lost hides where the call came from: refuse rather than name the legs wrongly."""
    for lost in dropped:
        if not lost.message.is_initial_invite:
            continue  # a lost re-INVITE or other message costs a negotiation at most: a warning, not a refusal
        ours = lost.message.call_id in plan.call_ids
        upstream = plan.start_ns - FORWARD_WINDOW_NS <= lost.ts_ns <= plan.start_ns
        if ours or upstream:
            why = ("it is one of this call's dialogs" if ours else
                   "it was sent just before this call's first INVITE, so it may be the call's first hop")
            raise SipError(
                f"{source}: {lost.text()}; {why}, and without it the legs and the direction would be guessed from "
                "the hops that remain (the core hop could be taken for the carrier). Capture or export the SIP again "
                "so the INVITE is complete, or give the SIP of a call without an oversize message"
            )


def list_calls(packets: list[SipPacket], assembly: AssemblyConfig | None = None) -> list[CallSummary]:
    """Every INVITE call in the capture (hops assembled by evidence), in time order."""
    return [_summary(call) for call in assemble_calls(packets, assembly)]


def assemble_calls(packets: list[SipPacket], assembly: AssemblyConfig | None = None) -> list[AssembledCall]:
    """The capture's calls with the evidence that tied their hops (`calls --json`, `legs --explain`)."""
    return assemble_packets(packets, assembly)


def select_call(
    packets: list[SipPacket],
    *,
    source: str = "SIP capture",
    call_id: str | None = None,
    number: str | None = None,
    assembly: AssemblyConfig | None = None,
) -> AssembledCall:
    """The one assembled call that --call-id (any of its Call-IDs) / --number names, else a listing error."""
    with paused_gc():
        hops = build_hops(packets)
    if not hops:
        methods = Counter(p.message.method or f"{p.message.status}" for p in packets)
        seen = ", ".join(f"{m} ×{n}" for m, n in methods.most_common(6)) or "no SIP messages at all"
        raise SipError(f"{source}: no INVITE found ({seen}); give the SIP capture of the call")
    return _select(assemble(hops, assembly), source, call_id, number)


def plan_from_packets(
    packets: list[SipPacket],
    direction: str,
    *,
    source: str = "SIP capture",
    call_id: str | None = None,
    number: str | None = None,
    margin_ns: int = DEFAULT_MARGIN_NS,
    assembly: AssemblyConfig | None = None,
) -> LegPlan:
    """Select one call among the packets and resolve its legs for the direction."""
    if not is_direction(direction):
        raise SipError(f"direction {direction!r} is not one of: {', '.join(DIRECTIONS)}")
    call = select_call(packets, source=source, call_id=call_id, number=number, assembly=assembly)
    plan = _plan(list(call.hops), direction, source, margin_ns)
    notes = call.notes()
    for note in notes:
        log.warning(note)
    return replace(plan, warnings=tuple(dict.fromkeys((*plan.warnings, *notes)))) if notes else plan


def _summary(call: AssembledCall) -> CallSummary:
    first = call.hops[0].invite.message
    return CallSummary(call.call_ids[0], call.call_ids, first.from_user, first.to_user, call.hops[0].invite.ts_ns,
                       call.ambiguous)


def _select(calls: list[AssembledCall], source: str, call_id: str | None, number: str | None) -> AssembledCall:
    chosen = calls
    if call_id:
        chosen = [c for c in chosen if call_id in c.call_ids]
    if number:
        chosen = [c for c in chosen if any(_has_number(h, number) for h in c.hops)]
    if len(chosen) == 1:
        return chosen[0]
    listing = "\n".join("  " + _summary(c).line() for c in (chosen or calls))
    if not chosen:
        what = " and ".join(x for x in (call_id and f"Call-ID {call_id!r}", number and f"number {number!r}") if x)
        raise CallSelectionError(f"{source}: no call matches {what}; calls in the capture:\n{listing}")
    raise CallSelectionError(
        f"{source}: {len(chosen)} calls match; choose one with --call-id or --number:\n{listing}"
    )


def _has_number(hop: Hop, number: str) -> bool:
    msg = hop.invite.message
    return any(numbers_match(u, number) for u in (msg.from_user, msg.to_user, msg.request_user))


@dataclass(frozen=True, slots=True)
class _Segment:
    """Consecutive hops that pass the same SDP through (no media relay between them)."""

    hops: tuple[Hop, ...]


def _plan(chain: list[Hop], direction: Direction, source: str, margin_ns: int) -> LegPlan:
    warnings: list[str] = []
    first = chain[0]
    exchanges: dict[int, list[OfferAnswer]] = {}
    for hop in chain:
        done, problems = hop.offer_answers()
        exchanges[id(hop)] = done
        warnings += [f"Call-ID {hop.call_id} ({hop.a} → {hop.b}): {p}" for p in problems]
    if not exchanges[id(first)]:
        inv = first.invite
        has_sdp = inv.message.sdp() is not None
        why = "its SDP offer was never answered" if has_sdp else "it has no SDP and no response carried an offer"
        final = _final_response(first)
        if final:
            why += f" (the call ended with {final})"
        raise SipError(
            f"{source}: the INVITE at frame {inv.frame_index + 1} (Call-ID {first.call_id}) cannot give media "
            f"endpoints: {why}"
        )
    segments = _segments(chain, exchanges)
    call_end = max(h.end_ns for h in chain)
    first_name = LEG_CARRIER if direction == "inbound" else LEG_CORE
    other_name = LEG_CORE if first_name == LEG_CARRIER else LEG_CARRIER
    legs = [_leg(first_name, segments[0].hops[0], exchanges, SIDE_A, call_end, margin_ns, warnings)]
    if len(segments) >= 2:
        last = segments[-1].hops[0]
        if exchanges[id(last)]:
            legs.append(_leg(other_name, last, exchanges, SIDE_B, call_end, margin_ns, warnings))
        else:
            warnings.append(f"Call-ID {last.call_id} ({last.a} → {last.b}): no answered SDP; {other_name} leg unknown")
        if len(segments) > 2:
            warnings.append(f"{len(segments) - 1} media relays in the SIP path; using the first and the last hop")
    else:
        warnings.append(
            f"the SIP capture shows only one hop ({first.a} → {first.b}); the {other_name} leg is unknown"
        )
    _check_direction(legs, direction, first)
    legs.sort(key=lambda leg: LEG_ORDER.index(leg.name))
    warnings = list(dict.fromkeys(warnings))
    for w in warnings:
        log.warning(w)
    return LegPlan(
        call_id=first.call_id,
        call_ids=tuple(dict.fromkeys(h.call_id for h in chain)),
        direction=direction,
        legs=tuple(legs),
        start_ns=min(h.start_ns for h in chain),
        end_ns=call_end,
        warnings=tuple(warnings),
    )


def _final_response(hop: Hop) -> str | None:
    """The final response to the hop's first INVITE, e.g. '403 Forbidden', for error messages."""
    inv = hop.invite.message
    for pkt in hop.packets:
        m = pkt.message
        if not m.is_request and m.cseq_method == "INVITE" and m.cseq_number == inv.cseq_number and (m.status or 0) >= 200:
            return f"{m.status} {m.reason or ''}".strip()
    return None


def _segments(chain: list[Hop], exchanges: dict[int, list[OfferAnswer]]) -> list[_Segment]:
    """Split the chain where the upstream side's media address changes: there a media relay sits."""
    groups: list[list[Hop]] = []
    prev_addr: str | None = None
    for hop in chain:
        addr = _first_address(exchanges[id(hop)], SIDE_A)
        if groups and addr is not None and addr == prev_addr:
            groups[-1].append(hop)
        else:
            groups.append([hop])
        prev_addr = addr if addr is not None else prev_addr
    return [_Segment(tuple(g)) for g in groups]


def _first_address(done: list[OfferAnswer], side: HopSide) -> str | None:
    for oa in done:
        sdp = oa.offer.sdp if oa.offer.side == side else oa.answer.sdp
        m = sdp.audio()
        if m is not None:
            addr = sdp.media_address(m)
            if addr and addr not in _UNSPECIFIED:
                return addr
    return None


def _leg(
    name: str, hop: Hop, exchanges: dict[int, list[OfferAnswer]], peer_side: HopSide, call_end: int, margin: int,
    warnings: list[str],
) -> Leg:
    done = sorted(exchanges[id(hop)], key=lambda oa: oa.answer.ts_ns)
    negotiations: list[Negotiation] = []
    for i, oa in enumerate(done):
        until = done[i + 1].answer.ts_ns if i + 1 < len(done) else call_end
        n = _negotiation(oa, peer_side, oa.offer.ts_ns - margin, until + margin, warnings, hop)
        if n is not None:
            negotiations.append(n)
    if not negotiations:
        raise SipError(f"Call-ID {hop.call_id} ({hop.a} → {hop.b}): no usable audio stream in any SDP for the {name} leg")
    warnings += _address_warnings(name, hop, done, peer_side)
    first = negotiations[0]
    return Leg(name, first.host.rtp.ip, first.peer.rtp.ip, (hop.call_id,), tuple(negotiations))


def _media_ip(addr: str) -> str:
    """The c= address as routing compares it; a name (legal SDP) becomes "unknown": the peer is then learned."""
    text = addr.split("/")[0].partition("%")[0]
    if not is_address(text):
        return UNRESOLVED_V6 if ":" in text else UNRESOLVED_V4
    return str(ipaddress.ip_address(text))


def _address_warnings(name: str, hop: Hop, done: list[OfferAnswer], peer_side: HopSide) -> list[str]:
    """Names in c= and RTP on port 65535 (no RTCP port after it): each a warning on its message and frame."""
    out: list[str] = []
    for oa in done:
        for item in (oa.offer, oa.answer):
            m = item.sdp.audio()
            addr = item.sdp.media_address(m) if m is not None else None
            if m is None or not addr:
                continue
            where = _where(hop, item.ts_ns, item.label)
            if not is_address(addr.split("/")[0].partition("%")[0]):
                then = (f"the {name} leg's peer is learned from the media reaching the media host's port instead"
                        if item.side == peer_side else f"the {name} leg's media host endpoint is unknown, so its media "
                        "cannot be filtered")
                out.append(f"Call-ID {hop.call_id}: {where}: media address {addr!r} (c=) is a name; resolve it — {then}")
            if not m.rtcp_mux and m.rtcp_port is None and m.port >= MAX_PORT:
                out.append(f"Call-ID {hop.call_id}: {where}: RTP port {m.port} leaves no port for RTCP "
                           f"({m.port + 1}); RTCP of the {name} leg is not followed")
    return out


def _where(hop: Hop, ts_ns: int, label: str) -> str:
    """'200 INVITE at frame 7': the message a warning is about."""
    frame = next((p.frame_index + 1 for p in hop.packets if p.ts_ns == ts_ns), None)
    return f"{label} at frame {frame}" if frame is not None else label


def _negotiation(
    oa: OfferAnswer, peer_side: HopSide, start: int, end: int, warnings: list[str], hop: Hop
) -> Negotiation | None:
    mo, ma = oa.offer.sdp.audio(), oa.answer.sdp.audio()
    if mo is None or ma is None:
        warnings.append(f"Call-ID {hop.call_id}: {oa.answer.label} has no active audio stream; skipped")
        return None
    mux = mo.rtcp_mux and ma.rtcp_mux
    suite, offer_key, answer_key = _select_crypto(mo.crypto, ma.crypto)
    offer_side = _side(oa.offer.sdp, mo, mux, offer_key)
    answer_side = _side(oa.answer.sdp, ma, mux, answer_key)
    if offer_side is None or answer_side is None:
        return None  # on hold (c=0.0.0.0) or port 0: no media in this exchange
    dtls = suite is None and bool(mo.fingerprint and ma.fingerprint)
    if dtls:
        warnings.append(f"Call-ID {hop.call_id}: DTLS-SRTP (a=fingerprint) — keys are not in the SIP, media cannot be decrypted")
    problems = tuple(p for sdp, m in ((oa.offer, mo), (oa.answer, ma)) for p in _key_problems(sdp, m, peer_side))
    for p in problems:
        who = "peer" if p.side == SIDE_PEER else "media host"
        warnings.append(f"Call-ID {hop.call_id}: {p.message} from the {who}: {p.detail}")
    peer, host = (offer_side, answer_side) if oa.offer.side == peer_side else (answer_side, offer_side)
    return Negotiation(oa.offer.ts_ns, oa.answer.ts_ns, start, end, peer, host, ma.proto, suite, dtls, problems)


def _key_problems(item: Sdp, m: MediaDescription, peer_side: HopSide) -> list[KeyProblem]:
    """The SDP's unusable a=crypto lines, and an SRTP audio stream that brought no key at all."""
    side = SIDE_PEER if item.side == peer_side else SIDE_HOST
    found = [KeyProblem(item.label, side, p.line, p.kind, p.describe()) for p in item.sdp.crypto_problems]
    if m.is_secure and not m.crypto and not m.fingerprint and not found:
        found.append(KeyProblem(item.label, side, None, NO_CRYPTO,
                                f"m={m.media} {m.proto} has no a=crypto (and no a=fingerprint): no key to decrypt with"))
    return found


NO_CRYPTO = "no-crypto"


def _select_crypto(
    offered: tuple[CryptoAttribute, ...], answered: tuple[CryptoAttribute, ...]
) -> tuple[str | None, CryptoAttribute | None, CryptoAttribute | None]:
    """The answer names the suite and tag it accepted; the offer's line with that tag is the offerer's key.

    A suite we cannot decrypt (unknown, AES_192) is still named, but gives no key: nothing would authenticate.
    """
    if not answered or not offered:
        return None, None, None
    ans = answered[0]
    off = next((c for c in offered if c.tag == ans.tag and c.suite == ans.suite), None)
    off = off or next((c for c in offered if c.suite == ans.suite), None)
    if ans.unusable() is not None:
        return ans.suite, None, None
    return ans.suite, off, ans


def _side(sdp: SessionDescription, m: MediaDescription, mux: bool, crypto: CryptoAttribute | None) -> MediaSide | None:
    addr = sdp.media_address(m)
    if not addr or addr in _UNSPECIFIED or m.port == 0:
        return None
    addr = _media_ip(addr)
    if mux:
        rtcp = Endpoint(addr, m.port)
    else:
        rtcp = Endpoint(m.rtcp_address or addr, m.rtcp_port or m.port + 1)
    return MediaSide(Endpoint(addr, m.port), rtcp, mux, crypto)


def is_internal(address: str) -> bool:
    """RFC 1918, CGNAT, loopback, link-local and ULA addresses: where the core lives, not the carrier."""
    ip = ipaddress.ip_address(address)
    nets = _INTERNAL_V4 if ip.version == 4 else _INTERNAL_V6
    return any(ip in net for net in nets)


_INTERNAL_V4 = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16")
)
_INTERNAL_V6 = tuple(ipaddress.ip_network(n) for n in ("fc00::/7", "fe80::/10", "::1/128"))


def _check_direction(legs: list[Leg], direction: Direction, first: Hop) -> None:
    """A carrier is reached over an external address; refuse a direction that puts it on the inside."""
    if len(legs) < 2:
        return
    origin, onward = legs[0].peer, legs[1].peer
    if is_internal(origin) == is_internal(onward):
        return  # both inside (or both outside): the addresses cannot tell
    carrier_first = not is_internal(origin)
    if carrier_first == (direction == "inbound"):
        return
    other = "outbound" if direction == "inbound" else "inbound"
    raise DirectionMismatchError(
        f"direction {direction!r} does not fit the signalling: the first INVITE came from {first.a} and its media "
        f"from {origin} ({'internal' if is_internal(origin) else 'external'} address); the call went on to media at "
        f"{onward} ({'internal' if is_internal(onward) else 'external'} address). An inbound call starts at the "
        f"carrier (external side). Try --direction {other}."
    )
