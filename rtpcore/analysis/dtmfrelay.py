"""Did each key press cross the media host? RFC 4733 digits a peer sent, matched to what the relay sent on."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rtpcore.analysis.dtmf import DtmfEvent, SipInfoDigit
from rtpcore.analysis.verdicts import PlacedStream, Verdict, peer_to_relay, relay_to_peer, verdict

KIND_DTMF_NOT_RELAYED = "dtmf-not-relayed"
# A relay forwards an event within a few packet times; a digit pressed again 1 s later is a new key press.
RELAY_WINDOW_S = 0.5
EARLY_TOLERANCE_S = 0.05     # the two directions' first packets are captured on one clock: allow jitter only
VIA_RFC4733 = "rfc4733"
VIA_SIP_INFO = "sip-info"


@dataclass(frozen=True, slots=True)
class DtmfCrossing:
    """One key press a peer sent to the media host, and whether (and how fast) the relay passed it on."""

    digit: str
    from_leg: str
    stream: str                    # the sender's address:port, as DtmfEvent.stream
    start_s: float                 # capture-relative, as DtmfEvent.start_s
    to_legs: tuple[str, ...]       # the other legs it should have reached
    via: str | None                # rfc4733, sip-info, or None: not seen leaving the media host
    delay_ms: float | None         # RFC 4733 only: from the event's first packet in to its first packet out

    @property
    def crossed(self) -> bool:
        return self.via is not None

    def to_json(self) -> dict[str, Any]:
        """JSON form for analysis.json and the report."""
        return {"digit": self.digit, "from_leg": self.from_leg, "stream": self.stream, "start_s": round(self.start_s, 3),
                "to_legs": list(self.to_legs), "crossed": self.crossed, "via": self.via,
                "delay_ms": None if self.delay_ms is None else round(self.delay_ms, 1)}


def dtmf_crossings(streams: Sequence[PlacedStream], sip_info: Sequence[SipInfoDigit] = ()) -> tuple[DtmfCrossing, ...]:
    """Every RFC 4733 digit sent into the media host, matched in time order to a digit it sent to another leg."""
    legs = sorted({s.leg for s in streams})
    sent_on: dict[str, list[DtmfEvent]] = {leg: _events(streams, relay_to_peer(leg)) for leg in legs}
    used: set[tuple[str, int]] = set()
    info_left = [d.digit for d in sip_info]
    out: list[DtmfCrossing] = []
    for leg in legs:
        others = tuple(x for x in legs if x != leg)
        for event in _events(streams, peer_to_relay(leg)):
            match = _first_match(event, others, sent_on, used)
            if match is not None:
                other, index = match
                used.add((other, index))
                delay = (sent_on[other][index].start_s - event.start_s) * 1000
                out.append(DtmfCrossing(event.digit, leg, event.stream, event.start_s, others, VIA_RFC4733, max(delay, 0.0)))
            elif event.digit in info_left:
                info_left.remove(event.digit)
                out.append(DtmfCrossing(event.digit, leg, event.stream, event.start_s, others, VIA_SIP_INFO, None))
            else:
                out.append(DtmfCrossing(event.digit, leg, event.stream, event.start_s, others, None, None))
    return tuple(out)


def _events(streams: Sequence[PlacedStream], direction: str) -> list[DtmfEvent]:
    return sorted((e for s in streams if s.direction == direction for e in s.analysis.dtmf), key=lambda e: e.start_s)


def _first_match(event: DtmfEvent, others: Sequence[str], sent_on: dict[str, list[DtmfEvent]],
                 used: set[tuple[str, int]]) -> tuple[str, int] | None:
    """The earliest unused same digit the relay sent to another leg within the relay window."""
    best: tuple[float, str, int] | None = None
    for other in others:
        for index, out in enumerate(sent_on[other]):
            lag = out.start_s - event.start_s
            if (other, index) in used or out.digit != event.digit or not -EARLY_TOLERANCE_S <= lag <= RELAY_WINDOW_S:
                continue
            if best is None or lag < best[0]:
                best = (lag, other, index)
    return None if best is None else (best[1], best[2])


def dtmf_verdicts(crossings: Sequence[DtmfCrossing], call_offset_s: float) -> tuple[Verdict, ...]:
    """One warning per leg whose peer's key presses did not leave the media host (IVR menus fail on this)."""
    lost: dict[str, list[DtmfCrossing]] = {}
    for c in crossings:
        if not c.crossed and c.to_legs:
            lost.setdefault(c.from_leg, []).append(c)
    out = []
    for leg, missing in lost.items():
        total = sum(1 for c in crossings if c.from_leg == leg)
        digits = "".join(c.digit for c in missing)
        first = round(missing[0].start_s + call_offset_s, 3)
        text = (f"DTMF not relayed: the {leg} peer pressed {digits!r} ({len(missing)} of {total} key presses) but the "
                f"media host sent no RFC 4733 event (nor SIP INFO) for them to the "
                f"{' / '.join(missing[0].to_legs)} leg; first at {first} s.")
        out.append(verdict(leg, peer_to_relay(leg), KIND_DTMF_NOT_RELAYED, "warning", text, digits=digits,
                           missing=len(missing), pressed=total, first_s=first))
    return tuple(out)
