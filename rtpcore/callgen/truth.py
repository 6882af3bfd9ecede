"""The shape of truth.json, typed so the generator and its readers agree on every field the tests compare."""
from __future__ import annotations

from typing import TypedDict

from rtpcore.literals import Direction, LegSide


class KeyProblemTruth(TypedDict):
    """One faulty a=crypto line the generator sent, as `legs --json` must list it."""

    message: str
    side: LegSide
    line: int | None
    problem: str


class LegTruth(TypedDict):
    """One media leg as `rtphelper legs --json` must print it."""

    name: str
    media_host: str
    peer: str
    endpoints: list[str]
    srtp_suite: str | None
    srtp_keys: str | None
    key_problems: list[KeyProblemTruth]


class CallTruth(TypedDict):
    """One call's legs as `rtphelper legs --json --call-id <any of its Call-IDs>` must print them."""

    call_id: str
    call_ids: list[str]
    direction: Direction
    legs: list[LegTruth]


class _TruthHead(TypedDict):
    """The fields every variant's truth starts with (first in the file, in this order)."""

    variant: str
    direction: Direction
    sip: str
    media: list[str]


class Truth(_TruthHead, total=False):
    """truth.json: the rest is added in file order, some keys only for the variants they concern."""

    select: dict[str, str]
    calls: list[CallTruth]
    legs: CallTruth
    streams: list[dict[str, object]]
    media_packets: int
    background_packets: int
    sip_messages: dict[str, int]
    latched: list[dict[str, str]]
    sip_holds_media: bool
    stray: dict[str, object]
    dtmf: list[dict[str, object]]
    verdicts: list[dict[str, str]]   # issue 11: (leg, direction, kind) the analysis must find, from the injected faults
