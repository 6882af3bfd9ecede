"""`make bench`: our correlation against the seed's tshark pipeline and a tcpdump anchor, on the same data, in one run.

    .venv/bin/python bench/run.py [--full-seed] [--skip-flow] [--no-write] [--repeat N] [--skip-capture | --capture-only]
                                  [--before REF] [--skip-others]
                                  [--skip-sessions | --skip-16gib]

Generates (or reuses) bench/out/ with gen_media.py, measures every contender best-of-N with the file cache
warm, checks that each found the call's packets, prints a table with ratios against the issue's targets and
writes bench/RESULTS.md (unless --no-write). Then the capture benchmark (bench/capture_bench.py, issue 4: needs
root and rpcapd) adds its own section to RESULTS.md; a correlation-only run keeps the capture section there.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# BENCH_CODE: another checkout's rtpcore under the same measurement code (decrypt_rounds' "before" subprocess).
CODE = Path(os.environ.get("BENCH_CODE") or ROOT)
for p in (str(CODE), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import assembly_bench  # noqa: E402
from run_render import E2E_NAMES, FLOW_RUNS, render  # noqa: E402
from before_after import cli_command, compile_bytecode, cpu_seconds, default_before, export, same_outputs  # noqa: E402
import capture_bench  # noqa: E402
import gen_media  # noqa: E402
import session_bench  # noqa: E402
import pylibsrtp  # noqa: E402
import wrong_key_bench  # noqa: E402

from rtpcore.media.bpf import leg_filter  # noqa: E402
from rtpcore.media.demux import filter_for_file  # noqa: E402
from rtpcore.media.decrypt import DecryptResult, FilteredInput, decrypt_call  # noqa: E402
from rtpcore.media.demux import filter_raw_file, media_files  # noqa: E402
from rtpcore.pcap import libpcap  # noqa: E402
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp  # noqa: E402
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET  # noqa: E402
from rtpcore.pcap.reader import open_capture  # noqa: E402
from rtpcore.pipeline import (  # noqa: E402
    InProcessRunner, analyze, combine, commit, correlate, decrypt, filter_one, learn, list_media, make_job, merge_raw,
    open_results, report, run_steps, select_media,
)
from rtpcore.plan import Endpoint, Leg, LegPlan, MediaSide  # noqa: E402
from rtpcore.report import CorrelationReport  # noqa: E402
from rtpcore.sip.legs import resolve_legs  # noqa: E402

WORK = gen_media.OUT / "work"
RESULTS = BENCH / "RESULTS.md"
DIRECTION = "inbound"
SEED_MIN_PACKETS = 10          # the seed keeps a leg's file only above this count
EXTRA_LEGS = 6                 # 2 real legs + 6 → the "8 legs" plan
EXTRA_PORT_STEP = 2            # a re-INVITE moving ports moves them by 2 (RTP+RTCP)
EXTRA_PORT_BASE = {"carrier": (29000, 39000), "core": (29500, 39500)}   # (peer, host): unused in the data



# -- helpers ------------------------------------------------------------------------------------


def best_of(n: int, fn: Callable[[], object], *, setup: Callable[[], object] | None = None) -> tuple[float, list[float], object]:
    """(best wall seconds, all runs, the last result); setup runs before each timed call, untimed."""
    times: list[float] = []
    result: object = None
    for _ in range(n):
        if setup is not None:
            setup()
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return min(times), times, result


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def count_packets(path: Path) -> int:
    with open_capture(path) as reader:
        return sum(1 for _ in reader)


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError:
        return "absent"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "?"


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "?")
    tcpdump = first_line(["tcpdump", "--version"])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "tshark": first_line(["tshark", "--version"]),
        "tcpdump": tcpdump,
        "libpcap": libpcap.version(),
        "pylibsrtp": getattr(pylibsrtp, "__version__", "?"),
        "kernel": platform.release(),
    }


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- our correlation ----------------------------------------------------------------------------


def run_plan(plan: LegPlan, sip: Path, media: list[Path], out: Path) -> CorrelationReport:
    """rtpcore.pipeline.correlate() with a given leg plan instead of one resolved from SIP (the 8-leg case)."""
    sources = media_files(media)
    job = make_job(sip, DIRECTION, media, out, min_packets=SEED_MIN_PACKETS, overwrite=True)
    txn = open_results(job)
    results = InProcessRunner().map(filter_one, sources, job, plan, txn)
    plan, results = learn(job, plan, results)
    merge_raw(job, plan, results, txn)
    decrypted = decrypt(plan, results, txn)
    combine(job, txn)
    commit(txn)
    return report(plan, results, decrypted, txn)


def eight_leg_plan(plan: LegPlan) -> LegPlan:
    """The call's 2 legs plus 6 more on the same hosts with moved ports (as re-INVITEs would add), no packets."""
    legs = list(plan.legs)
    for i in range(EXTRA_LEGS):
        base = plan.legs[i % 2]
        peer_base, host_base = EXTRA_PORT_BASE[base.name]
        step = EXTRA_PORT_STEP * (i // 2)
        n = base.negotiations[-1]

        def side(old: MediaSide, port: int) -> MediaSide:
            return dataclasses.replace(old, rtp=Endpoint(old.rtp.ip, port), rtcp=Endpoint(old.rtcp.ip, port + 1))

        moved = dataclasses.replace(n, peer=side(n.peer, peer_base + step), host=side(n.host, host_base + step))
        legs.append(Leg(f"{base.name}-{i // 2 + 2}", base.media_host, base.peer, base.call_ids, (moved,)))
    return dataclasses.replace(plan, legs=tuple(legs))


def report_packets(doc: dict) -> int:
    return sum(leg.get("packets", 0) for leg in doc["legs"])


def breakdown(sip: Path, media: list[Path], repeat: int) -> dict:
    """Where (a)'s time goes: interpreter + imports, and each step of run_steps in-process (best of N each), the
    analysis as shipped (its step timed too)."""
    startup = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
               "import rtpcore.cli, rtpcore.pipeline, rtpcore.settings; rtpcore.settings.load_settings()"]
    steps: dict[str, list[float]] = {}
    out = WORK / "steps"

    def lap(name: str, began: float) -> float:
        now = time.perf_counter()
        steps.setdefault(name, []).append(now - began)
        return now

    for _ in range(repeat):
        t = time.perf_counter()
        plan = sdp_plan = resolve_legs(sip, DIRECTION)
        job = make_job(sip, DIRECTION, media, out, min_packets=SEED_MIN_PACKETS, overwrite=True)
        txn = open_results(job)
        t = lap("plan (SIP → legs)", t)
        selection = select_media(job, plan, txn, list_media(job, txn))
        t = lap("list + select media (chunk indexes)", t)
        results = InProcessRunner().map(filter_one, selection.reads, job, plan, txn)
        t = lap("filter: BPF + route + write per file (2 processes)", t)
        plan, results = learn(job, plan, results)
        merge_raw(job, plan, results, txn)
        t = lap("learn + merge → media_raw.pcap", t)
        decrypted = decrypt(plan, results, txn, True)
        t = lap("decrypt → decrypted/ + media_decrypted.pcap (headers collected for the analysis)", t)
        combine(job, txn)
        t = lap("combine → SIP_plus_media_decrypted.pcap", t)
        analyze(job, sdp_plan, plan, decrypted, txn)
        t = lap("analyze → analysis.json, report.html, SVGs, WAVs (as shipped; not this work's)", t)
        commit(txn)
        lap("commit (swap the staged results in)", t)
    sources = media_files(media)
    serial = []
    for _ in range(repeat):
        t = time.perf_counter()
        filter_raw_file(plan, sources[0], WORK / "steps-serial")
        serial.append(time.perf_counter() - t)
    bpf = []
    expression = filter_for_file(plan, sources[0])
    for _ in range(repeat):
        t = time.perf_counter()
        libpcap.filter_file(sources[0], WORK / "steps-bpf.pcap", expression)
        bpf.append(time.perf_counter() - t)
    start, _, _ = best_of(repeat, lambda: run(startup))
    return {"startup": start, "steps": {k: min(v) for k, v in steps.items()},
            "one_file": min(serial), "one_file_bpf": min(bpf)}


# -- contenders ---------------------------------------------------------------------------------


def display_filter(leg: Leg) -> str:
    """The seed's per-leg display filter: both sides' address and RTP port from the last negotiation."""
    n = leg.negotiations[-1]
    return (f"ip.addr=={n.peer.rtp.ip} and ip.addr=={n.host.rtp.ip} and "
            f"udp.port=={n.peer.rtp.port} and udp.port=={n.host.rtp.port}")


def seed_pipeline(plan: LegPlan, media: list[Path], *, quick: bool, kept_pairs: int) -> dict:
    """Run bench/seed_pipeline.sh; with --quick extrapolate from one leg × one file to every pass."""
    out = fresh(WORK / "seed")
    filters = out / "filters.tsv"
    filters.write_text("".join(f"{leg.name}\t{display_filter(leg)}\n" for leg in plan.legs))
    cmd = ["bash", str(BENCH / "seed_pipeline.sh"), *(["--quick"] if quick else []), str(out), str(filters), *map(str, media)]
    began = time.perf_counter()
    proc = run(cmd)
    wall = time.perf_counter() - began
    passes = [line.split() for line in proc.stdout.splitlines() if line.startswith("pass ")]
    merge = next(float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("merge "))
    counts = [float(p[5]) for p in passes if p[1] == "count"]
    writes = [float(p[5]) for p in passes if p[1] == "write"]
    n_count = len(plan.legs) * len(media)
    if quick:
        total = statistics.mean(counts) * n_count + statistics.mean(writes) * kept_pairs + merge
        packets = None
    else:
        total = wall
        packets = count_packets(out / "media_raw.pcap")
    return {"seconds": total, "wall": wall, "extrapolated": quick, "count_pass": statistics.mean(counts),
            "write_pass": statistics.mean(writes), "passes": f"{n_count} count + {kept_pairs} write",
            "measured_passes": len(passes), "merge": merge, "packets": packets, "raw": proc.stdout}


def correlate_no_analysis(sip: Path, media: list[Path], out: Path) -> CorrelationReport:
    """correlate() with CorrelationJob.analysis=False: the correlation alone."""
    job = dataclasses.replace(make_job(sip, DIRECTION, media, out, overwrite=True), analysis=False, publish=False)
    return run_steps(job, InProcessRunner()).report


def end_to_end(plan: LegPlan, sip: Path, media: list[Path], repeat: int, before: Path | None) -> dict[str, dict]:
    """(a) CLI and library (analysis as shipped and off), the "before" code's CLI, and (c) tcpdump, round-robin
    so load from elsewhere hits all alike."""
    bpf = WORK / "legs.bpf"
    bpf.write_text(filter_for_file(plan, media[0]) + "\n")  # the same expression our demux compiles
    tcpdump_out = WORK / "tcpdump"
    tcpdump_cmd = ["bash", str(BENCH / "tcpdump_anchor.sh"), str(tcpdump_out), str(bpf), *map(str, media)]
    commands: dict[str, list[str]] = {
        "cli": cli_command(ROOT, sip, DIRECTION, media, WORK / "cli"),
        "cli_noan": cli_command(ROOT, sip, DIRECTION, media, WORK / "cli-noan", analysis=False),
    }
    if before is not None:
        commands["cli_before"] = cli_command(before, sip, DIRECTION, media, WORK / "cli-before")
        commands["cli_before_noan"] = cli_command(before, sip, DIRECTION, media, WORK / "cli-before-noan", analysis=False)
    contenders: dict[str, Callable[[], object]] = {name: (lambda c=cmd: run(c)) for name, cmd in commands.items()}
    contenders["lib"] = lambda: correlate(sip, DIRECTION, media, WORK / "lib", overwrite=True)
    contenders["lib_noan"] = lambda: correlate_no_analysis(sip, media, WORK / "lib-noan")
    contenders["tcpdump"] = lambda: run(tcpdump_cmd)
    for fn in contenders.values():  # one untimed run each: the exported "before" code compiles its .pyc files
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    last: dict[str, object] = {}
    for _ in range(repeat):
        for name, fn in contenders.items():
            began, used = time.perf_counter(), cpu_seconds(name)
            last[name] = fn()
            times[name].append(time.perf_counter() - began)
            cpu[name].append(cpu_seconds(name) - used)
    out: dict[str, dict] = {}
    for name in contenders:
        result = last[name]
        if isinstance(result, CorrelationReport):
            packets = report_packets(result.to_json())
        elif name == "tcpdump":
            packets = count_packets(tcpdump_out / "media_raw.pcap")
        else:
            assert isinstance(result, subprocess.CompletedProcess)
            packets = report_packets(json.loads(result.stdout))
        out[name] = {"seconds": min(times[name]), "times": times[name], "packets": packets, "cpu": min(cpu[name])}
    out["cli"]["raw_packets"] = count_packets(WORK / "cli" / "combined" / "media_raw.pcap")
    pairs = [("cli", "tcpdump"), ("cli_noan", "tcpdump"), ("lib_noan", "tcpdump"), ("cli", "cli_before"),
             ("cli_noan", "cli_before_noan")]
    out["paired"] = {f"{a}/{b}": statistics.median(x / y for x, y in zip(times[a], times[b]))
                     for a, b in pairs if a in times and b in times}
    return out


def legs_2_vs_8(plan: LegPlan, sip: Path, media: list[Path], repeat: int) -> dict:
    """Same data and code path, 2-leg vs 8-leg plan, interleaved so drift hits both alike."""
    plan8 = eight_leg_plan(plan)
    t2: list[float] = []
    t8: list[float] = []
    p2 = p8 = 0
    for _ in range(repeat):
        for p, times, out in ((plan, t2, WORK / "legs2"), (plan8, t8, WORK / "legs8")):
            began = time.perf_counter()
            report = run_plan(p, sip, media, out)
            times.append(time.perf_counter() - began)
            if p is plan:
                p2 = report_packets(report.to_json())
            else:
                p8 = report_packets(report.to_json())
    return {"two": min(t2), "eight": min(t8), "t2": t2, "t8": t8, "packets2": p2, "packets8": p8,
            "pairs8": len(plan8.legs) * 4, "bpf_chars8": len(leg_filter(plan8))}


# -- decrypt throughput -------------------------------------------------------------------------


def decrypt_throughput(repeat: int) -> dict:
    """pylibsrtp unprotect in a tight loop vs rtpcore's decrypt_call (read, decrypt, rewrite frames, write)."""
    ds = gen_media.generate_srtp()
    plan = resolve_legs(ds.sip, DIRECTION)
    work = fresh(WORK / "decrypt")
    result = filter_raw_file(plan, ds.media, work / "filtered")
    carrier = next(lf for lf in result.legs if lf.leg == "carrier")
    assert carrier.output is not None
    keys = {int(s["ssrc"], 16): base64.b64decode(s["key"]) for s in ds.truth["streams"]
            if s["leg"] == "carrier" and s["kind"] == "rtp" and s["encrypted"]}
    per_ssrc: dict[int, list[bytes]] = {ssrc: [] for ssrc in keys}
    with open_capture(carrier.output) as reader:
        for f in reader:
            l3 = link_payload(f.linktype, f.data)
            udp = parse_udp(parse_ip(l3)) if l3 else None
            if udp is not None and udp.sport % 2 == 0:
                per_ssrc[int.from_bytes(udp.payload[8:12], "big")].append(bytes(udp.payload))
    n_tight = sum(map(len, per_ssrc.values()))
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80

    def tight() -> int:
        done = 0
        for ssrc, packets in per_ssrc.items():
            unprotect = pylibsrtp.Session(pylibsrtp.Policy(key=keys[ssrc], ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                                           srtp_profile=profile)).unprotect
            for p in packets:
                unprotect(p)
            done += len(packets)
        return done

    inputs = [FilteredInput("carrier", carrier.output, ds.media)]
    tight_times: list[float] = []
    ours_times: list[float] = []
    for _ in range(repeat):  # alternating, so load from elsewhere hits both alike
        t_tight, _, _ = best_of(1, tight)
        tight_times.append(t_tight)
        t_ours, _, res = best_of(1, lambda: decrypt_call(plan, inputs, work / "decrypted", work / "merged.pcap"))
        ours_times.append(t_ours)
    t_tight, t_ours = min(tight_times), min(ours_times)
    assert isinstance(res, DecryptResult)
    decrypted = sum(s.decrypted for s in res.streams)
    return {"tight_s": t_tight, "tight_pps": n_tight / t_tight, "tight_packets": n_tight,
            "ours_s": t_ours, "ours_pps": res.packets / t_ours, "ours_packets": res.packets, "decrypted": decrypted,
            "tight_times": tight_times, "ours_times": ours_times}


def decrypt_rounds(repeat: int, before: Path | None, rounds: int = 2) -> dict:
    """decrypt_throughput of this checkout (in-process) and of the "before" code (its own bench/run.py in a
    subprocess), alternating; each ratio is against the tight loop in the same process, so load cancels."""
    ours: list[dict] = []
    theirs: list[dict] = []
    for _ in range(rounds):
        ours.append(decrypt_throughput(repeat))
        if before is not None:
            done = run([sys.executable, str(BENCH / "run.py"), "--decrypt-json", "--repeat", str(repeat)],
                       env={**os.environ, "BENCH_CODE": str(before)})
            theirs.append(json.loads(done.stdout.rpartition("\nJSON ")[2]))

    def best(runs: list[dict]) -> dict:
        return max(runs, key=lambda d: d["ours_pps"] / d["tight_pps"])

    result = best(ours)
    if theirs:
        result["before"] = best(theirs)
    return result


# -- Prefect flow -------------------------------------------------------------------------------


def flow_runs(sip: Path, media: list[Path]) -> dict:
    """correlate-call under one temporary Prefect server: start-up, then FLOW_RUNS runs (the best after the first is the figure)."""
    began = time.perf_counter()
    from prefect.testing.utilities import prefect_test_harness

    from flows.correlate_call import correlate_call
    imported = time.perf_counter()
    out = WORK / "flow"
    times: list[float] = []
    sink = io.StringIO()
    with prefect_test_harness():
        started = time.perf_counter()
        for _ in range(FLOW_RUNS):
            t = time.perf_counter()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                doc = correlate_call(sip_pcap=str(sip), direction=DIRECTION, media=[str(m) for m in media],
                                     output_folder=str(out), overwrite=True)
            times.append(time.perf_counter() - t)
    return {"import": imported - began, "server_start": started - imported, "first": times[0],
            "later": min(times[1:]), "times": times, "packets": report_packets(doc)}


# -- output -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark the correlation (issue 3).")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="seed pipeline: one leg × one file, extrapolated (default)")
    seed.add_argument("--full-seed", dest="quick", action="store_false", help="seed pipeline: every pass (minutes)")
    p.add_argument("--skip-flow", action="store_true", help="do not start Prefect for the correlate-call flow")
    p.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    p.add_argument("--repeat", type=int, default=5, help="best of N (default 5)")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--skip-capture", action="store_true", help="correlation only (no rpcapd capture benchmark)")
    part.add_argument("--capture-only", action="store_true", help="only the capture benchmark (capture_bench.py)")
    sessions = p.add_mutually_exclusive_group()
    sessions.add_argument("--skip-sessions", action="store_true", help="no 1/4/16 GiB session benchmark (issue 12)")
    sessions.add_argument("--skip-16gib", action="store_true", help="session benchmark at 1 and 4 GiB only (quick)")
    p.add_argument("--before", default=default_before(ROOT), metavar="REF",
                   help="git ref whose code runs as the 'before' CLI and decrypt_call, interleaved with this "
                        "checkout's (default: the merge base with main; 'none' to skip)")
    p.add_argument("--skip-others", action="store_true",
                   help="only this file's correlation parts: no wrong-key, assembly, session or capture benchmark")
    p.add_argument("--decrypt-json", action="store_true", help=argparse.SUPPRESS)  # decrypt_rounds' subprocess
    args = p.parse_args(argv)
    if args.decrypt_json:
        print("\nJSON " + json.dumps(decrypt_throughput(args.repeat)))
        return 0
    capture_args = ["--no-write"] if args.no_write else []
    if args.capture_only:
        return capture_bench.main(capture_args)

    m = machine()
    print(f"machine: {m['nproc']} cores, {m['cpu']}; Python {m['python']}; {m['libpcap']}", flush=True)
    ds = gen_media.generate()
    gen_media.generate_srtp()
    media = list(ds.media)
    plan = resolve_legs(ds.sip, DIRECTION)
    WORK.mkdir(parents=True, exist_ok=True)
    for f in media:  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass

    r: dict[str, Any] = {}
    scratch = tempfile.TemporaryDirectory(prefix="bench-before-")
    before = None
    if args.before and args.before != "none":
        before = export(ROOT, args.before, Path(scratch.name) / "before")
        r["before_ref"] = args.before
    compile_bytecode(ROOT, *([before] if before is not None else []))
    began = time.perf_counter()
    e2e = end_to_end(plan, ds.sip, media, args.repeat, before)
    r["paired"] = e2e.pop("paired")
    r.update(e2e)
    r["load"] = os.getloadavg()
    r["same_outputs"] = same_outputs(WORK / "cli", WORK / "cli-before") if before is not None else None
    print(f"  end to end: {time.perf_counter() - began:.1f} s", flush=True)
    steps: list[tuple[str, Callable[[], dict]]] = [
        ("legs", lambda: legs_2_vs_8(plan, ds.sip, media, 2 * args.repeat)),
        ("decrypt", lambda: decrypt_rounds(args.repeat, before)),
        ("steps", lambda: breakdown(ds.sip, media, args.repeat)),
    ]
    for name, step in steps:
        began = time.perf_counter()
        r[name] = step()
        print(f"  {name}: {time.perf_counter() - began:.1f} s", flush=True)
    kept_pairs = sum(1 for leg in plan.legs for _ in media)  # every leg has > 10 packets in every file
    began = time.perf_counter()
    r["seed"] = seed_pipeline(plan, media, quick=args.quick, kept_pairs=kept_pairs)
    print(f"  seed: {time.perf_counter() - began:.1f} s", flush=True)
    if not args.skip_flow:
        began = time.perf_counter()
        r["flow"] = flow_runs(ds.sip, media)
        print(f"  flow: {time.perf_counter() - began:.1f} s", flush=True)

    scratch.cleanup()
    expected = ds.truth["media_packets"]
    problems = [f"{name}: found {r[name]['packets']} packets, the call has {expected}"
                for name in (*E2E_NAMES, "flow") if name in r and r[name]["packets"] != expected]
    if r["same_outputs"] is not None and r["same_outputs"] is not True:
        problems.append(f"outputs differ from the before code's: {r['same_outputs']}")
    if r["legs"]["packets2"] != expected or r["legs"]["packets8"] != expected:
        problems.append(f"legs: 2-leg {r['legs']['packets2']} / 8-leg {r['legs']['packets8']} packets, expected {expected}")
    if r["decrypt"]["decrypted"] < r["decrypt"]["tight_packets"]:
        problems.append(f"decrypt: {r['decrypt']['decrypted']} decrypted < {r['decrypt']['tight_packets']} SRTP packets")

    text = render(m, r, args, ds)
    print()
    print(text)
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    if not args.no_write:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        # Every other benchmark keeps its own section between <!-- name:begin --> and <!-- name:end --> markers.
        kept = "\n".join(
            m.group(0) for m in re.finditer(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->\n?", old, re.S))
        RESULTS.write_text(text + ("\n" + kept if kept else ""))
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    if args.skip_others:
        return 1 if problems else 0
    print("\nwrong-key benchmark (bench/wrong_key_bench.py):", flush=True)
    if wrong_key_bench.main(["--no-write"] if args.no_write else []) != 0:
        problems.append("wrong-key: a wrong key cost more than 2x the right key")
    print("\ncall assembly benchmark (bench/assembly_bench.py):", flush=True)
    if assembly_bench.main(["--no-write"] if args.no_write else []) != 0:
        problems.append("assembly: calls mis-assembled or over 2 s")
    if not args.skip_sessions:
        print("\nsession benchmark (bench/session_bench.py):", flush=True)
        session_args = (["--skip-16"] if args.skip_16gib else []) + (["--no-write"] if args.no_write else [])
        if session_bench.main(session_args) != 0:
            problems.append("sessions: selective outputs differ from a full scan")
    if not args.skip_capture:
        print("\ncapture benchmark (bench/capture_bench.py):", flush=True)
        if capture_bench.main(capture_args) != 0:
            print("CHECK FAILED: capture benchmark did not run (see above)", file=sys.stderr)
            problems.append("capture")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
