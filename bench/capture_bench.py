#!/usr/bin/env python3
"""Capture benchmark (issue 4): `rtphelper capture` vs libpcap's own rpcap:// client, same rpcapd, same load on lo.

    .venv/bin/python bench/capture_bench.py [--rates 20000 50000 100000] [--seconds 10] [--repeat 2]
                                            [--no-write] [--profile] [--before TREE]

Per rate and client: a fresh rpcapd (scripts/build-rpcapd.sh), the client started and capturing, then
bench/udp_load.c sends 200-byte UDP datagrams carrying a counter to 127.0.0.1 at the rate; the client's
files are read back with rtpcore.pcap.reader and the distinct counters counted. CPU is user+sys of the
client process (wait4) and of rpcapd's process group, kernel drops come from /proc/net/softnet_stat.
With --before TREE (e.g. a `git worktree` of main) a third client, "before", runs `rtphelper capture` with
PYTHONPATH=TREE, interleaved with ours and the reference in the same run, for an after/before ratio.
Writes the "Capture" section of bench/RESULTS.md (the correlation section is left as it is).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from before_after import compile_bytecode  # noqa: E402
from rtpcore.pcap.reader import open_capture  # noqa: E402

OUT = BENCH / "out" / "capture"
RESULTS = BENCH / "RESULTS.md"
RPCAPD_SRC = ROOT / ".cache" / "rpcapd" / "src"
BUILD_RPCAPD = ROOT / "scripts" / "build-rpcapd.sh"
RTPHELPER = Path(sys.executable).with_name("rtphelper")
BEGIN, END = "<!-- capture:begin -->", "<!-- capture:end -->"

TAG = b"RTPBENCH"              # udp_load.c: payload = TAG + big-endian u64 counter + padding
PAYLOAD = 200
RATES = (20_000, 50_000, 100_000)
READ_TIMEOUT_MS = 50           # what our engine asks rpcapd for; the reference asks for the same
LEAD_IN = 0.3                  # after the client is capturing, before the load starts
SPARE = 4.0                    # client duration = load seconds + this (start-up, drain)
DRAIN = 1.5                    # load window for CPU = load + this (packets still in flight)
TARGET_LOSS = 0.0              # % at the top rate
TARGET_CPU_RATIO = 1.0         # ours / reference (issue 12: capture-time index included)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- building the C pieces ------------------------------------------------------------------------


def rpcapd_binary() -> Path:
    """The cached rpcapd (built by scripts/build-rpcapd.sh; it needs root the first time)."""
    proc = subprocess.run(["bash", str(BUILD_RPCAPD)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"no rpcapd: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def remote_libpcap() -> tuple[Path, Path, list[str]]:
    """(libpcap.a, include dir, extra libs) of the --enable-remote build rpcapd came from; built here if absent."""
    src = RPCAPD_SRC
    if not (src / "libpcap.a").exists():
        src = OUT / "libpcap-src"
        if not (src / "libpcap.a").exists():
            shutil.rmtree(src, ignore_errors=True)
            shutil.copytree(RPCAPD_SRC, src, ignore=shutil.ignore_patterns("*.o", "Makefile", "config.h"))
            subprocess.run(["./configure", "--enable-remote", "--disable-dbus", "--disable-rdma",
                            "--disable-bluetooth", "--disable-usb", "--disable-netmap", "--without-libnl"],
                           cwd=src, check=True, capture_output=True)
            subprocess.run(["make", f"-j{os.cpu_count()}", "libpcap.a"], cwd=src, check=True, capture_output=True)
    config = (src / "config.h").read_text()
    if "#define ENABLE_REMOTE" not in config:
        raise RuntimeError(f"{src}: libpcap was not configured with --enable-remote")
    libs = ["-lssl", "-lcrypto"] if "#define HAVE_OPENSSL 1" in config else []
    return src / "libpcap.a", src, [*libs, "-lpthread"]


def build_tools() -> tuple[Path, Path]:
    """Compile udp_load.c and rpcap_ref.c (against the remote-enabled static libpcap) into bench/out/capture/."""
    OUT.mkdir(parents=True, exist_ok=True)
    archive, include, libs = remote_libpcap()
    load, ref = OUT / "udp_load", OUT / "rpcap_ref"
    builds = [
        (load, BENCH / "udp_load.c", ["gcc", "-O2", "-Wall", "-o", str(load), str(BENCH / "udp_load.c")]),
        (ref, BENCH / "rpcap_ref.c", ["gcc", "-O2", "-Wall", f"-I{include}", "-o", str(ref),
                                      str(BENCH / "rpcap_ref.c"), str(archive), *libs]),
    ]
    for binary, source, cmd in builds:
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(cmd, check=True)
    return load, ref


# -- measuring ------------------------------------------------------------------------------------


def proc_cpu(pid: int, *, children: bool = False) -> float:
    """utime+stime seconds of one process (all its threads), plus its reaped children's when asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # fields after "comm)" start at state: utime is the 14th overall
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def group_cpu(pgid: int) -> float:
    """rpcapd: the listener (with the per-client children it reaped) and any child still running."""
    total = proc_cpu(pgid, children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pgid:
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def softnet_dropped() -> int:
    """Packets the kernel dropped off a full per-CPU backlog: lost before any capture could see them."""
    with contextlib.suppress(OSError):
        return sum(int(row.split()[1], 16) for row in Path("/proc/net/softnet_stat").read_text().splitlines())
    return 0


def wait_rusage(proc: subprocess.Popen, timeout: float) -> tuple[float, float]:
    """Reap proc with wait4 and return its own (user, sys) seconds (no other child mixes in)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime, usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            deadline = time.monotonic() + 5
        time.sleep(0.02)


def counters_written(files: list[Path]) -> tuple[int, int, int]:
    """(records, distinct counters, the first counter missing) over the capture files."""
    seen = bytearray()
    records = 0
    for path in files:
        with open_capture(path) as reader:
            for _, _, data, _ in reader.records():
                at = data.find(TAG)
                if at < 0:
                    continue
                records += 1
                n = int.from_bytes(data[at + 8:at + 16], "big")
                if n >= len(seen):
                    seen.extend(bytes(n + 1 - len(seen) + (1 << 16)))
                seen[n] = 1
    distinct = seen.count(1)
    first_missing = seen.find(0)
    return records, distinct, first_missing


class Rpcapd:
    """A fresh rpcapd per run, in its own process group (as tests/rpcap/conftest.py starts it)."""

    def __init__(self, binary: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([str(binary), "-b", "127.0.0.1", "-p", str(self.port), "-4", "-n"],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"rpcapd did not listen on 127.0.0.1:{self.port}") from None
                time.sleep(0.02)

    def cpu(self) -> float:
        return group_cpu(self.proc.pid)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)


@dataclass(slots=True)
class Run:
    """One client at one rate."""

    client: str
    pps: int
    sent: int
    send_failed: int
    send_seconds: float
    records: int
    distinct: int
    first_missing: int
    cpu_user: float
    cpu_sys: float
    cpu_startup: float
    cpu_load: float
    rpcapd_cpu: float
    sender_cpu: float
    softnet_drops: int
    stats: dict

    @property
    def cpu_total(self) -> float:
        return self.cpu_user + self.cpu_sys

    @property
    def loss(self) -> int:
        return self.sent - self.distinct

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.loss / max(1, self.sent)

    @property
    def achieved(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else 0.0


def start_ours(port: int, dport: int, seconds: float, out: Path, profile: Path | None,
               tree: Path | None = None) -> subprocess.Popen:
    """`rtphelper capture` from this tree, or from `tree` (the "before" client) through PYTHONPATH."""
    args = ["capture", "--address", "127.0.0.1", "--interface", "lo", "--port", str(port),
            "--filter", f"udp port {dport}", "--duration", f"{seconds:g}", "--out", str(out),
            "--storage", "local", "--quiet", "--json"]
    cmd = [str(RTPHELPER), *args]
    if profile is not None:
        cmd = [sys.executable, str(BENCH / "profile_threads.py"), str(profile), "--", *args]
    env = {**os.environ, "PYTHONPATH": str(tree or ROOT)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)


def start_ref(binary: Path, port: int, dport: int, seconds: float, out: Path) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(binary), f"rpcap://127.0.0.1:{port}/lo", f"udp port {dport}", str(out / "ref.pcap"),
                             str(int(seconds)), str(READ_TIMEOUT_MS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def wait_ready(client: str, proc: subprocess.Popen, out: Path) -> None:
    """Ours: its first chunk exists (opened right after STARTCAP); reference: it printed "ready"."""
    deadline = time.monotonic() + 20
    if client == "ref":
        line = proc.stderr.readline().decode(errors="replace").strip()
        if line != "ready":
            raise RuntimeError(f"reference client: {line or 'exited'} {proc.stderr.read().decode(errors='replace')}")
        return
    while not any((out / "raw").glob("*.pcap")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"rtphelper capture did not start: {proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.01)


def run_once(client: str, pps: int, seconds: float, tools: tuple[Path, Path], rpcapd_bin: Path,
             profile: Path | None = None, before: Path | None = None) -> Run:
    load, ref = tools
    out = OUT / "runs" / f"{client}-{pps}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    daemon = Rpcapd(rpcapd_bin, out / "rpcapd.log")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a bound port: no ICMP unreachable per datagram
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink.bind(("127.0.0.1", 0))
    dport = sink.getsockname()[1]
    try:
        daemon_before = daemon.cpu()
        duration = seconds + SPARE
        if client == "ref":
            proc = start_ref(ref, daemon.port, dport, duration, out)
        else:
            proc = start_ours(daemon.port, dport, duration, out, profile, before if client == "before" else None)
        wait_ready(client, proc, out)
        time.sleep(LEAD_IN)
        cpu_ready = proc_cpu(proc.pid)
        softnet_before = softnet_dropped()
        sender = subprocess.Popen([str(load), str(dport), str(pps), f"{seconds:g}", str(PAYLOAD)],
                                  stdout=subprocess.PIPE)
        sender_cpu = sum(wait_rusage(sender, seconds + 30))
        sent = json.loads(sender.stdout.read())
        time.sleep(DRAIN)
        cpu_loaded = proc_cpu(proc.pid)
        softnet = softnet_dropped() - softnet_before
        cpu_user, cpu_sys = wait_rusage(proc, duration + 60)
        stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"{client} exited {proc.returncode}: {stderr.strip()[-500:]}")
        time.sleep(0.2)  # rpcapd reaps the session child
        rpcapd_cpu = daemon.cpu() - daemon_before
    finally:
        sink.close()
        daemon.stop()
    doc = json.loads(stdout.strip().splitlines()[-1])
    if client != "ref":
        host = doc["hosts"][0]
        files = [out / "raw" / Path(f).name for f in host["files"]]
        stats = {"packets": host["packets"], **host["drops"]}
    else:
        files = [out / "ref.pcap"]
        stats = doc
    records, distinct, first_missing = counters_written(files)
    for f in files:
        f.unlink()
    return Run(client, pps, sent["sent"], sent["failed"], sent["elapsed"], records, distinct, first_missing,
               cpu_user, cpu_sys, cpu_ready, cpu_loaded - cpu_ready, rpcapd_cpu, sender_cpu, softnet, stats)


# -- report ---------------------------------------------------------------------------------------


def best(runs: list[Run]) -> Run:
    """Fewest lost, then least CPU under load."""
    return min(runs, key=lambda r: (r.loss, r.cpu_load))


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "?")
    version = (RPCAPD_SRC / "VERSION").read_text().strip() if (RPCAPD_SRC / "VERSION").exists() else "?"
    return (f"{os.cpu_count()} cores, {cpu}; kernel {platform.release()}; Python {platform.python_version()}; "
            f"rpcapd and the reference client from Debian's libpcap {version} source (--enable-remote)")


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(results: dict[int, dict[str, list[Run]]], args: argparse.Namespace, profile: list[str]) -> str:
    top = max(results)
    lines = [
        BEGIN,
        "## Capture (`make bench`, bench/capture_bench.py)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}. Load: bench/udp_load.c, "
        f"{PAYLOAD}-byte UDP payloads with a counter to 127.0.0.1 for {args.seconds:g} s; captured on `lo` through a "
        f"fresh rpcapd (`-n`) per run, filter `udp port X`, read timeout {READ_TIMEOUT_MS} ms for both clients. "
        f"Ours: `rtphelper capture --address 127.0.0.1 --interface lo` (subprocess). Reference: bench/rpcap_ref.c, "
        "`pcap_open(\"rpcap://…\", PCAP_OPENFLAG_NOCAPTURE_RPCAP)` + `pcap_dump`, linked against the same "
        f"libpcap.a as rpcapd. Best of {args.repeat} per client and rate (fewest lost, then least CPU), clients "
        "alternating; written = distinct counters read back from the files. The machine was shared with other work.",
        "",
        "| rate (pps) | achieved send rate | ours: written | loss % | CPU s (load / total) | "
        "ref: written | loss % | CPU s (load / total) | CPU ratio ours/ref (load / total) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pps in sorted(results):
        o, r = best(results[pps]["ours"]), best(results[pps]["ref"])
        lines.append(
            f"| {pps:,} | {o.achieved:,.0f} / {r.achieved:,.0f} | {o.distinct:,} of {o.sent:,} | {o.loss_pct:.3f} | "
            f"{o.cpu_load:.2f} / {o.cpu_total:.2f} | {r.distinct:,} of {r.sent:,} | {r.loss_pct:.3f} | "
            f"{r.cpu_load:.2f} / {r.cpu_total:.2f} | {o.cpu_load / max(r.cpu_load, 1e-9):.2f}× / "
            f"{o.cpu_total / max(r.cpu_total, 1e-9):.2f}× |")
    o, r = best(results[top]["ours"]), best(results[top]["ref"])
    ratio_load, ratio_total = o.cpu_load / max(r.cpu_load, 1e-9), o.cpu_total / max(r.cpu_total, 1e-9)
    lines += [
        "",
        f"Targets at {top:,} pps: loss {o.loss_pct:.3f} % (target {TARGET_LOSS:g} %): "
        f"{verdict(o.loss_pct <= TARGET_LOSS)}; CPU ours/ref under load {ratio_load:.2f}× and whole process "
        f"{ratio_total:.2f}× (target ≤ {TARGET_CPU_RATIO}×): {verdict(ratio_load <= TARGET_CPU_RATIO)} / "
        f"{verdict(ratio_total <= TARGET_CPU_RATIO)}.",
        "",
        f"CPU \"load\" = the client's user+sys from the start of the load to {DRAIN:g} s after it ended "
        "(/proc/PID/stat); \"total\" = the whole process (wait4), including start-up: ours spends "
        f"{o.cpu_startup:.2f} s of it importing and connecting before the first packet, the reference "
        f"{r.cpu_startup:.2f} s.",
        *before_table(results, args),
        "",
        "Every run (client pps: written/sent, loss, CPU load/total s (user+sys), rpcapd CPU s, sender CPU s, "
        "kernel backlog drops, client-side stats):",
        "",
    ]
    for pps in sorted(results):
        for name in results[pps]:
            for x in results[pps][name]:
                lines.append(
                    f"- {name} {pps:,}: {x.distinct:,}/{x.sent:,} ({x.records - x.distinct} duplicates, "
                    f"{x.send_failed} send failures, first missing "
                    f"{'none' if x.loss == 0 else x.first_missing}), loss {x.loss_pct:.3f} %, CPU "
                    f"{x.cpu_load:.2f}/{x.cpu_total:.2f} ({x.cpu_user:.2f}+{x.cpu_sys:.2f}), rpcapd {x.rpcapd_cpu:.2f}, sender {x.sender_cpu:.2f}, "
                    f"backlog drops {x.softnet_drops}, stats {json.dumps(x.stats)}")
    if profile:
        lines += ["", *profile]
    lines += ["", END, ""]
    return "\n".join(lines)


def before_table(results: dict[int, dict[str, list[Run]]], args: argparse.Namespace) -> list[str]:
    """Ours against the "before" tree, both measured in this run (clients interleaved): the after/before ratio."""
    if not any("before" in by_client for by_client in results.values()):
        return []
    lines = ["", f"A/B in the same run: \"before\" = `rtphelper capture` from {args.before} "
             f"({tree_commit(args.before)}), \"after\" = this tree ({tree_commit(ROOT)}); best of {args.repeat}, "
             "all three clients alternating.", "",
             "| rate (pps) | after: loss % | CPU s load (user+sys) | before: loss % | CPU s load (user+sys) | "
             "after/before (load / total) | after/ref load |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for pps in sorted(results):
        a, b, r = best(results[pps]["ours"]), best(results[pps]["before"]), best(results[pps]["ref"])
        lines.append(f"| {pps:,} | {a.loss_pct:.3f} | {a.cpu_load:.2f} ({a.cpu_user:.2f}+{a.cpu_sys:.2f} whole) | "
                     f"{b.loss_pct:.3f} | {b.cpu_load:.2f} ({b.cpu_user:.2f}+{b.cpu_sys:.2f} whole) | "
                     f"{a.cpu_load / max(b.cpu_load, 1e-9):.2f}× / {a.cpu_total / max(b.cpu_total, 1e-9):.2f}× | "
                     f"{a.cpu_load / max(r.cpu_load, 1e-9):.2f}× |")
    return lines


def tree_commit(tree: Path) -> str:
    """Short commit of a git tree (with "+changes" when its work tree differs), for the record."""
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git tree"
    return head + ("+changes" if dirty else "")


def write_section(text: str) -> None:
    """Replace the capture section of RESULTS.md (or append it); everything else stays as it is."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old)
    else:
        new = old.rstrip("\n") + "\n\n" + text if old else text
    RESULTS.write_text(new)


def capture_section(text: str) -> str:
    """The capture section of an existing RESULTS.md ("" when none): run.py keeps it when it rewrites the file."""
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", text, re.S)
    return match.group(0) if match else ""


def profile_ours(pps: int, seconds: float, tools: tuple[Path, Path], rpcapd_bin: Path) -> list[str]:
    """One extra run of ours under cProfile (every thread), and where its time goes."""
    prof = OUT / "ours.prof"
    run = run_once("ours", pps, seconds, tools, rpcapd_bin, profile=prof)
    stats = pstats.Stats(str(prof))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]  # type: ignore[attr-defined]
    lines = [f"Profile of ours at {pps:,} pps (cProfile on every thread, {run.loss_pct:.3f} % loss under the "
             f"profiler; {total:.2f} s of profiled time): own time per function", "",
             "| function | calls | own s | % |", "|---|---:|---:|---:|"]
    for (file, line, name), (_, ncalls, tottime, _, _) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        lines.append(f"| `{name}` ({where}) | {ncalls:,} | {tottime:.2f} | {100 * tottime / total:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", type=int, nargs="+", default=list(RATES), metavar="PPS")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=2, help="runs per client and rate (best is kept)")
    p.add_argument("--profile", action="store_true", help="add a cProfile run of ours at the top rate")
    p.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    p.add_argument("--before", type=Path, metavar="TREE",
                   help="also run `rtphelper capture` from this source tree (PYTHONPATH), interleaved: after/before")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("capture bench: needs root (rpcapd captures on lo)", file=sys.stderr)
        return 2
    try:
        rpcapd_bin = rpcapd_binary()
        tools = build_tools()
        compile_bytecode(ROOT, *([Path(args.before)] if args.before else []))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"capture bench: {exc}", file=sys.stderr)
        return 2
    print(f"capture bench: {machine()}", flush=True)
    results: dict[int, dict[str, list[Run]]] = {}
    for pps in args.rates:
        clients = ["ours", "ref", *(["before"] if args.before else [])]
        results[pps] = {name: [] for name in clients}
        for i in range(args.repeat):
            for client in clients[i % len(clients):] + clients[:i % len(clients)]:
                r = run_once(client, pps, args.seconds, tools, rpcapd_bin, before=args.before)
                results[pps][client].append(r)
                print(f"  {client:>6} {pps:>7} pps: sent {r.sent:>9,} ({r.achieved:,.0f}/s) written {r.distinct:>9,} "
                      f"loss {r.loss_pct:6.3f} %  CPU load {r.cpu_load:5.2f} s total {r.cpu_total:5.2f} s "
                      f"({r.cpu_user:.2f}+{r.cpu_sys:.2f})  "
                      f"rpcapd {r.rpcapd_cpu:5.2f} s  backlog drops {r.softnet_drops}  {json.dumps(r.stats)}",
                      flush=True)
    profile: list[str] = []
    top = max(results)
    o, r = best(results[top]["ours"]), best(results[top]["ref"])
    if args.profile or o.cpu_load > TARGET_CPU_RATIO * r.cpu_load:
        profile = profile_ours(top, args.seconds, tools, rpcapd_bin)
    text = render(results, args, profile)
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote the capture section of {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
