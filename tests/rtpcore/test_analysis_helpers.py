"""Shared helpers of the analysis tests: tshark's rtp,streams table, and a capture impairer (loss, reorder, dups).

The generator's impairment knobs (issue 11) replace the impairer where they fit (test_analysis_stats.py); it stays
for what they do not model: arrival jitter beyond the packet interval (E-model) and losses on a rendered file.
"""
from __future__ import annotations

import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rtpcore.analysis.packets import parse_rtp
from rtpcore.pcap import link_payload, open_capture, parse_ip, parse_udp
from rtpcore.pcap.writer import PcapWriter

ROW = re.compile(
    r"^\s*(?P<start>[\d.]+)\s+(?P<end>[\d.]+)\s+(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+"
    r"0x(?P<ssrc>[0-9A-F]{8})\s+(?P<payload>.+?)\s+(?P<pkts>\d+)\s+(?P<lost>-?\d+) \((?P<pct>-?[\d.]+)%\)\s+"
    r"(?P<min_delta>-?[\d.]+)\s+(?P<mean_delta>-?[\d.]+)\s+(?P<max_delta>-?[\d.]+)\s+"
    r"(?P<min_jitter>-?[\d.]+)\s+(?P<mean_jitter>-?[\d.]+)\s+(?P<max_jitter>-?[\d.]+)\s*X?\s*$"
)


def tshark_streams(tshark: str, path: Path) -> dict[tuple[str, int, str, int, int], dict[str, str]]:
    """tshark -z rtp,streams of a file, keyed like our streams (src, sport, dst, dport, ssrc)."""
    out = subprocess.run([tshark, "-o", "rtp.heuristic_rtp:TRUE", "-q", "-z", "rtp,streams", "-r", str(path)],
                         capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            rows[(m["src"], int(m["sport"]), m["dst"], int(m["dport"]), int(m["ssrc"], 16))] = m.groupdict()
    return rows


@dataclass(frozen=True)
class Impairment:
    """What the impairer did to one SSRC's RTP frames: the truth the stats must show."""

    dropped: int
    bursts: int
    duplicated: int
    swapped: int


def impair(src: Path, dest: Path, ssrc: int, *, seed: int, drop_runs: int = 0, run_len: int = 1,
           duplicates: int = 0, swaps: int = 0, jitter_ns: int = 0) -> Impairment:
    """Copy a pcap, dropping runs of the SSRC's RTP frames, duplicating some, swapping neighbours, jittering times."""
    rng = random.Random(seed)
    with open_capture(src) as reader:
        records = [(ts, lt, data) for ts, lt, data, _o in reader.records()]
        linktype = reader.linktype
    mine = []
    for i, (_ts, lt, data) in enumerate(records):
        l3 = link_payload(lt, data)
        ip = parse_ip(l3) if l3 else None
        udp = parse_udp(ip) if ip else None
        parsed = parse_rtp(udp.payload) if udp else None
        if parsed and parsed[0] == ssrc:
            mine.append(i)
    inner = mine[5:-5]  # keep the first and last packets so tshark's expected range stays the same
    drop: set[int] = set()
    near: set[int] = set()  # stream positions dropped or next to a drop: runs stay separate bursts
    bursts = 0
    while bursts < drop_runs:
        at = rng.randrange(0, len(inner) - run_len)
        if any(p in near for p in range(at, at + run_len)):
            continue
        drop.update(inner[at:at + run_len])
        near.update(range(at - 1, at + run_len + 1))
        bursts += 1
    free = [r for p, r in enumerate(inner) if p not in near]
    dup = set(rng.sample(free, duplicates))
    swap_at = set(rng.sample([r for r in free if r not in dup], swaps))
    out: list[tuple[int, bytes]] = []
    for i, (ts, _lt, data) in enumerate(records):
        if i in drop:
            continue
        if jitter_ns and i in mine:
            ts += rng.randrange(0, jitter_ns)
        out.append((ts, data))
        if i in dup:
            out.append((ts + 1000, data))
    order = list(range(len(out)))
    index_of = {}
    k = 0
    for i in range(len(records)):
        if i in drop:
            continue
        index_of[i] = k
        k += 2 if i in dup else 1
    for i in swap_at:
        nxt = next(j for j in mine if j > i)
        a, b = index_of[i], index_of[nxt]
        order[a], order[b] = order[b], order[a]
    with PcapWriter(dest, linktype, nanosecond=True) as writer:
        for pos, idx in enumerate(order):
            writer.write(out[pos][0], out[idx][1])  # a swapped packet keeps the slot's arrival time: it is late
    return Impairment(len(drop), bursts, len(dup), len(swap_at))
