"""Call assembly at scale (issue 8): 10,000 B2BUA calls at 50 new calls/s with translated numbers, in one SIP pcap.

    .venv/bin/python bench/assembly_bench.py [--calls 10000] [--rate 50] [--no-write] [--repeat 3]

Writes the SIP pcap with the generator's SIP text helpers (rtpcore.callgen.sip), keeping the truth
(which two Call-IDs are one call) from what it writes. Measures, each best of N in this run:
(a) reading + parsing the pcap (rtpcore.sip.capture.read_sip), (a2) grouping messages into hops
(build_hops), (b) assembly (hops → calls: facts + evidence + assignment), with the number plan
configured (country code 44) and without.
The anchor is (a) itself: assembly is reported as a ratio of read+parse in the same run.
Checks: configured → 100 % of calls assembled exactly; not configured → no call silently
mis-assembled (a wrong link must be flagged ambiguous). The ≤ 2 s target applies to (b).
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rtpcore.callgen.scenario import BASE_TIME_NS  # noqa: E402
from rtpcore.callgen.sip import CryptoLine, Dialog, SdpMedia, compose_sdp, request, response  # noqa: E402
from rtpcore.pcap.build import build_udp, frame  # noqa: E402
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET  # noqa: E402
from rtpcore.pcap.writer import PcapWriter  # noqa: E402
from rtpcore.sip.assembly import AssembledCall, assemble, paused_gc  # noqa: E402
from rtpcore.sip.capture import SipPacket, read_sip  # noqa: E402
from rtpcore.sip.dialog import build_hops  # noqa: E402
from rtpcore.sip.evidence import AssemblyConfig  # noqa: E402
from rtpcore.sip.numbering import NumberPlan  # noqa: E402

OUT = BENCH / "out" / "assembly"
RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- assembly:begin -->", "<!-- assembly:end -->"
MS = 1_000_000
S = 1_000_000_000
TARGET_ASSEMBLY_S = 2.0
SBC_OUT, SBC_IN = "10.77.1.1", "10.77.2.1"            # carrier side, core side (one box, two addresses)
CARRIERS = ("198.51.100.10", "198.51.100.20", "203.0.113.5", "203.0.113.77")
HOTLINE = "+442079460000"                             # a call centre: many concurrent calls to one number
HOTLINE_SHARE = 0.2
SUITE = "AES_CM_128_HMAC_SHA1_80"


def _national(number: str) -> str:
    """How the core writes a number: +44 20… → 020…, other countries → 00…"""
    return "0" + number[3:] if number.startswith("+44") else "00" + number[1:]


def _caller(rng: random.Random) -> str:
    return (f"+447{rng.randrange(10**9):09d}" if rng.random() < 0.5 else f"+1415{rng.randrange(10**7):07d}")


def write_calls(path: Path, calls: int, rate: float, seed: int = 8, *, extensions: bool = False) -> dict[str, str]:
    """The SIP pcap; returns truth: each hop-1 Call-ID → its hop-2 Call-ID (extensions: no usable numbers on the core side)."""
    rng = random.Random(seed)
    packets: list[tuple[int, bytes]] = []
    truth: dict[str, str] = {}
    t = BASE_TIME_NS
    ip_id = 0

    def send(ts: int, src: str, dst: str, data: bytes) -> None:
        nonlocal ip_id
        ip_id = (ip_id + 1) & 0xFFFF
        packets.append((ts, frame(LINKTYPE_ETHERNET, build_udp(src, 5060, dst, 5060, data, ip_id=ip_id))))

    for n in range(calls):
        t += int(rng.expovariate(rate) * S)
        carrier = CARRIERS[rng.randrange(len(CARRIERS))]
        core = f"10.77.{3 + n % 8}.{10 + (n // 8) % 200}"
        caller = _caller(rng)
        callee = HOTLINE if rng.random() < HOTLINE_SHARE else f"+4420{rng.randrange(10**8):08d}"
        cid1, cid2 = f"{rng.getrandbits(64):016x}@{carrier}", f"SBC{rng.getrandbits(80):020x}"
        truth[cid1] = cid2
        d1 = Dialog(cid1, caller, callee, carrier, SBC_OUT, f"{rng.getrandbits(32):08x}", f"sbc{rng.getrandbits(32):08x}", "UDP")
        core_caller, core_callee = (("sbc-trunk", str(rng.randrange(4100, 5000))) if extensions
                                    else (_national(caller), _national(callee)))
        d2 = Dialog(cid2, core_caller, core_callee, SBC_IN, core, f"sbc{rng.getrandbits(32):08x}",
                    f"{rng.getrandbits(32):08x}", "UDP")
        port = 20000 + 2 * (n % 10000)
        key = rng.randbytes(30)
        sdp = {name: compose_sdp(SdpMedia(addr, p, (0, 8), (CryptoLine(1, SUITE, key),) if crypto else (),
                                          session_id=rng.getrandbits(31)))
               for name, addr, p, crypto in (("a", carrier, 30000 + n % 20000, True), ("sa", SBC_OUT, port, True),
                                             ("sb", SBC_IN, port, False), ("b", core, 16384 + 2 * (n % 4000), False))}
        fwd = rng.randrange(5, 80) * MS
        ring = rng.randrange(200, 1500) * MS
        answer = ring + rng.randrange(1000, 8000) * MS
        bye = answer + rng.randrange(5, 120) * S
        cseq2 = rng.randrange(101, 9000)
        for d, base, cseq, offer, ans in ((d1, t, 1, sdp["a"], sdp["sa"]), (d2, t + fwd, cseq2, sdp["sb"], sdp["b"])):
            relay = 0 if d is d2 else 2 * MS                     # responses reach hop 2 first
            br = f"{rng.getrandbits(40):010x}"
            a, b = d.caller_ip, d.callee_ip
            send(base, a, b, request(d, "INVITE", cseq, from_caller=True, branch=br, body=offer, established=False))
            send(base + MS, b, a, response(d, 100, "Trying", cseq, "INVITE", to_caller=True, branch=br, with_to_tag=False))
            send(t + fwd + ring + relay, b, a, response(d, 183, "Session Progress", cseq, "INVITE", to_caller=True, branch=br, body=ans))
            prack = f"{rng.getrandbits(40):010x}"
            send(t + fwd + ring + relay + 20 * MS, a, b, request(d, "PRACK", cseq + 1, from_caller=True, branch=prack))
            send(t + fwd + ring + relay + 25 * MS, b, a, response(d, 200, "OK", cseq + 1, "PRACK", to_caller=True, branch=prack))
            send(t + fwd + ring + relay + 300 * MS, b, a, response(d, 180, "Ringing", cseq, "INVITE", to_caller=True, branch=br))
            send(t + fwd + answer + relay, b, a, response(d, 200, "OK", cseq, "INVITE", to_caller=True, branch=br, body=ans))
            send(t + fwd + answer + relay + 30 * MS, a, b, request(d, "ACK", cseq, from_caller=True, branch=f"{rng.getrandbits(40):010x}"))
            upd = f"{rng.getrandbits(40):010x}"
            send(t + fwd + answer + 2 * S + relay, a, b, request(d, "UPDATE", cseq + 2, from_caller=True, branch=upd))
            send(t + fwd + answer + 2 * S + relay + 10 * MS, b, a, response(d, 200, "OK", cseq + 2, "UPDATE", to_caller=True, branch=upd))
            byb = f"{rng.getrandbits(40):010x}"
            by_at = t + fwd + bye + (2 * MS if d is d2 else 0)    # the carrier hangs up: hop 1 first
            send(by_at, a, b, request(d, "BYE", cseq + 3, from_caller=True, branch=byb))
            send(by_at + 20 * MS - (2 * MS if d is d2 else 0) + (4 * MS if d is d1 else 0), b, a,
                 response(d, 200, "OK", cseq + 3, "BYE", to_caller=True, branch=byb))
    packets.sort(key=lambda p: p[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with PcapWriter(path, LINKTYPE_ETHERNET) as w:
        for ts, data in packets:
            w.write(ts, data)
    return truth


def _hops(msgs: list[SipPacket]) -> list:  # type: ignore[type-arg]
    with paused_gc():
        return build_hops(msgs)


def best_of(n: int, fn: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(n):
        began = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - began)
    return best, result


def check(calls: list[AssembledCall], truth: dict[str, str]) -> dict[str, int]:
    """correct / silently wrong / flagged (wrong or incomplete but marked ambiguous) calls, against the truth."""
    out = {"correct": 0, "silent_wrong": 0, "flagged": 0, "calls_listed": len(calls)}
    expected = {frozenset((a, b)) for a, b in truth.items()}
    for call in calls:
        ids = frozenset(call.call_ids)
        if ids in expected:
            out["correct"] += 1
        elif call.ambiguous:
            out["flagged"] += 1
        else:
            out["silent_wrong"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark call assembly (issue 8).")
    p.add_argument("--calls", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    p.add_argument("--repeat", type=int, default=3, help="best of N")
    p.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)

    pcap = OUT / f"sip-{args.calls}-{args.rate:g}.pcap"
    began = time.perf_counter()
    truth = write_calls(pcap, args.calls, args.rate)
    gen_s = time.perf_counter() - began
    print(f"wrote {pcap} ({pcap.stat().st_size / 1e6:.1f} MB, {args.calls} calls) in {gen_s:.1f} s", flush=True)

    read_s, packets = best_of(args.repeat, lambda: read_sip(pcap))
    assert isinstance(packets, list)
    msgs: list[SipPacket] = packets
    print(f"(a) read+parse: {read_s:.2f} s for {len(msgs)} SIP messages", flush=True)
    configured = AssemblyConfig(NumberPlan(country_code="44"))
    rows = {}
    hop_s, hops = best_of(args.repeat, lambda: _hops(msgs))
    assert isinstance(hops, list)
    print(f"(a2) grouping into hops (build_hops): {hop_s:.2f} s ({len(hops)} hops)", flush=True)
    for name, config in (("configured (country code 44)", configured), ("not configured", AssemblyConfig())):
        secs, calls = best_of(args.repeat, lambda c=config: assemble(hops, c))
        assert isinstance(calls, list)
        rows[name] = (secs, check(calls, truth))
        print(f"(b) assembly, {name}: {secs:.2f} s  {rows[name][1]}", flush=True)

    ext_pcap = OUT / f"sip-{args.calls}-{args.rate:g}-extensions.pcap"
    ext_truth = write_calls(ext_pcap, args.calls, args.rate, extensions=True)
    ext_msgs = read_sip(ext_pcap)
    ext_hops = _hops(ext_msgs)
    ext_s, ext_calls = best_of(args.repeat, lambda: assemble(ext_hops, AssemblyConfig()))
    assert isinstance(ext_calls, list)
    rows["not configured, core side extensions + trunk name (no usable numbers)"] = (ext_s, check(ext_calls, ext_truth))
    print(f"(b) assembly, core side extensions: {ext_s:.2f} s  {check(ext_calls, ext_truth)}", flush=True)

    problems = []
    conf = rows["configured (country code 44)"][1]
    if conf["correct"] != args.calls or conf["calls_listed"] != args.calls:
        problems.append(f"configured: {conf['correct']}/{args.calls} calls assembled exactly")
    for name, (_, res) in rows.items():
        if name != "configured (country code 44)" and res["silent_wrong"]:
            problems.append(f"{name}: {res['silent_wrong']} calls silently mis-assembled")
    slowest = max(s for s, _ in rows.values())
    if slowest > TARGET_ASSEMBLY_S:
        problems.append(f"assembly {slowest:.2f} s > {TARGET_ASSEMBLY_S} s")
    lines = [
        BEGIN,
        "## Call assembly (`bench/assembly_bench.py`, issue 8)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared: load average {os.getloadavg()[0]:.1f} at the end), Python "
        f"{platform.python_version()}; best of {args.repeat}.",
        f"{args.calls:,} B2BUA calls at {args.rate:g} new calls/s (Poisson), {len(msgs):,} SIP messages "
        f"({len(msgs) / args.calls:.0f} per call), {pcap.stat().st_size / 1e6:.1f} MB: carrier side +44/+1, "
        f"core side national (020…, 07…, 001415…), own Call-ID/tags/CSeq on the core side, {HOTLINE_SHARE:.0%} of "
        f"calls to one hotline number, 4 carrier IPs, SBC signalling on two addresses, no correlation header.",
        "",
        "| step | seconds | ratio to (a) | result |",
        "|---|---:|---:|---|",
        f"| (a) read + parse the SIP pcap (anchor) | {read_s:.2f} | 1.00 | {len(msgs):,} messages |",
        f"| (a2) group messages into hops (build_hops) | {hop_s:.2f} | {hop_s / read_s:.2f} | {len(hops):,} hops |",
    ]
    for name, (secs, res) in rows.items():
        lines.append(f"| (b) assembly, numbers {name} | {secs:.2f} | {secs / read_s:.2f} | {res['correct']:,} correct, "
                     f"{res['flagged']} flagged ambiguous, {res['silent_wrong']} silently wrong, "
                     f"{res['calls_listed']:,} calls listed |")
    lines += [
        "",
        f"Target: assembly (b) ≤ {TARGET_ASSEMBLY_S:g} s on 2 cores — it applies to (b), hops → calls (hop facts, "
        "candidates, scores, assignment); reading and parsing the pcap (a) and grouping messages into hops (a2) are "
        "reported separately and are not inside the 2 s. "
        + ("All checks passed." if not problems else "CHECKS FAILED: " + "; ".join(problems)),
        END,
        "",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    if not args.no_write:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        section = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
        new = section.sub(lambda _: text, old) if section.search(old) else old.rstrip("\n") + "\n\n" + text
        RESULTS.write_text(new)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
