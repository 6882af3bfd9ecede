"""Other calls through the same SBC at the same time (an SBC trace export of a few minutes), with their truth.

Each overlaps the main call's INVITE window; some come from the same carrier IP, some are proxied
(one Call-ID), some B2BUA'd with rewritten numbers, some with non-numeric user parts — the mix that
made greedy number chaining join hops of different calls.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

from rtpcore.callgen.plan import CallPlan, plan_call
from rtpcore.callgen.sbc import apply_sbc
from rtpcore.callgen.scenario import CallSpec
from rtpcore.callgen.truth import CallTruth

__all__ = ["concurrent_plans", "call_truth"]

MS = 1_000_000
# Start offsets after the main call's INVITE: inside its forward window, and each other's.
OFFSETS_NS = (60 * MS, 150 * MS, 400 * MS, 900 * MS, 1300 * MS, 1750 * MS, 2300 * MS, 2900 * MS)
PORT_STEP_PEER = 1000
PORT_STEP_HOST = 100
CORE_HOST_STEP = 20
OTHER_CARRIERS = ("198.51.100.20", "198.51.100.30")

# (knobs, same carrier IP as the main call) by call number modulo the list length.
_KINDS: tuple[tuple[dict[str, Any], bool], ...] = (  # knobs of several types: CallSpec fields say what each means
    ({}, True),                                                                    # like the main call, same carrier
    ({"topology": "proxy", "number_rewrite": "none", "cseq_rewrite": False, "user_names": False}, False),
    ({"topology": "b2bua", "number_rewrite": "national", "cseq_rewrite": True, "user_names": False}, True),
    ({"topology": "proxy", "hide_topology": True, "number_rewrite": "none", "cseq_rewrite": False}, False),
    ({"topology": "b2bua", "number_rewrite": "extension", "user_names": True, "media_seconds": 3.5}, True),
)


def _shift(address: str, step: int) -> str:
    return str(ipaddress.ip_address(address) + step)


def concurrent_spec(spec: CallSpec, number: int) -> CallSpec:
    """Call `number` (1-based) of the spec's concurrent calls: its own seed, ports, core phone and kind."""
    knobs, same_carrier = _KINDS[(number - 1) % len(_KINDS)]
    carrier = spec.carrier_ip if same_carrier else OTHER_CARRIERS[number % len(OTHER_CARRIERS)]
    if ":" in spec.carrier_ip and not same_carrier:
        carrier = _shift(spec.carrier_ip, number)
    base = replace(
        spec, name=f"{spec.name}#{number}", seed=spec.seed + 7919 * number, concurrent_calls=0, background_calls=False,
        reinvite_rekey=False, mid_call=False, late_offer=False, invite_padding=0, carrier_ip=carrier,
        media_seconds=spec.media_seconds + 0.7 * number,
        carrier_media_port=spec.carrier_media_port + PORT_STEP_PEER * number,
        host_carrier_port=spec.host_carrier_port + PORT_STEP_HOST * number,
        host_core_port=spec.host_core_port + PORT_STEP_HOST * number,
        core_media_port=spec.core_media_port + PORT_STEP_PEER * number,
        core_ip=_shift(spec.core_ip, CORE_HOST_STEP + number),
    )
    return replace(base, **knobs)


def concurrent_plans(spec: CallSpec, start_ns: int) -> list[CallPlan]:
    """The spec's concurrent calls, planned and rewritten by their SBC, in start order."""
    plans = []
    for number in range(1, spec.concurrent_calls + 1):
        other = concurrent_spec(spec, number)
        offset = OFFSETS_NS[(number - 1) % len(OFFSETS_NS)] + (number - 1) // len(OFFSETS_NS) * OFFSETS_NS[-1]
        plans.append(apply_sbc(plan_call(other, start_ns + offset), other))
    return plans


def call_truth(plan: CallPlan) -> CallTruth:
    """One call's legs as `rtphelper legs --json --call-id <any of its Call-IDs>` prints them."""
    return {"call_id": plan.call_id, "call_ids": list(plan.call_ids), "direction": plan.direction,
            "legs": list(plan.legs)}
