"""The SIP moments verdicts are judged against: the 200 OK that answered the call, holds (re-INVITEs), the BYE."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rtpcore.sip.capture import SipPacket

NS_PER_S = 1_000_000_000
STATUS_OK = 200
HOLD_ATTRIBUTES = ("sendonly", "recvonly", "inactive")   # RFC 3264 §8.4: a direction attribute that stops audio
HOLD_ADDRESSES = ("0.0.0.0", "::")                       # RFC 2543 hold: c= with the unspecified address
SDP_METHODS = frozenset({"INVITE", "UPDATE", "ACK"})


@dataclass(frozen=True, slots=True)
class HoldEvent:
    """An SDP offer after the answer that puts the call on hold: who sent it, when, how (a=sendonly, c=0.0.0.0, …)."""

    ts_ns: int
    src: str
    how: str

    def to_json(self, origin_ns: int) -> dict[str, Any]:
        """Evidence form: seconds from the call's first SIP message."""
        return {"at_s": round((self.ts_ns - origin_ns) / NS_PER_S, 3), "from": self.src, "how": self.how}


@dataclass(frozen=True, slots=True)
class SipTimeline:
    """When the call was answered and ended, and every hold in between (absolute ns)."""

    start_ns: int
    end_ns: int
    answer_ns: int | None = None
    bye_ns: int | None = None
    holds: tuple[HoldEvent, ...] = ()


def hold_of(body: bytes) -> str | None:
    """How an SDP body holds the media ('a=sendonly', 'c=0.0.0.0', …), or None when it does not."""
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("a=") and line[2:] in HOLD_ATTRIBUTES:
            return line
        if line.startswith("c=") and line.split()[-1] in HOLD_ADDRESSES:
            return line
    return None


def timeline_of(packets: Iterable[SipPacket], call_ids: Iterable[str], start_ns: int, end_ns: int) -> SipTimeline:
    """The call's answer, holds and BYE from its SIP messages (every dialog of a B2BUA call)."""
    wanted = set(call_ids)
    answer = bye = None
    holds: list[HoldEvent] = []
    for p in sorted(packets, key=lambda p: p.ts_ns):
        m = p.message
        if m.call_id not in wanted:
            continue
        cseq_method = (m.header("cseq") or " ").split()[-1].upper()
        if m.method == "BYE" and bye is None:
            bye = p.ts_ns
        elif m.status == STATUS_OK and cseq_method == "INVITE" and answer is None:
            answer = p.ts_ns
            continue  # the answer's own SDP is not a hold
        if answer is not None and m.body and m.method in SDP_METHODS:   # offers: who put the call on hold
            how = hold_of(m.body)
            if how is not None:
                holds.append(HoldEvent(p.ts_ns, p.src_endpoint, how))
    return SipTimeline(start_ns, end_ns, answer, bye, tuple(holds))

