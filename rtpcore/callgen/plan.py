"""The timeline of one call through the SBC: SIP events on both hops, media senders, and the leg truth."""
from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field, replace
from typing import Any

from rtpcore.callgen.media import REPORT_RR, REPORT_SR, Segment, Sender, new_key
from rtpcore.callgen.scenario import DTMF_KEYS, IMPAIRABLE, CallSpec
from rtpcore.callgen.sip import CryptoLine, Dialog, SdpMedia, compose_sdp, endpoint, request, response
from rtpcore.callgen.truth import KeyProblemTruth, LegTruth
from rtpcore.literals import Direction

__all__ = ["SipEvent", "CallPlan", "plan_call", "background_spec"]

MS = 1_000_000
RELAY_DELAY_NS = 400_000                   # media host forwarding latency
SBC_DELAY_NS = 2 * MS                      # SBC turning a message around on the other hop
RTCP_ATTR_OFFSET = 5                       # a=rtcp port = RTP port + this (rtcp_attr knob)
REINVITE_PORT_STEP = 2
ALTERNATE_SUITE = {"AES_CM_128_HMAC_SHA1_32": "AES_CM_128_HMAC_SHA1_80"}
DEFAULT_ALTERNATE = "AES_CM_128_HMAC_SHA1_32"
SSRC_CHANGE_SEED = 0x55C_C4A6              # issue 11: seeds the new SSRC/sequence/timestamp of ssrc_change_at


@dataclass(frozen=True, slots=True)
class SipEvent:
    """One SIP message on the wire; `connection` names the hop's transport connection."""

    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    data: bytes
    connection: tuple[str, int, str, int]  # (client ip, client port, server ip, server port)
    call_id: str
    split: bool = False                    # TCP: send over 3 segments
    coalesce_next: bool = False            # TCP: share a segment with the next message on the connection


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Everything the renderer and the truth need about one call."""

    call_id: str
    call_ids: tuple[str, ...]
    direction: Direction
    sip: tuple[SipEvent, ...]
    senders: tuple[Sender, ...]
    legs: tuple[LegTruth, ...]
    invite_ns: int
    answer_ns: int
    end_ns: int                            # the last media packet's time (upper bound)
    key_problems: tuple[KeyProblemTruth, ...] = ()   # wt-keys: the carrier leg's, as `legs --json` lists them


@dataclass(slots=True)
class _Side:
    """One party's media for one leg: where it receives RTP/RTCP and the key it sends with."""

    ip: str
    port: int
    rtcp_port: int
    rtcp_attr: int | None
    key: bytes | None
    media_level_c: bool
    alt_key: bytes | None = None
    history: list[tuple[int, int, bytes | None]] = field(default_factory=list)


def background_spec(spec: CallSpec, number: int) -> CallSpec:
    """Another call through the same SBC; number 1 overlaps (same carrier IP, other port), 2 reuses ports later."""
    common: dict[str, Any] = dict(  # knobs of several types, checked by CallSpec.__post_init__
        seed=spec.seed + 1000 * number, core_ip=spec.core_background_ip, reinvite_rekey=False, mid_call=False,
        carrier_key_fault="",
        carrier_initial_seq=None, duplicates_every=0, srtcp_clear_first=False, late_offer=False, invite_padding=0,
        background_calls=False, media_seconds=3.0,
        core_media_from=None, carrier_media_from=None, stray_sender=None, sip_holds_media=False, final_rtcp_after_bye_ns=0,
        dtmf_digits="",  # issue 11: background calls press no keys, and have no impairments
        lost_packets=(), loss_bursts=(), loss_rate=0.0, reordered_packets=(), duplicated_packets=(), jitter_ms=0.0,
        ssrc_change_at=None, silent_party="", dead_relay="", hold_after_s=None,
    )
    if number == 1:
        return replace(spec, carrier_media_port=spec.carrier_media_port + 100, host_carrier_port=spec.host_carrier_port + 10,
                       host_core_port=spec.host_core_port + 10, core_media_port=spec.core_media_port + 100, **common)
    return replace(spec, core_media_port=spec.core_media_port + 200, host_core_port=spec.host_core_port + 20, **common)


def _numbers(rng: random.Random) -> tuple[str, str]:
    caller = f"+1415555{rng.randrange(10_000):04d}"
    callee = f"+4420712{rng.randrange(100_000):05d}"
    return caller, callee


def _national(number: str) -> str:
    return "00" + number[1:] if number.startswith("+") else number


def plan_call(spec: CallSpec, start_ns: int) -> CallPlan:
    """Lay out the call starting at start_ns: both hops' SIP, four media senders, the leg truth."""
    rng = random.Random(spec.seed)
    inbound = spec.direction == "inbound"
    tcp = spec.sip_transport == "tcp"
    transport = "TCP" if tcp else "UDP"
    carrier_first = inbound
    suite_carrier, suite_core = spec.carrier_suite, spec.core_suite

    def side(ip: str, port: int, suite: str | None, *, attr: bool, sbc: bool) -> _Side:
        rtcp = port if spec.rtcp_mux else (port + RTCP_ATTR_OFFSET if attr else port + 1)
        key = new_key(rng, suite) if suite else None
        alt = new_key(rng, ALTERNATE_SUITE.get(suite, DEFAULT_ALTERNATE)) if suite else None
        return _Side(ip, port, rtcp, rtcp if attr and not spec.rtcp_mux else None, key, sbc, alt)

    carrier = side(spec.carrier_ip, spec.carrier_media_port, suite_carrier, attr=False, sbc=False)
    host_c = side(spec.host_carrier_ip, spec.host_carrier_port, suite_carrier, attr=False, sbc=True)
    core = side(spec.core_ip, spec.core_media_port, suite_core, attr=spec.rtcp_attr, sbc=False)
    host_k = side(spec.host_core_ip, spec.host_core_port, suite_core, attr=False, sbc=True)
    # Hop 1 is the originating party <-> SBC, hop 2 the SBC <-> terminating party.
    a, sbc_a, sbc_b, b = (carrier, host_c, host_k, core) if carrier_first else (core, host_k, host_c, carrier)
    suite1, suite2 = (suite_carrier, suite_core) if carrier_first else (suite_core, suite_carrier)

    fault_rng = random.Random(spec.seed ^ 0xBAD_CE11)   # its own stream: the other variants' bytes stay the same
    caller, callee = _numbers(rng)
    hop1_fmt = (lambda n: n) if carrier_first else _national
    hop2_fmt = _national if carrier_first else (lambda n: n)
    if spec.topology == "proxy":
        hop1_fmt = hop2_fmt = lambda n: n  # noqa: E731  a proxy does not touch the numbers
    call_id1 = f"{rng.getrandbits(64):016x}@{a.ip}"
    from_tag1, to_tag = f"{rng.getrandbits(32):08x}", f"{rng.getrandbits(32):08x}"
    if spec.topology == "b2bua":
        call_id2, from_tag2, to_tag1 = f"SBC{rng.getrandbits(80):020x}", f"sbc{rng.getrandbits(32):08x}", f"sbc{rng.getrandbits(32):08x}"
    else:
        call_id2, from_tag2, to_tag1 = call_id1, from_tag1, to_tag
    port1 = rng.randrange(33000, 60000) if tcp else 5060
    port2 = rng.randrange(33000, 60000) if tcp else 5060
    d1 = Dialog(call_id1, hop1_fmt(caller), hop1_fmt(callee), a.ip, sbc_a.ip, from_tag1, to_tag1, transport, caller_port=port1)
    d2 = Dialog(call_id2, hop2_fmt(caller), hop2_fmt(callee), sbc_b.ip, b.ip, from_tag2, to_tag, transport, caller_port=port2)
    conn1 = (a.ip, port1, sbc_a.ip, 5060)
    conn2 = (sbc_b.ip, port2, b.ip, 5060)
    events: list[SipEvent] = []
    negotiations: dict[str, list[tuple[int, str, str, str | None]]] = {"carrier": [], "core": []}

    def send(ts: int, d: Dialog, conn: tuple[str, int, str, int], from_caller: bool, data: bytes, **kw: bool) -> None:
        src, sport, dst, dport = (d.caller_ip, d.caller_port, d.callee_ip, d.callee_port)
        if not from_caller:
            src, sport, dst, dport = dst, dport, src, sport
        events.append(SipEvent(ts, src, sport, dst, dport, data, conn, d.call_id, **kw))

    faulty: dict[str, tuple[int | None, str]] = {}   # SDP body → (line, problem) of the carrier's faulty a=crypto

    def sdp(s: _Side, suite: str | None, *, offer: bool, version: int = 1, padding: int = 0,
            direction: str = "sendrecv") -> str:
        crypto: tuple[CryptoLine, ...] = ()
        if suite and s.key is not None:
            crypto = (CryptoLine(1, suite, s.key),)
            if offer and s.alt_key is not None:
                crypto += (CryptoLine(2, ALTERNATE_SUITE.get(suite, DEFAULT_ALTERNATE), s.alt_key),)
        fault = spec.carrier_key_fault if s is carrier and crypto else ""
        if fault:
            crypto, marker = _faulty_crypto(fault, crypto, fault_rng)
        media = SdpMedia(s.ip, s.port, (spec.payload_type, 8 if spec.payload_type == 0 else 0) if offer else (spec.payload_type,),
                         crypto, s.rtcp_attr, spec.rtcp_mux, s.media_level_c, session_id=s.port * 7 + 11,
                         version=version, padding_lines=padding, secure=bool(fault), direction=direction)
        body = compose_sdp(media)
        if fault and fault != "wrong-key":
            lines = body.split("\r\n")
            faulty[body] = (lines.index(marker) + 1 if marker else None, fault)
        return body

    def negotiated(ts: int, peer: _Side, host: _Side, suite: str | None) -> None:
        leg = "carrier" if peer is carrier else "core"
        negotiations[leg].append((ts, endpoint(peer.ip, peer.port), endpoint(host.ip, host.port), suite))

    def hop_peer(hop: int) -> tuple[_Side, _Side, str | None]:
        return (a, sbc_a, suite1) if hop == 1 else (b, sbc_b, suite2)

    branch = iter(f"{rng.getrandbits(40):010x}" for _ in range(64))
    br1, br2 = next(branch), next(branch)
    # INVITE on both hops (offer unless late offer).
    t = start_ns
    padding_header = (f"X-Carrier-Trace: {'0123456789abcdef' * (spec.invite_padding // 16 + 1)}"[: 17 + spec.invite_padding],) if spec.invite_padding else ()
    body1 = "" if spec.late_offer else sdp(a, suite1, offer=True)
    send(t, d1, conn1, True, request(d1, "INVITE", 1, from_caller=True, branch=br1, body=body1, extra=padding_header,
                                     established=False), split=tcp and spec.tcp_split_and_coalesce)
    send(t + SBC_DELAY_NS, d1, conn1, False, response(d1, 100, "Trying", 1, "INVITE", to_caller=True, branch=br1, with_to_tag=False))
    t2 = t + rng.randrange(5, 80) * MS
    body2 = "" if spec.late_offer else sdp(sbc_b, suite2, offer=True)
    rr = ("Record-Route: <sip:" + (f"[{sbc_b.ip}]" if ":" in sbc_b.ip else sbc_b.ip) + ";lr>",) if spec.topology == "proxy" else ()
    send(t2, d2, conn2, True, request(d2, "INVITE", 1, from_caller=True, branch=br2, body=body2, extra=rr, established=False))
    send(t2 + 3 * MS, d2, conn2, False, response(d2, 100, "Trying", 1, "INVITE", to_caller=True, branch=br2, with_to_tag=False),
         coalesce_next=tcp and spec.tcp_split_and_coalesce)
    # Provisional answer: 183 with SDP (early media) or 180 without.
    t3 = t2 + 3 * MS + 200_000 if tcp and spec.tcp_split_and_coalesce else t2 + rng.randrange(800, 1500) * MS
    early = spec.early_media and not spec.late_offer
    if early:
        send(t3, d2, conn2, False, response(d2, 183, "Session Progress", 1, "INVITE", to_caller=True, branch=br2, body=sdp(b, suite2, offer=False)))
        send(t3 + SBC_DELAY_NS, d1, conn1, False, response(d1, 183, "Session Progress", 1, "INVITE", to_caller=True, branch=br1, body=sdp(sbc_a, suite1, offer=False)))
        negotiated(t3, b, sbc_b, suite2)
        negotiated(t3 + SBC_DELAY_NS, a, sbc_a, suite1)
    else:
        send(t3, d2, conn2, False, response(d2, 180, "Ringing", 1, "INVITE", to_caller=True, branch=br2))
        send(t3 + SBC_DELAY_NS, d1, conn1, False, response(d1, 180, "Ringing", 1, "INVITE", to_caller=True, branch=br1))
    # Final answer (carries the offer in late offer), then ACK (carries the answer in late offer).
    t4 = t3 + rng.randrange(1500, 2500) * MS
    ans2 = sdp(b, suite2, offer=spec.late_offer)
    ans1 = sdp(sbc_a, suite1, offer=spec.late_offer)
    send(t4, d2, conn2, False, response(d2, 200, "OK", 1, "INVITE", to_caller=True, branch=br2, body=ans2))
    send(t4 + SBC_DELAY_NS, d1, conn1, False, response(d1, 200, "OK", 1, "INVITE", to_caller=True, branch=br1, body=ans1))
    t5 = t4 + SBC_DELAY_NS + rng.randrange(20, 40) * MS
    ack1 = sdp(a, suite1, offer=False) if spec.late_offer else ""
    ack2 = sdp(sbc_b, suite2, offer=False) if spec.late_offer else ""
    send(t5, d1, conn1, True, request(d1, "ACK", 1, from_caller=True, branch=next(branch), body=ack1))
    send(t5 + SBC_DELAY_NS, d2, conn2, True, request(d2, "ACK", 1, from_caller=True, branch=next(branch), body=ack2))
    # Endpoints: the first negotiation on each hop, peer first (even when the SBC offered).
    if not early:
        negotiated(t5 if spec.late_offer else t4, b, sbc_b, suite2)
        negotiated(t5 if spec.late_offer else t4 + SBC_DELAY_NS, a, sbc_a, suite1)

    # Media senders: the callee sends before its 200 OK is seen, the caller once it got it.
    b_start = t4 - rng.randrange(80, 150) * MS
    a_start = t4 + SBC_DELAY_NS + rng.randrange(20, 40) * MS
    t_bye = t5 + int(spec.media_seconds * 1e9)
    stop = {name: t_bye + rng.randrange(150, 220) * MS for name in ("a", "sbc_a", "sbc_b", "b")}

    # Optional re-INVITE from the carrier side at mid-call: new ports and keys on the carrier hop only.
    switch_ns: int | None = None
    carrier_hop = 1 if carrier_first else 2
    if spec.reinvite_rekey:
        peer, host, suite = hop_peer(carrier_hop)
        d, conn = (d1, conn1) if carrier_hop == 1 else (d2, conn2)
        from_caller = carrier_hop == 1
        t_re = t5 + int(spec.media_seconds * 1e9) // 2
        old = {id(peer): (peer.port, peer.rtcp_port, peer.key), id(host): (host.port, host.rtcp_port, host.key)}
        for s in (peer, host):
            s.history.append(old[id(s)])
            s.port += REINVITE_PORT_STEP
            s.rtcp_port = s.port if spec.rtcp_mux else s.port + 1
            if suite:
                s.key = new_key(rng, suite)
        brr = next(branch)
        cseq = 2
        send(t_re, d, conn, from_caller, request(d, "INVITE", cseq, from_caller=from_caller, branch=brr, body=sdp(peer, suite, offer=True, version=2)))
        switch_ns = t_re + 3 * MS
        send(switch_ns, d, conn, not from_caller, response(d, 200, "OK", cseq, "INVITE", to_caller=from_caller, branch=brr, body=sdp(host, suite, offer=False, version=2)))
        send(switch_ns + 30 * MS, d, conn, from_caller, request(d, "ACK", cseq, from_caller=from_caller, branch=next(branch)))
        negotiated(switch_ns, peer, host, suite)

    # issue 11: a hold from the carrier (inbound: the caller of both hops): re-INVITE a=sendonly, forwarded by the
    # SBC, answered a=recvonly; from the answer on the core sends nothing, so the relay sends nothing to the carrier.
    hold_cseq = 0
    if spec.hold_after_s is not None:
        t_hold = t5 + int(spec.hold_after_s * 1e9)
        hold_cseq = 1
        for n, (d, conn, peer, host, suite, on_ns) in enumerate(((d1, conn1, a, sbc_a, suite1, t_hold),
                                                                  (d2, conn2, sbc_b, b, suite2, t_hold + SBC_DELAY_NS))):
            brh = next(branch)
            send(on_ns, d, conn, True, request(d, "INVITE", 2, from_caller=True, branch=brh,
                                               body=sdp(peer, suite, offer=True, version=2, direction="sendonly")))
            answer_ns = on_ns + (2 - n) * SBC_DELAY_NS + MS
            send(answer_ns, d, conn, False, response(d, 200, "OK", 2, "INVITE", to_caller=True, branch=brh,
                                                     body=sdp(host, suite, offer=False, version=2, direction="recvonly")))
            send(answer_ns + 20 * MS, d, conn, True, request(d, "ACK", 2, from_caller=True, branch=next(branch)))
        held = t_hold + 2 * SBC_DELAY_NS + MS     # the core's 200 OK: it stops sending
        stop["b"] = min(stop["b"], held)
        stop["sbc_a"] = min(stop["sbc_a"], held + RELAY_DELAY_NS)

    # BYE from one side, forwarded; 200 OK back the same way.
    carrier_is_caller = carrier_first
    bye_from_caller = (spec.bye_from == "carrier") == carrier_is_caller
    first_d, first_c, second_d, second_c = (d1, conn1, d2, conn2) if bye_from_caller else (d2, conn2, d1, conn1)
    cseq_first = 3 if (spec.reinvite_rekey and first_d is (d1 if carrier_hop == 1 else d2)) else 2 + hold_cseq
    bb1, bb2 = next(branch), next(branch)
    send(t_bye, first_d, first_c, bye_from_caller, request(first_d, "BYE", cseq_first, from_caller=bye_from_caller, branch=bb1))
    cseq_second = 3 if (spec.reinvite_rekey and second_d is (d1 if carrier_hop == 1 else d2)) else 2 + hold_cseq
    send(t_bye + SBC_DELAY_NS, second_d, second_c, bye_from_caller, request(second_d, "BYE", cseq_second, from_caller=bye_from_caller, branch=bb2))
    send(t_bye + 20 * MS, second_d, second_c, not bye_from_caller, response(second_d, 200, "OK", cseq_second, "BYE", to_caller=bye_from_caller, branch=bb2))
    send(t_bye + 20 * MS + SBC_DELAY_NS, first_d, first_c, not bye_from_caller, response(first_d, 200, "OK", cseq_first, "BYE", to_caller=bye_from_caller, branch=bb1))

    def sender(leg: str, src: _Side, dst: _Side, suite: str | None, start: int, end: int, *, is_carrier_sender: bool) -> Sender:
        segments: tuple[Segment, ...]
        if switch_ns is not None and leg == "carrier":
            (sp, srtcp, skey), (dp, drtcp, _) = src.history[0], dst.history[0]
            segments = (
                Segment(start, switch_ns, src.ip, sp, dst.ip, dp, srtcp, drtcp, suite, skey),
                Segment(switch_ns, end, src.ip, src.port, dst.ip, dst.port, src.rtcp_port, dst.rtcp_port, suite, src.key),
            )
        else:
            segments = (Segment(start, end, src.ip, src.port, dst.ip, dst.port, src.rtcp_port, dst.rtcp_port, suite, src.key),)
        initial_seq = rng.randrange(1, 30000)
        if is_carrier_sender and spec.carrier_initial_seq is not None:
            initial_seq = spec.carrier_initial_seq
        return Sender(
            leg=leg, ssrc=rng.getrandbits(32), pt=spec.payload_type, initial_seq=initial_seq,
            initial_ts=rng.getrandbits(32), cname=f"{rng.getrandbits(48):012x}@{'sbc' if src.media_level_c else 'ua'}",
            segments=segments, rtcp_offset_ns=rng.randrange(800, 1500) * MS, jitter_seed=rng.getrandbits(32),
            start_roc=2 if (is_carrier_sender and spec.mid_call) else 0,
            clear_first_rtcp=is_carrier_sender and spec.srtcp_clear_first,
            duplicate_every=spec.duplicates_every if leg == "carrier" else 0,
            single_report=(REPORT_SR if src.media_level_c else REPORT_RR) if spec.srtcp_single_report else "",
            key_status=_key_status(spec, suite, from_carrier=src is carrier),
            # issue 11: the carrier's key presses, one a second from 1 s (50 packets of 20 ms); the media host relays
            # them to the core as RFC 4733 events of its own stream (its packets lag the carrier's by RELAY_DELAY_NS).
            dtmf=(tuple((50 * (n + 1), DTMF_KEYS.index(k)) for n, k in enumerate(spec.dtmf_digits))
                  if src is carrier or src is host_k else ()),
        )

    starts = {"a": a_start, "b": b_start, "sbc_a": b_start + RELAY_DELAY_NS, "sbc_b": a_start + RELAY_DELAY_NS}
    by_side = {id(a): "a", id(b): "b", id(sbc_a): "sbc_a", id(sbc_b): "sbc_b"}
    senders: tuple[Sender, ...] = (
        sender("carrier", carrier, host_c, suite_carrier, starts[by_side[id(carrier)]], stop[by_side[id(carrier)]], is_carrier_sender=True),
        sender("carrier", host_c, carrier, suite_carrier, starts[by_side[id(host_c)]], stop[by_side[id(host_c)]], is_carrier_sender=False),
        sender("core", core, host_k, suite_core, starts[by_side[id(core)]], stop[by_side[id(core)]], is_carrier_sender=False),
        sender("core", host_k, core, suite_core, starts[by_side[id(host_k)]], stop[by_side[id(host_k)]], is_carrier_sender=False),
    )
    senders = _latched(spec, senders, t_bye)
    if spec.ssrc_change_at is not None:   # issue 11: its own random stream, the other bytes stay the same
        index = IMPAIRABLE.index(spec.impaired)
        new = random.Random(spec.seed ^ SSRC_CHANGE_SEED)
        changed = replace(senders[index], ssrc_change_at=spec.ssrc_change_at, new_ssrc=new.getrandbits(32),
                          new_initial_seq=new.randrange(1, 30000), new_initial_ts=new.getrandbits(32))
        senders = (*senders[:index], changed, *senders[index + 1:])
    events.sort(key=lambda e: e.ts_ns)
    problems = _carrier_key_problems(events, carrier.ip, faulty)
    keys = {"carrier": _srtp_keys(spec, suite_carrier), "core": "usable" if suite_core else None}
    no_suite = spec.carrier_key_fault == "no-crypto"   # no a=crypto in the offer/answer: no suite is agreed
    legs = tuple(
        _leg_truth(name, peer, host, [(t, p, h, None if no_suite and name == "carrier" else s) for t, p, h, s in negotiations[name]],
                   keys[name], problems if name == "carrier" else [])
        for name, peer, host in (("carrier", carrier, host_c), ("core", core, host_k))
    )
    call_ids = (call_id1,) if call_id2 == call_id1 else (call_id1, call_id2)
    end = max([*stop.values(), *(s.final_rtcp_ns or 0 for s in senders)])
    return CallPlan(call_id1, call_ids, spec.direction, tuple(events), senders, legs, start_ns, t4, end,
                    tuple(problems))


def _latched(spec: CallSpec, senders: tuple[Sender, ...], t_bye: int) -> tuple[Sender, ...]:
    """Where media really flows (wt-parsing knobs): a peer sending from another address than its SDP's, the
    relay sending back to that address (latching), and final RTCP reports after the BYE."""
    real: dict[str, tuple[str, int | None]] = {}
    if spec.carrier_media_from is not None:
        real["carrier"] = spec.carrier_media_from
    if spec.core_media_from is not None:
        real["core"] = (spec.core_media_from, None)
    out = []
    for i, s in enumerate(senders):
        segments = s.segments
        if s.leg in real:
            ip, port = real[s.leg]
            from_peer = i % 2 == 0  # carrier→host, host→carrier, core→host, host→core
            moved = []
            for seg in segments:
                p = port if port is not None else (seg.sport if from_peer else seg.dport)
                rtcp = p if spec.rtcp_mux else p + 1
                moved.append(replace(seg, src=ip, sport=p, rtcp_sport=rtcp) if from_peer
                             else replace(seg, dst=ip, dport=p, rtcp_dport=rtcp))
            segments = tuple(moved)
        final = t_bye + spec.final_rtcp_after_bye_ns if spec.final_rtcp_after_bye_ns and i in (0, 2) else None
        out.append(replace(s, segments=segments, final_rtcp_ns=final))
    return tuple(out)


def _leg_truth(name: str, peer: _Side, host: _Side, negotiations: list[tuple[int, str, str, str | None]],
               srtp_keys: str | None = None, key_problems: list[KeyProblemTruth] | None = None) -> LegTruth:
    """The leg as `rtphelper legs --json` prints it: endpoints de-duplicated in negotiation order."""
    endpoints: list[str] = []
    for _, peer_ep, host_ep, _suite in sorted(negotiations, key=lambda n: n[0]):
        for ep in (peer_ep, host_ep):
            if ep not in endpoints:
                endpoints.append(ep)
    suites = [s for *_, s in sorted(negotiations, key=lambda n: n[0]) if s]
    return {"name": name, "media_host": host.ip, "peer": peer.ip, "endpoints": endpoints, "srtp_suite": suites[0] if suites else None,
            "srtp_keys": srtp_keys, "key_problems": list(key_problems or [])}


# -- wt-keys: faulty a=crypto lines and what the truth says about them ------------------------------------------

UNKNOWN_SUITE = "F8_128_HMAC_SHA1_80"          # RFC 4568 names it; nobody we know decrypts it
REFUSED_SUITE = "AES_192_CM_HMAC_SHA1_80"
REFUSED_KEY_LEN = 24 + 14
REFUSED_TAG = 3
MALFORMED_FAULTS = ("bad-base64", "key-length", "unknown-suite", "bad-mki", "bad-lifetime", "no-inline-key")


def _faulty_crypto(fault: str, crypto: tuple[CryptoLine, ...], rng: random.Random) -> tuple[tuple[CryptoLine, ...], str | None]:
    """The carrier's a=crypto lines with its own (tag 1) line broken as `fault` says; and the faulty line's text."""
    own, *others = crypto
    b64 = base64.b64encode(own.key).decode("ascii")
    lifetime = "" if own.suite.startswith("AEAD") else "|2^31"
    head = f"a=crypto:{own.tag} {own.suite}"
    text = {
        "bad-base64": f"{head} inline:{b64[:8]}*{b64[9:]}{lifetime}",           # a character outside base64
        "key-length": f"{head} inline:{base64.b64encode(own.key[:-3]).decode('ascii')}{lifetime}",
        "unknown-suite": f"a=crypto:{own.tag} {UNKNOWN_SUITE} inline:{b64}{lifetime}",
        "bad-mki": f"{head} inline:{b64}|2^31|1:0",                               # MKI length 0
        "bad-lifetime": f"{head} inline:{b64}|forever",
        "no-inline-key": head,
        "wrong-key": f"{head} inline:{base64.b64encode(rng.randbytes(len(own.key))).decode('ascii')}{lifetime}",
    }
    if fault == "no-crypto":
        return (), None
    if fault == "refused-suite":
        line = f"a=crypto:{REFUSED_TAG} {REFUSED_SUITE} inline:{base64.b64encode(rng.randbytes(REFUSED_KEY_LEN)).decode('ascii')}|2^31"
        return (*crypto, CryptoLine(REFUSED_TAG, REFUSED_SUITE, b"", text=line)), line
    return (CryptoLine(own.tag, own.suite, own.key, text=text[fault]), *others), text[fault]


def _carrier_key_problems(events: list[SipEvent], carrier_ip: str, faulty: dict[str, tuple[int | None, str]]) -> list[KeyProblemTruth]:
    """Per carrier message that carried a faulty SDP (time order, first occurrence kept): what `legs --json` lists."""
    found: list[KeyProblemTruth] = []
    for ev in events:
        head, _, body = ev.data.decode("ascii").partition("\r\n\r\n")
        if ev.src != carrier_ip or body not in faulty:
            continue
        first = head.split("\r\n", 1)[0]
        method = next(h.split()[-1] for h in head.split("\r\n") if h.startswith("CSeq:"))
        label = f"{first.split()[1]} {method}" if first.startswith("SIP/2.0") else first.split()[0]
        line, fault = faulty[body]
        entry: KeyProblemTruth = {"message": label, "side": "peer", "line": line, "problem": fault}
        if entry not in found:
            found.append(entry)
    return found


def _srtp_keys(spec: CallSpec, suite: str | None) -> str | None:
    """What `legs --json` says of the carrier leg's keys: a broken carrier key leaves one direction undecryptable."""
    if suite is None:
        return None
    if spec.carrier_key_fault in MALFORMED_FAULTS:
        return "partial"
    return "none" if spec.carrier_key_fault == "no-crypto" else "usable"


def _key_status(spec: CallSpec, suite: str | None, *, from_carrier: bool) -> str:
    """The key status our decryption must report for a sender of this leg."""
    if suite is None:
        return "not SRTP"
    fault = spec.carrier_key_fault
    if fault == "no-crypto" or (from_carrier and fault in MALFORMED_FAULTS):
        return "no key"
    if from_carrier and fault == "wrong-key":
        return "wrong key"
    return "authenticated"
