"""bench/run.py's results table: the measurements of one `make bench` run as the RESULTS.md section."""
from __future__ import annotations

import argparse
import datetime as dt

import gen_media

FLOW_RUNS = 3
E2E_NAMES = ("cli", "cli_noan", "cli_before", "cli_before_noan", "lib", "lib_noan", "tcpdump")
TARGET_VS_TCPDUMP = 1.0        # ours / (c) ≤ this
TARGET_VS_SEED = 300.0         # (b) / ours ≥ this
TARGET_DECRYPT = 0.7           # ours pps / tight-loop pps ≥ this
TARGET_LEGS = 1.10             # 8 legs / 2 legs ≤ this


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(m: dict, r: dict, args: argparse.Namespace, ds: gen_media.Dataset) -> str:
    info = ds.stamp["info"]
    truth_packets = ds.truth["media_packets"]
    total = sum(info["packets_per_file"])
    sizes = [(gen_media.OUT / "media" / name).stat().st_size for name in info["files"]]
    a, lib, c, s = r["cli"]["seconds"], r["lib"]["seconds"], r["tcpdump"]["seconds"], r["seed"]["seconds"]
    a0, lib0 = r["cli_noan"]["seconds"], r["lib_noan"]["seconds"]
    seed_label = "extrapolated" if r["seed"]["extrapolated"] else "full run"
    load = " / ".join(f"{x:.1f}" for x in r["load"])
    before = r.get("before_ref")
    lines = [
        "# Benchmark results (`make bench`)",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {m['nproc']} cores, {m['cpu']}; "
        f"Python {m['python']}; {m['tshark']}; {m['tcpdump']}; {m['libpcap']}; pylibsrtp {m['pylibsrtp']}; "
        f"kernel {m['kernel']}. Best of {args.repeat} (every end-to-end contender round-robin), file cache warm, bytecode caches (.pyc) written first as by any first run; "
        f"the machine was shared with other work: load average {load} (1/5/15 min) at the end of the end-to-end part.",
        "",
        f"Data (bench/gen_media.py, seed {gen_media.SEED}): {len(sizes)} files of "
        f"{' + '.join(f'{x / 2**20:.1f}' for x in sizes)} MiB, {total:,} packets over {info['seconds']:.0f} s: "
        f"{gen_media.BACKGROUND_CALLS * 4} background RTP streams of 214-byte frames ({info['background']:,}), "
        f"{info['noise']:,} non-RTP UDP, and one inbound call of two legs (carrier SRTP "
        f"AES_CM_128_HMAC_SHA1_80, core RTP) of {truth_packets:,} packets = {100 * truth_packets / total:.2f} % "
        "spanning both files.",
        "",
        "| measurement | seconds | packets found | ratio | target | |",
        "|---|---:|---:|---:|---|---|",
        f"| (a) `rtphelper correlate` as shipped (subprocess, interpreter start included; with the call analysis + report) "
        f"| {a:.3f} | {r['cli']['packets']:,} | (a)/(c) = {a / c:.2f}× | ≤ {TARGET_VS_TCPDUMP:.1f}× | "
        f"{verdict(a / c <= TARGET_VS_TCPDUMP)} |",
        f"| (a) `rtphelper correlate`, analysis off (`CorrelationJob.analysis=False`) | {a0:.3f} | "
        f"{r['cli_noan']['packets']:,} | (a)/(c) = {a0 / c:.2f}× | ≤ {TARGET_VS_TCPDUMP:.1f}× | "
        f"{verdict(a0 / c <= TARGET_VS_TCPDUMP)} |",
    ]
    if before:
        b, b0 = r["cli_before"]["seconds"], r["cli_before_noan"]["seconds"]
        lines += [
            f"| (a) before (main at {before}): `rtphelper correlate` as shipped | {b:.3f} | {r['cli_before']['packets']:,} "
            f"| (a)/(c) = {b / c:.2f}×; after/before = {a / b:.2f}× | | |",
            f"| (a) before (main at {before}): analysis off | {b0:.3f} | {r['cli_before_noan']['packets']:,} | "
            f"(a)/(c) = {b0 / c:.2f}×; after/before = {a0 / b0:.2f}× | | |",
        ]
    lines += [
        f"| (a) `rtpcore.pipeline.correlate()` in-process, as shipped | {lib:.3f} | {r['lib']['packets']:,} | "
        f"(a)/(c) = {lib / c:.2f}× | | |",
        f"| (a) in-process, analysis off | {lib0:.3f} | {r['lib_noan']['packets']:,} | (a)/(c) = {lib0 / c:.2f}× | | |",
        f"| (c) `tcpdump -r` per file with the legs' BPF + mergecap | {c:.3f} | {r['tcpdump']['packets']:,} | | | |",
        f"| (b) seed pipeline: tshark count + write per leg × file, mergecap ({seed_label}) | {s:.1f} | "
        f"{r['seed']['packets'] if r['seed']['packets'] is not None else '–'} | (b)/(a) = {s / a:.0f}× | "
        f"≥ {TARGET_VS_SEED:.0f}× | {verdict(s / a >= TARGET_VS_SEED)} |",
    ]
    legs = r["legs"]
    lines.append(
        f"| 2 legs, library pipeline | {legs['two']:.3f} | {legs['packets2']:,} | | | |")
    lines.append(
        f"| 8 legs, library pipeline (same data; {legs['pairs8']} endpoint pairs; best of {len(legs['t8'])} interleaved) | {legs['eight']:.3f} | "
        f"{legs['packets8']:,} | 8/2 = {legs['eight'] / legs['two']:.3f}× | ≤ {TARGET_LEGS:.2f}× | "
        f"{verdict(legs['eight'] / legs['two'] <= TARGET_LEGS)} |")
    d = r["decrypt"]
    ratio = d["ours_pps"] / d["tight_pps"]
    lines.append(f"| SRTP tight loop: pylibsrtp `unprotect` ({d['tight_packets']:,} packets) | {d['tight_s']:.3f} | "
                 f"{d['tight_pps']:,.0f} pkt/s | | | |")
    lines.append(f"| SRTP ours: `decrypt_call` read+decrypt+rewrite+write ({d['ours_packets']:,} packets, "
                 f"{d['decrypted']:,} decrypted) | {d['ours_s']:.3f} | {d['ours_pps']:,.0f} pkt/s | "
                 f"{ratio:.2f}× | ≥ {TARGET_DECRYPT:.1f}× | {verdict(ratio >= TARGET_DECRYPT)} |")
    if "before" in d:
        db = d["before"]
        lines.append(f"| SRTP before (main at {before}): `decrypt_call` | {db['ours_s']:.3f} | {db['ours_pps']:,.0f} pkt/s | "
                     f"{db['ours_pps'] / db['tight_pps']:.2f}× its tight loop ({db['tight_pps']:,.0f} pkt/s) | | |")
    if "flow" in r:
        f = r["flow"]
        lines.append(f"| `correlate-call` flow run (best of runs 2–{FLOW_RUNS} under one temporary server) | "
                     f"{f['later']:.3f} | {f['packets']:,} | − library = {f['later'] - lib:+.3f} s Prefect overhead | | |")
        lines.append(f"| `correlate-call` flow run, 1st run | {f['first']:.3f} | | not included: server start-up "
                     f"{f['server_start']:.1f} s, prefect + flow import {f['import']:.1f} s | | |")
    seed = r["seed"]
    lines += [
        "",
        f"Expected packets (callgen truth): {truth_packets:,}; our `media_raw.pcap` (CLI run): "
        f"{r['cli']['raw_packets']:,}; tcpdump's: {r['tcpdump']['packets']:,}."
        + ("" if r.get("same_outputs") is None else
           " Outputs of the CLI runs before and after (combined/*.pcap, decrypted/*.pcap): "
           + ("byte-identical." if r["same_outputs"] is True else f"**differ**: {r['same_outputs']}.")),
        "",
        "Under load the best-of figures above move with the other work; each round runs every contender once, so the "
        "median over rounds of the ratio within a round is steadier: "
        + "; ".join(f"{k.replace('_noan', ' (analysis off)').replace('_', ' ')} = {v:.2f}×"
                    for k, v in r["paired"].items()) + ". "
        "CPU seconds (user + sys of the bench process and its children, best of the rounds; filter processes "
        "included): " + ", ".join(f"{name.replace('_noan', ' (analysis off)').replace('_', ' ')} {r[name]['cpu']:.3f}"
                                        for name in E2E_NAMES if name in r) + ".",
        "",
        f"Seed pipeline: count pass {seed['count_pass']:.1f} s, write pass {seed['write_pass']:.1f} s per 256 MiB file; "
        f"{seed['passes']} passes; mergecap {seed['merge']:.2f} s"
        + (f"; measured 1 leg × 1 file ({seed['wall']:.1f} s wall) and extrapolated to all passes "
           "(`--full-seed` runs them all; its display filters match RTP only, as the seed's did, so it would "
           "also find fewer packets)." if seed["extrapolated"] else f"; full run {seed['wall']:.1f} s wall."),
        "",
        "The 8-leg plan is the call's 2 legs plus 6 legs on the same media-host addresses with moved ports "
        "(what re-INVITEs moving ports add) that carry no packets: it measures what more legs cost "
        "(a longer BPF, a bigger routing table), not more data.",
        "",
        "Where (a)'s time goes (best of N each, in-process unless noted):",
        "",
        "| part | seconds |",
        "|---|---:|",
        f"| interpreter start + imports + settings (subprocess) | {r['steps']['startup']:.3f} |",
        *(f"| {name} | {sec:.3f} |" for name, sec in r["steps"]["steps"].items()),
        f"| one file filtered in this process: libpcap BPF pass alone | {r['steps']['one_file_bpf']:.3f} |",
        f"| one file filtered in this process: BPF + route + write | {r['steps']['one_file']:.3f} |",
        "",
        "All runs (s): " + "; ".join(
            f"{name} {', '.join(f'{t:.3f}' for t in times)}" for name, times in (
                *((name, r[name]["times"]) for name in E2E_NAMES if name in r),
                ("2 legs", legs["t2"]), ("8 legs", legs["t8"]), ("tight", d["tight_times"]),
                ("decrypt_call", d["ours_times"]))
            + ((("flow", r["flow"]["times"]),) if "flow" in r else ())),
        "",
    ]
    return "\n".join(lines)
