"""issue 11: impair what the media host captures of one sender — loss, bursts, reordering, duplicates, jitter,
a silent party, a dead relay direction — and say which verdicts the analysis must then give.

Applied to the synthesized packets of the call's own senders (never the background calls), so the truth is
computed from what was really captured.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from rtpcore.callgen.media import MediaPacket
from rtpcore.callgen.scenario import IMPAIRABLE, CallSpec

__all__ = ["impair", "expected_verdicts"]

DUPLICATE_DELAY_NS = 9_000                 # the copy arrives just after the original
JITTER_SEED = 0x1177E5                     # jitter draws from its own stream, seeded with loss_seed
NS_PER_MS = 1_000_000


def _party(direction: str) -> str:
    """The leg of a direction ("carrier->relay" → "carrier")."""
    return direction.replace("relay", "").strip("->")


def _muted(spec: CallSpec, direction: str) -> bool:
    """A direction that carries no RTP at all: the silent party's own, the relay's onward copy of it, a dead relay."""
    if spec.silent_party:
        other = next(p for p in ("carrier", "core") if p != spec.silent_party)
        if direction in (f"{spec.silent_party}->relay", f"relay->{other}"):
            return True
    if spec.dead_relay:
        return direction == f"relay->{spec.dead_relay.split('->')[1]}"
    return False


def _dropped(spec: CallSpec, count: int) -> set[int]:
    """Packet numbers that are lost: the listed ones, the bursts, and loss_rate of the rest (packet 0 never)."""
    lost = {n for n in spec.lost_packets if n < count}
    for first, run in spec.loss_bursts:
        lost.update(range(first, min(count, first + run)))
    if spec.loss_rate:
        rng = random.Random(spec.loss_seed)
        lost.update(n for n in range(1, count - 1) if rng.random() < spec.loss_rate)
    return lost


def impair(spec: CallSpec, sender_index: int, packets: Sequence[MediaPacket]) -> list[MediaPacket]:
    """The sender's packets as the media host captured them, after the spec's impairments of its direction."""
    direction = IMPAIRABLE[sender_index]
    if _muted(spec, direction):
        return [p for p in packets if p.kind != "rtp"]
    if direction != spec.impaired:
        return list(packets)
    rtp = [i for i, p in enumerate(packets) if p.kind == "rtp" and not p.duplicate]
    lost = _dropped(spec, len(rtp))
    out = list(packets)
    rng = random.Random(spec.loss_seed ^ JITTER_SEED)
    jitter_ns = int(spec.jitter_ms * NS_PER_MS)
    if jitter_ns:
        out = [replace(p, ts_ns=p.ts_ns + rng.randrange(jitter_ns)) if p.kind == "rtp" else p for p in out]
    for n in spec.reordered_packets:
        if n + 1 < len(rtp):
            a, b = rtp[n], rtp[n + 1]
            out[a], out[b] = replace(out[a], ts_ns=out[b].ts_ns), replace(out[b], ts_ns=out[a].ts_ns)
    copies = [replace(out[rtp[n]], ts_ns=out[rtp[n]].ts_ns + DUPLICATE_DELAY_NS, duplicate=True)
              for n in spec.duplicated_packets if n < len(rtp) and n not in lost]
    gone = {packets[rtp[n]].payload for n in lost}   # a lost packet's copies (RFC 4733 end packets) go too
    kept = [p for p in out if p.kind != "rtp" or p.payload not in gone]
    return sorted(kept + copies, key=lambda p: p.ts_ns)


def expected_verdicts(spec: CallSpec, lost: int) -> list[dict[str, str]]:
    """The verdicts (leg, direction, kind) the analysis must give for the injected faults; lost = packets dropped."""
    found: list[dict[str, str]] = []

    def add(direction: str, kind: str) -> None:
        found.append({"leg": _party(direction), "direction": direction, "kind": kind})

    if spec.silent_party:
        other = next(p for p in ("carrier", "core") if p != spec.silent_party)
        add(f"{spec.silent_party}->relay", "one-way-audio")
        add(f"relay->{other}", "one-way-audio")
    if spec.dead_relay:
        add(f"relay->{spec.dead_relay.split('->')[1]}", "not-relayed")
        if spec.dtmf_digits and spec.dead_relay.startswith("carrier->"):   # the carrier's key presses die with it
            add("carrier->relay", "dtmf-not-relayed")
    if lost:
        add(spec.impaired, "sequence-gaps")
    if spec.ssrc_change_at is not None:
        add(spec.impaired, "ssrc-change")
    if spec.carrier_media_from is not None and spec.stray_sender is not None:
        add("carrier->relay", "no-media")    # two senders to the media host: ambiguous, nothing is merged
        add("relay->carrier", "no-media")
    elif spec.carrier_media_from is not None:
        add("carrier->relay", "unexpected-source")
    if spec.core_media_from is not None:
        add("core->relay", "unexpected-source")
    if spec.hold_after_s is not None:         # the core stops at the hold: explained, severity info
        add("core->relay", "audio-stops")
        add("relay->carrier", "audio-stops")
    if spec.carrier_key_fault == "wrong-key":
        add("carrier->relay", "srtp-auth-failed")
    return found
