"""Assemble hops (one Call-ID between two addresses) into calls by evidence, not by a number rule.

Candidates for "this hop was forwarded as that hop" come from indexes (same Call-ID, correlation
header, number, From-tag, o= session; hops whose 18x/200/BYE/CANCEL fall within 50 ms of this hop's)
and from the few INVITEs that left next in time, always within the forward window — never all pairs,
so a trace of 10,000 calls assembles in near-linear time. Each candidate is scored
(rtpcore.sip.evidence); links are taken greedily from the best score down, each hop with at most one
upstream and one downstream. A second pass replaces "nothing ties these two addresses" by what the
confident links of the same capture taught (address pairs of one box; addresses that only originate).
Greedy and not an optimal assignment on purpose: where evidence separates the true link by a margin,
greedy finds it; where it does not, no optimiser can know better, so such links are kept but marked
ambiguous with their rivals — said, never silently picked.
"""
from __future__ import annotations

import bisect
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtpcore.sip.capture import SipPacket
from rtpcore.sip.dialog import Hop, build_hops
from rtpcore.sip.evidence import (
    FORWARD_WINDOW_NS,
    RELAY_TIGHT_NS,
    SAME_BOX_POINTS,
    UNTIED_BOX_POINTS,
    AssemblyConfig,
    Evidence,
    HopFacts,
    hop_facts,
    score,
)
from rtpcore.sip.numbering import NumberPlan

if TYPE_CHECKING:
    from rtpcore.hosts import HostsConfig
    from rtpcore.settings import Settings

# A link needs this much evidence: e.g. INVITE forwarded within 100 ms (3) and the 200 OK relayed (1.5).
MIN_LINK_SCORE = 4.0
# A rival within this many points of the chosen link makes the link ambiguous.
AMBIGUITY_MARGIN = 2.0
# A box pairing (in → out address) is learned once this many confident links used it: one could be chance.
LEARN_MIN_LINKS = 2
# An INVITE from an address that clearly originates calls (and never forwarded one) is no continuation.
ORIGINATOR_POINTS = -6.0
# An unlinked hop this close below MIN_LINK_SCORE, with nothing against its addresses, is reported as a near miss.
NEAR_MISS_MARGIN = 1.0
# Besides index hits, the next INVITEs after the upstream one are candidates (timing + addresses alone),
# when one of their events is within 50 ms of the upstream hop's or they leave from the same box.
NEAREST_BY_TIME = 3
# A hop with this many events (18x, 200, BYE, CANCEL) within 50 ms of this hop's is a candidate by timing.
MIN_TWIN_EVENTS = 2
# A key shared by more hops than this inside one window is too common to find candidates by (e.g. "o=- 0").
MAX_HITS_PER_KEY = 32
# Index keys that alone say "same call" (a proxy's Call-ID, a correlation header): they teach which addresses are one box.
STRONG_KEYS = ("cid ", "corr ")


@dataclass(frozen=True, slots=True)
class Rival:
    """Another hop that fits almost as well as the chosen one."""

    hop: str
    score: float

    def to_json(self) -> dict[str, object]:
        return {"hop": self.hop, "score": self.score}


@dataclass(frozen=True, slots=True)
class Link:
    """Upstream hop → downstream hop, the evidence that tied them and any close rival."""

    up: str
    down: str
    score: float
    evidence: tuple[Evidence, ...]
    rivals: tuple[Rival, ...] = ()
    up_call_id: str = ""
    down_call_id: str = ""

    @property
    def ambiguous(self) -> bool:
        """True when another hop scored within AMBIGUITY_MARGIN of this link."""
        return bool(self.rivals)

    def to_json(self) -> dict[str, object]:
        return {"up": self.up, "down": self.down, "up_call_id": self.up_call_id, "down_call_id": self.down_call_id,
                "score": self.score, "ambiguous": self.ambiguous,
                "evidence": [e.to_json() for e in self.evidence], "rivals": [r.to_json() for r in self.rivals]}


@dataclass(frozen=True, slots=True)
class AssembledCall:
    """The hops of one call in signalling order, with the links between them."""

    hops: tuple[Hop, ...]
    links: tuple[Link, ...]
    near_misses: tuple[Rival, ...] = ()   # upstream hops that fell just short of linking to the first hop

    @property
    def call_ids(self) -> tuple[str, ...]:
        """Every Call-ID of the call, first hop first."""
        return tuple(dict.fromkeys(h.call_id for h in self.hops))

    @property
    def ambiguous(self) -> bool:
        """True when a link has a close rival or another hop nearly joined the call."""
        return any(link.ambiguous for link in self.links) or bool(self.near_misses)

    def notes(self) -> list[str]:
        """Plain-words warnings for the ambiguous parts (for the leg plan and the report)."""
        out = []
        for link in self.links:
            for rival in link.rivals:
                out.append(f"call assembly is ambiguous: {link.up} → {link.down} scored {link.score:g}, but "
                           f"{rival.hop} scored {rival.score:g}; check with 'rtphelper legs --explain' and choose "
                           "with --call-id")
        for miss in self.near_misses:
            out.append(f"call assembly: {miss.hop} may belong to this call too (score {miss.score:g}, below "
                       f"{MIN_LINK_SCORE:g}); check with 'rtphelper legs --explain'")
        return out

    def explain(self) -> list[str]:
        """The call's hops and, per link, the evidence in plain words."""
        lines = [f"call {self.call_ids[0]}: {len(self.hops)} hop(s), Call-IDs {', '.join(self.call_ids)}"]
        if len(self.hops) == 1:
            lines.append(f"  {describe(self.hops[0])}: no other hop was linked to it")
        for link in self.links:
            lines.append(f"  {link.up} → {link.down}: score {link.score:g}{' (AMBIGUOUS)' if link.ambiguous else ''}")
            lines += [f"      {e.points:+g}  {e.detail}" for e in link.evidence]
            lines += [f"      rival: {r.hop} scored {r.score:g}" for r in link.rivals]
        lines += [f"  near miss: {m.hop} scored {m.score:g} (links need {MIN_LINK_SCORE:g})" for m in self.near_misses]
        return lines

    def to_json(self) -> dict[str, object]:
        first = self.hops[0].invite.message
        return {"call_id": self.call_ids[0], "call_ids": list(self.call_ids), "from": first.from_user,
                "to": first.to_user, "start_ns": self.hops[0].invite.ts_ns, "ambiguous": self.ambiguous,
                "hops": [describe(h) for h in self.hops], "links": [link.to_json() for link in self.links],
                "near_misses": [m.to_json() for m in self.near_misses]}


def describe(hop: Hop) -> str:
    """'Call-ID X (a → b)': how a hop is named in explanations."""
    return f"Call-ID {hop.call_id} ({hop.a} → {hop.b})"


@dataclass(frozen=True, slots=True)
class _Candidate:
    up: int
    down: int
    score: float
    dt: int
    evidence: tuple[Evidence, ...]


def _candidates(facts: list[HopFacts], config: AssemblyConfig) -> list[_Candidate]:
    """Score the plausible pairs only: index hits and the next few INVITEs, inside the forward window."""
    times = [f.invite_ns for f in facts]
    index: dict[str, list[int]] = {}
    for f in facts:
        for key in f.keys:
            index.setdefault(key, []).append(f.index)  # facts are in time order, so each list is too
    learned = _learned_boxes(facts, index)
    events: dict[tuple[int, int], list[int]] = {}   # (event, time bucket) → hops: relayed twins are near in time
    for f in facts:
        for e, ts in enumerate(f.events):
            if ts is not None:
                events.setdefault((e, ts // RELAY_TIGHT_NS), []).append(f.index)
    out: list[_Candidate] = []
    floor = MIN_LINK_SCORE - AMBIGUITY_MARGIN
    for up in facts:
        t0, t1 = up.invite_ns, up.invite_ns + FORWARD_WINDOW_NS
        chosen: dict[int, None] = {}
        start, stop = bisect.bisect_left(times, t0), bisect.bisect_right(times, t1)
        twins: dict[int, int] = {}
        for e, ts in enumerate(up.events):
            if ts is not None:
                bucket = ts // RELAY_TIGHT_NS
                for b in (bucket - 1, bucket, bucket + 1):
                    for j in events.get((e, b), ()):
                        if start <= j < stop and abs(facts[j].events[e] - ts) <= RELAY_TIGHT_NS:  # type: ignore[operator]  # indexed, so not None
                            twins[j] = twins.get(j, 0) + 1
        chosen.update(dict.fromkeys(j for j, n in twins.items() if n >= MIN_TWIN_EVENTS))
        for key in up.keys:
            hits = index[key]
            lo = bisect.bisect_left(hits, start)
            hi = bisect.bisect_left(hits, stop, lo)
            if hi - lo > MAX_HITS_PER_KEY:
                continue
            chosen.update(dict.fromkeys(hits[lo:hi]))
        nearest = 0
        for j in range(start, stop):
            if nearest >= NEAREST_BY_TIME:
                break
            down = facts[j]
            if j != up.index and down.a != up.a:
                nearest += 1
                if j not in chosen and _may_continue(up, down, config, learned):
                    chosen[j] = None
        for j in chosen:
            down = facts[j]
            if j == up.index or down.a == up.a:
                continue  # the same origin again is a retry or a fork, not a forward
            items = score(up, down, config, learned)
            total = round(sum(e.points for e in items), 2)
            if total >= floor:
                out.append(_Candidate(up.index, j, total, down.invite_ns - up.invite_ns, tuple(items)))
    return out


def _may_continue(up: HopFacts, down: HopFacts, config: AssemblyConfig, learned: frozenset[tuple[str, str]]) -> bool:
    """Cheap gate for a candidate found by time alone: one event relayed across within 50 ms, or the same box."""
    if up.b == down.a or (up.b, down.a) in learned:
        return True
    if any(u is not None and d is not None and abs(u - d) <= RELAY_TIGHT_NS for u, d in zip(up.events, down.events)):
        return True
    box = config.box_of(up.b)
    return box is not None and box == config.box_of(down.a)


def _learned_boxes(facts: list[HopFacts], index: dict[str, list[int]]) -> frozenset[tuple[str, str]]:
    """(in, out) address pairs of one box, learned from hops tied by the same Call-ID or correlation id."""
    pairs: set[tuple[str, str]] = set()
    for key, hits in index.items():
        if not key.startswith(STRONG_KEYS) or len(hits) < 2 or len(hits) > MAX_HITS_PER_KEY:
            continue
        for i, j in zip(hits, hits[1:]):
            up, down = facts[i], facts[j]
            if up.b != down.a and down.a != up.a and 0 <= down.invite_ns - up.invite_ns <= FORWARD_WINDOW_NS:
                pairs.add((up.b, down.a))
    return frozenset(pairs)


def _credible(cand: _Candidate) -> bool:
    """A near miss worth reporting: nothing against its addresses, and a relayed event or an identity tie."""
    if any(e.kind == "address" and e.points < 0 for e in cand.evidence):
        return False
    # evidence[0] is always the INVITE timing: a forward delay alone is no tie
    return any(e.points > 0 and e.kind in ("timing", "identity") for e in cand.evidence[1:])


def _is_ancestor(node: int, of: int, upstream: dict[int, int]) -> bool:
    """True when `node` is `of` or lies upstream of it (taking the link would close a loop)."""
    while True:
        if of == node:
            return True
        if of not in upstream:
            return False
        of = upstream[of]


def _by_end(candidates: list[_Candidate]) -> tuple[dict[int, list[_Candidate]], dict[int, list[_Candidate]]]:
    by_up: dict[int, list[_Candidate]] = {}
    by_down: dict[int, list[_Candidate]] = {}
    for cand in candidates:
        by_up.setdefault(cand.up, []).append(cand)
        by_down.setdefault(cand.down, []).append(cand)
    return by_up, by_down


def _greedy(candidates: list[_Candidate]) -> tuple[dict[int, _Candidate], dict[int, int]]:
    """Best score first; each hop gets at most one downstream and one upstream hop, never a loop."""
    downstream: dict[int, _Candidate] = {}
    upstream: dict[int, int] = {}
    for cand in candidates:
        if cand.score < MIN_LINK_SCORE:
            break
        if cand.up in downstream or cand.down in upstream or _is_ancestor(cand.down, cand.up, upstream):
            continue
        downstream[cand.up] = cand
        upstream[cand.down] = cand.up
    return downstream, upstream


def _learn(
    downstream: dict[int, _Candidate], by_up: dict[int, list[_Candidate]], by_down: dict[int, list[_Candidate]],
    facts: list[HopFacts],
) -> tuple[dict[tuple[str, str], int], set[str]]:
    """From confident links (clear score, no close rival): address pairs that are one box, addresses that only originate."""
    pairs: dict[tuple[str, str], int] = {}
    origins: set[str] = set()
    for link in downstream.values():
        if link.score < MIN_LINK_SCORE + AMBIGUITY_MARGIN:
            continue
        others = [c.score for c in by_up[link.up] if c is not link] + [c.score for c in by_down[link.down] if c is not link]
        if others and max(others) > link.score - AMBIGUITY_MARGIN:
            continue
        up, down = facts[link.up], facts[link.down]
        pairs[(up.b, down.a)] = pairs.get((up.b, down.a), 0) + 1
        origins.add(up.a)
    pairs = {pair: n for pair, n in pairs.items() if n >= LEARN_MIN_LINKS}
    forwarders = {out for _, out in pairs}
    return pairs, origins - forwarders


def _relearn(cand: _Candidate, facts: list[HopFacts], pairs: dict[tuple[str, str], int], originators: set[str]) -> _Candidate:
    """Replace "nothing ties the two addresses" by what the capture's confident links say about them."""
    at = next((i for i, e in enumerate(cand.evidence) if e.kind == "address" and e.points == UNTIED_BOX_POINTS), None)
    if at is None:
        return cand
    up, down = facts[cand.up], facts[cand.down]
    seen = pairs.get((up.b, down.a), 0)
    if seen:
        item = Evidence("address", SAME_BOX_POINTS, f"{up.b} → {down.a} forwarded {seen} other call(s) of this capture "
                                                    "(learned)")
    elif down.a in originators:
        item = Evidence("address", ORIGINATOR_POINTS, f"{down.a} originates calls in this capture and never forwarded "
                                                      f"one: its INVITE does not continue the call that went to {up.b}")
    else:
        return cand
    evidence = (*cand.evidence[:at], item, *cand.evidence[at + 1:])
    return _Candidate(cand.up, cand.down, round(sum(e.points for e in evidence), 2), cand.dt, evidence)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while 10^5 small acyclic objects are built: its passes over the parsed trace cost 2x."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def assemble_packets(packets: list[SipPacket], config: AssemblyConfig | None = None) -> list[AssembledCall]:
    """Hops from the packets, then calls from the hops."""
    with paused_gc():
        return assemble(build_hops(packets), config)


def assemble(hops: list[Hop], config: AssemblyConfig | None = None) -> list[AssembledCall]:
    """Link hops into calls by evidence; calls in the order of their first INVITE."""
    with paused_gc():
        return _assemble(hops, config or AssemblyConfig())


def _assemble(hops: list[Hop], config: AssemblyConfig) -> list[AssembledCall]:
    facts = [hop_facts(i, hop, config) for i, hop in enumerate(hops)]
    candidates = _candidates(facts, config)
    candidates.sort(key=lambda c: (-c.score, c.dt, c.up, c.down))
    by_up, by_down = _by_end(candidates)
    downstream, upstream = _greedy(candidates)
    pairs, originators = _learn(downstream, by_up, by_down, facts)
    if pairs:  # second pass: what the confident links taught about the boxes replaces "nothing ties them"
        candidates = [_relearn(c, facts, pairs, originators) for c in candidates]
        candidates.sort(key=lambda c: (-c.score, c.dt, c.up, c.down))
        by_up, by_down = _by_end(candidates)
        downstream, upstream = _greedy(candidates)
    taken_in = {c.down: c.score for c in downstream.values()}
    taken_out = {u: c.score for u, c in downstream.items()}

    def rivals(link: _Candidate) -> tuple[Rival, ...]:
        found: dict[int, float] = {}
        for other in by_up.get(link.up, []):
            if other.down != link.down and other.score >= link.score - AMBIGUITY_MARGIN \
                    and taken_in.get(other.down, -1e9) < other.score + AMBIGUITY_MARGIN:
                found[other.down] = max(found.get(other.down, -1e9), other.score)
        for other in by_down.get(link.down, []):
            if other.up != link.up and other.score >= link.score - AMBIGUITY_MARGIN \
                    and taken_out.get(other.up, -1e9) < other.score + AMBIGUITY_MARGIN:
                found[other.up] = max(found.get(other.up, -1e9), other.score)
        return tuple(Rival(describe(hops[k]), s) for k, s in sorted(found.items()))

    calls: list[AssembledCall] = []
    for root in range(len(hops)):
        if root in upstream:
            continue
        chain, links = [root], []
        while chain[-1] in downstream:
            cand = downstream[chain[-1]]
            links.append(Link(describe(hops[cand.up]), describe(hops[cand.down]), cand.score, cand.evidence, rivals(cand),
                              hops[cand.up].call_id, hops[cand.down].call_id))
            chain.append(cand.down)
        misses = tuple(Rival(describe(hops[c.up]), c.score) for c in by_down.get(root, [])
                       if MIN_LINK_SCORE - NEAR_MISS_MARGIN <= c.score < MIN_LINK_SCORE and c.up not in downstream
                       and _credible(c))
        calls.append(AssembledCall(tuple(hops[k] for k in chain), tuple(links), misses))
    return calls


def assembly_config(settings: Settings | None = None, hosts: HostsConfig | None = None) -> AssemblyConfig:
    """The number plan and correlation headers of the settings, the boxes of hosts.yaml."""
    if settings is None:
        return AssemblyConfig(boxes=_boxes(hosts))
    numbers = NumberPlan(
        country_code=settings.number_country_code, national_prefix=settings.number_national_prefix,
        international_prefix=settings.number_international_prefix, strip_prefixes=settings.number_strip_prefixes,
    )
    return AssemblyConfig(numbers, settings.correlation_headers, _boxes(hosts))


def _boxes(hosts: HostsConfig | None) -> tuple[tuple[str, str], ...]:
    if hosts is None:
        return ()
    boxes: dict[str, str] = {}
    for env in hosts.environments_names():
        for host in hosts.hosts(env):
            for address in (*host.sip_addresses, *host.media_addresses):
                boxes.setdefault(address, host.id)
    return tuple(boxes.items())


def load_assembly_config() -> AssemblyConfig:
    """From config/runtime.env + environment, and hosts.yaml when it exists (it is optional for assembly)."""
    from rtpcore.settings import load_settings

    settings = load_settings()
    if not settings.hosts_file.is_file():
        return assembly_config(settings, None)
    from rtpcore.hosts import load_hosts  # only with a hosts file: its models and yaml cost ~80 ms of start-up

    return assembly_config(settings, load_hosts(settings.hosts_file))
