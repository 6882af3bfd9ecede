#!/usr/bin/env python3
"""Load test of the capture engine on lo: a sender process at N pps of 200-byte UDP payloads vs what got written.

Usage (root, rpcapd built by scripts/build-rpcapd.sh):
    .venv/bin/python bench/capture_load.py --pps 20000 50000 100000 --seconds 10
Prints one line per rate: sent, written, loss %, drops (client/server/interface), CPU of this process
(capture threads) and of rpcapd, in seconds and as % of one core.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing import Process, Queue
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rtpcore.capture.engine import CaptureSession, CaptureTarget  # noqa: E402
from rtpcore.capture.manifest import MANIFEST_NAME, Manifest  # noqa: E402

PAYLOAD = 200
TICK = 0.001  # the sender paces itself in 1 ms slices


def sender(port: int, pps: int, seconds: float, result: Queue) -> None:
    """Send pps datagrams per second for `seconds`, paced per millisecond; report how many left the socket."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    dest = ("127.0.0.1", port)
    body = b"x" * (PAYLOAD - 8)
    sent = failed = 0
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        due = int((now - start) * pps) - sent - failed
        for _ in range(due):
            try:
                tx.sendto(sent.to_bytes(8, "big") + body, dest)
                sent += 1
            except OSError:
                failed += 1
        time.sleep(TICK)
    result.put({"sent": sent, "failed": failed, "elapsed": time.perf_counter() - start})


def process_group_cpu(pgid: int) -> float:
    """utime+stime seconds of every process in a process group (rpcapd and its per-client child)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "comm)": state ppid pgrp ...; utime/stime are 14/15 overall
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def softnet_dropped() -> int:
    """Packets the kernel dropped before any tap saw them (per-CPU backlog full): lost upstream of capture."""
    try:
        rows = Path("/proc/net/softnet_stat").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(row.split()[1], 16) for row in rows)


def start_rpcapd() -> tuple[subprocess.Popen[bytes], int]:
    binary = REPO / ".cache" / "rpcapd" / "rpcapd"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(binary), "-b", "127.0.0.1", "-p", str(port), "-4", "-n"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(250):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("rpcapd did not start")


def run_rate(pps: int, seconds: float) -> dict[str, object]:
    daemon, port = start_rpcapd()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    dport = rx.getsockname()[1]
    out = Path(tempfile.mkdtemp(prefix=f"capload-{pps}-"))
    target = CaptureTarget("bench", "bench", "bench", "127.0.0.1", port, "lo", "bench-lo")
    session = CaptureSession([target], out, duration=seconds + 30,
                             filter_expression=f"udp and dst port {dport}")
    try:
        session.start()
        while not any(session.raw.glob("*.pcap")):
            time.sleep(0.01)
        time.sleep(0.3)
        before = resource.getrusage(resource.RUSAGE_SELF)
        daemon_before = process_group_cpu(daemon.pid)
        softnet_before = softnet_dropped()
        wall = time.perf_counter()
        results: Queue = Queue()
        proc = Process(target=sender, args=(dport, pps, seconds, results))
        proc.start()
        sent = results.get()
        proc.join()
        # let the backlog drain: stop once no new packet arrived for 1 s
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 1.0:
            now = session.progress()[0].packets
            if now != last:
                last, quiet_since = now, time.monotonic()
            time.sleep(0.1)
        daemon_cpu = process_group_cpu(daemon.pid) - daemon_before  # before stop: its session child exits then
        softnet = softnet_dropped() - softnet_before
        session.stop()
        summary = session.wait()
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        rx.close()
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
    host = summary.hosts[0]
    chunks = Manifest.read(out / MANIFEST_NAME).chunks
    written = sum(c.packets for c in chunks)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for c in chunks:
        (out / "raw" / c.name).unlink()
    return {
        "pps": pps, "seconds": seconds, "sent": sent["sent"], "send_failed": sent["failed"],
        "sender_elapsed": round(sent["elapsed"], 2), "written": written, "summary_packets": host.packets,
        "loss_pct": round(100 * (sent["sent"] - written) / max(1, sent["sent"]), 3),
        "drops": host.drops.to_json(), "kernel_backlog_drops": softnet, "error": host.error,
        "capture_cpu_s": round(cpu, 2), "capture_cpu_pct_of_core": round(100 * cpu / wall, 1),
        "rpcapd_cpu_s": round(daemon_cpu, 2), "wall_s": round(wall, 2), "max_rss_mb": after.ru_maxrss // 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pps", type=int, nargs="+", default=[20000, 50000, 100000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for pps in args.pps:
        r = run_rate(pps, args.seconds)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            d = r["drops"]
            print(f"{pps:>7} pps: sent {r['sent']:>8} written {r['written']:>8} loss {r['loss_pct']:>6}% "
                  f"drops c/s/i {d['client']}/{d['server']}/{d['interface']} backlog {r['kernel_backlog_drops']}  "
                  f"capture CPU {r['capture_cpu_s']} s "
                  f"({r['capture_cpu_pct_of_core']}% of a core)  rpcapd CPU {r['rpcapd_cpu_s']} s  "
                  f"sender took {r['sender_elapsed']} s  rss {r['max_rss_mb']} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
