"""What a real SBC does to the onward dialog's headers: translate numbers, own CSeq, hide topology, carry a correlation id.

Applied to a planned call's SIP text (heads only; SDP and Content-Length stay exact), so every variant
keeps the media model of plan.py while its signalling looks like the equipment it imitates.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import replace

from rtpcore.callgen.plan import CallPlan, SipEvent
from rtpcore.callgen.scenario import CallSpec

__all__ = ["apply_sbc", "NAME_USER", "TRUNK_USER"]

NAME_USER = "ua"                       # user_names: what softphones and some trunks put in From/To
TRUNK_USER = "sbc-trunk"               # extension rewrite: the SBC presents its trunk, not the caller
HOME_COUNTRY = "44"                    # the core network's country: +44 20… is 020… there
_USER = re.compile(r"sip:([^@;>\s]+)@")
_CSEQ = re.compile(r"^(CSeq:\s*)(\d+)", re.M | re.I)
_CALL_ID = re.compile(r"^Call-ID:[ \t]*([^\r\n]+)", re.M | re.I)
_RECORD_ROUTE = re.compile(r"^Record-Route:[^\r\n]*\r\n", re.M | re.I)
_CONTACT_USER = re.compile(r"^(Contact:\s*<sip:)([^@;>]+)@", re.M | re.I)
_HOME_NUMBER = re.compile(rf"^(?:\+|00){HOME_COUNTRY}(\d+)$")
_OTHER_NUMBER = re.compile(r"^(?:\+|00)(\d+)$")
CSEQ_OFFSET_RANGE = (101, 9000)
EXTENSION_RANGE = (4100, 4999)
HEAD_END = "\r\n\r\n"


def _split(data: bytes) -> tuple[str, bytes]:
    text = data.decode("ascii")
    head, _, _body = text.partition(HEAD_END)
    return head, data[len(head.encode("ascii")):]


def _extension(rng: random.Random, callee_digits: set[str]) -> str:
    """A 4-digit extension that is not the tail of the dialled number (nothing but the SBC ties them)."""
    while True:
        ext = str(rng.randrange(*EXTENSION_RANGE))
        if not any(d.endswith(ext) for d in callee_digits):
            return ext


def _core_user(user: str, mode: str, ext: str) -> str:
    home = _HOME_NUMBER.match(user)
    if mode == "national":
        if home:
            return "0" + home.group(1)
        other = _OTHER_NUMBER.match(user)
        return "00" + other.group(1) if other else user
    if home:
        return ext
    return TRUNK_USER if _OTHER_NUMBER.match(user) else user


def _masked(call_id: str) -> str:
    return "TH" + hashlib.sha256(call_id.encode()).hexdigest()[:24]


def apply_sbc(plan: CallPlan, spec: CallSpec) -> CallPlan:
    """Rewrite the planned SIP as the spec's SBC would; call_ids follow a masked Call-ID."""
    if not (spec.number_rewrite != "none" or spec.cseq_rewrite or spec.hide_topology or spec.correlation_header
            or spec.user_names):
        return plan
    rng = random.Random(spec.seed ^ 0x5BC)
    sbc_ips = {spec.host_carrier_ip, spec.host_core_ip}
    digits = {m.group(1) for ev in plan.sip for m in _USER.finditer(ev.data.decode("ascii", "replace"))}
    ext = _extension(rng, {d.lstrip("+") for d in digits})
    cseq_offset = rng.randrange(*CSEQ_OFFSET_RANGE)
    corr_value = f"{rng.getrandbits(128):032x}"
    if spec.correlation_header and spec.correlation_header.lower() == "session-id":
        corr_value += ";remote=" + "0" * 32
    events: list[SipEvent] = []
    call_ids: dict[str, str] = {}
    invites_seen: set[tuple[str, int, str, int]] = set()
    for ev in plan.sip:
        head, rest = _split(ev.data)
        onward = ev.connection[0] in sbc_ips          # hop 2: the SBC is the client of its own dialog
        core_side = spec.core_ip in (ev.connection[0], ev.connection[2])
        if spec.number_rewrite != "none" and core_side:
            head = _USER.sub(lambda m: f"sip:{_core_user(m.group(1), spec.number_rewrite, ext)}@", head)
        if spec.user_names:
            head = _USER.sub(f"sip:{NAME_USER}@", head)
        if spec.cseq_rewrite and onward:
            head = _CSEQ.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + cseq_offset}", head)
        call_id = ev.call_id
        if spec.hide_topology and onward:
            call_id = _masked(ev.call_id)
            head = _CALL_ID.sub(f"Call-ID: {call_id}", head)
            head = _RECORD_ROUTE.sub("", head + "\r\n").removesuffix("\r\n")
            head = _CONTACT_USER.sub(lambda m: f"{m.group(1)}th-{_masked(m.group(2))[2:14]}@", head)
        if spec.correlation_header and head.startswith("INVITE ") and ev.connection not in invites_seen:
            invites_seen.add(ev.connection)
            head = _CALL_ID.sub(lambda m: f"{m.group(0)}\r\n{spec.correlation_header}: {corr_value}", head, count=1)
        call_ids.setdefault(call_id, call_id)
        events.append(replace(ev, data=head.encode("ascii") + rest, call_id=call_id))
    return replace(plan, sip=tuple(events), call_ids=tuple(call_ids))
