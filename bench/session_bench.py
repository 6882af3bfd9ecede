"""Issue 12: correlation cost follows the call, not the capture — generated sessions of 1, 4 and 16 GiB.

Each session: 4 media hosts, rolling 500 MB chunks with their sidecar indexes (bench/session_gen.py), one
3-minute call in the middle on host 1, background RTP everywhere else. Measured in one run, per size:
- ours, local: `rtpcore.pipeline.correlate` (selective), best of --repeat, bytes read and chunks per host;
- the anchor: one `tcpdump -r` pass over every chunk with the legs' BPF (bench/tcpdump_anchor.sh: reads all);
- ours from S3 (moto_server, sessions uploaded with their sidecars): time and bytes fetched;
- at the smallest size: a full scan (RTPHELPER_MEDIA_SELECT=false) whose outputs must be byte-identical;
- flow summaries (RTPHELPER_FLOW_SUMMARY): call 1's first correlation building them vs by time only (A/B,
  alternating), then a second call (host 2, same time, other ports) with the summaries cached: bytes read per
  host that carried it vs the others, against the same call by time only; its outputs must be identical.
The main table is by time only (RTPHELPER_FLOW_SUMMARY=false), as before summaries existed.
Sessions are deleted after their size is done (16 GiB needs ~33 GB of disk with moto's copy).

    .venv/bin/python bench/session_bench.py [--sizes 1 4 16] [--skip-16] [--no-s3] [--s3-sizes 1 4] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import session_gen  # noqa: E402  (puts the checkout on sys.path too)
from session_gen import CALL_SECONDS, CHUNK_BYTES, HOSTS  # noqa: E402

from rtpcore.media.bpf import leg_filter  # noqa: E402
from rtpcore.pcap.index import INDEX_SUFFIX  # noqa: E402
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET  # noqa: E402
from rtpcore.pipeline import correlate  # noqa: E402
from rtpcore.report import CorrelationReport  # noqa: E402
from rtpcore.settings import load_settings  # noqa: E402
from rtpcore.sip.legs import resolve_legs  # noqa: E402
from rtpcore.storage.download import RANGES_DIR  # noqa: E402

GIB = 2**30
WORK = BENCH / "out" / "sessions"
RESULTS = BENCH / "RESULTS.md"
SECTION = "session"
TARGET_SCALE = 1.2         # time at 16 GiB ≤ 1.2 × time at 1 GiB
TARGET_ANCHOR = 0.1        # ours ≤ 0.1 × one tcpdump pass at 16 GiB
TARGET_CHUNKS = 2          # bytes read ≤ 2 chunks per host that carried the call
BUCKET = "session-bench"
S3_PREFIX = "captures/bench/issue-12"


@dataclass(slots=True)
class SizeResult:
    gib: float
    chunks: int
    seconds_captured: float
    gen_s: float
    ours_s: float
    bytes_read: int
    bytes_total: int
    read_per_host: dict[str, int]
    tcpdump_s: float
    identical: bool | None = None
    full_s: float | None = None
    s3: dict[str, float] = field(default_factory=dict)
    flows: dict[str, object] = field(default_factory=dict)


def _timed(fn, repeat: int) -> tuple[float, object]:  # noqa: ANN001
    best, value = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - began)
    return best, value


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("combined", "decrypted")
            for p in sorted((out / sub).glob("*.pcap"))}


def _per_host(report: CorrelationReport) -> dict[str, int]:
    """Chunks read per host (the chunk name's stem)."""
    media = report.to_json()["media_read"]
    hosts: dict[str, int] = {}
    for f in media["files"]:
        if f["how"] != "skipped":
            host = Path(f["source"]).name.rsplit("-", 1)[0]
            hosts[host] = hosts.get(host, 0) + 1
    return hosts


def _moto(tmp: Path):  # noqa: ANN202 - tests.storage.conftest.MotoServer
    from tests.storage.conftest import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, free_port

    server = MotoServer(free_port(), tmp / "moto.log")
    server.start()
    server.create_bucket(BUCKET)
    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                       "RTPHELPER_S3_ENDPOINT": server.endpoint, "RTPHELPER_S3_REGION": REGION,
                       "RTPHELPER_S3_PATH": f"{BUCKET}/captures", "RTPHELPER_STORAGE_MODE": "s3"})
    return server


def _rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def _s3_run(session: session_gen.Session, repeat: int, log) -> dict[str, float]:  # noqa: ANN001
    """Upload the session (chunks + sidecars) to a fresh moto_server, correlate from s3://, measure."""
    tmp = session.root.parent / f"moto-{session.root.name}"
    tmp.mkdir(exist_ok=True)
    server = _moto(tmp)
    try:
        client = server.client()
        began = time.perf_counter()
        for chunk in session.chunks:
            for path in (chunk, chunk.with_name(chunk.name + INDEX_SUFFIX)):
                with open(path, "rb") as body:
                    client.put_object(Bucket=BUCKET, Key=f"{S3_PREFIX}/{session.root.name}/raw/{path.name}", Body=body)
        upload_s = time.perf_counter() - began
        rss = _rss_mib(server.proc.pid)
        url = f"s3://{BUCKET}/{S3_PREFIX}/{session.root.name}/"
        out = session.root.parent / f"out-s3-{session.root.name}"
        settings = load_settings().model_copy(update={"flow_summary": False})   # by time, as the main table

        def run() -> CorrelationReport:
            shutil.rmtree(out, ignore_errors=True)
            return correlate(session.sip, "inbound", [url], out, settings=settings, overwrite=True)

        seconds, report = _timed(run, repeat)
        fetched = sum(p.stat().st_size for sub in ("raw", RANGES_DIR) for p in (out / sub).glob("*.pcap"))
        log(f"  S3: upload {upload_s:.1f} s (moto RSS {rss:.0f} MiB), correlate {seconds:.2f} s, "
            f"fetched {fetched / 2**20:.1f} MiB")
        shutil.rmtree(out, ignore_errors=True)
        return {"seconds": seconds, "fetched": fetched, "upload_s": upload_s, "moto_rss_mib": rss}
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _generate(gib: float, log=print) -> tuple[session_gen.Session, float]:  # noqa: ANN001
    root = WORK / f"{gib:g}gib"
    shutil.rmtree(root, ignore_errors=True)
    began = time.perf_counter()
    session = session_gen.generate(root, int(gib * GIB), second_call=True, log=log)
    return session, time.perf_counter() - began


def _ours(session: session_gen.Session, out: Path, *, select: bool = True, flows: bool = False,
          sip: Path | None = None) -> CorrelationReport:
    settings = load_settings({}).model_copy(update={"media_select": select, "flow_summary": flows})
    return correlate(sip or session.sip, "inbound", [session.root / "raw"], out, settings=settings, overwrite=True)


def _host_bytes(report: CorrelationReport) -> dict[str, int]:
    """Bytes read per host (the chunk name's stem), every host listed."""
    out: dict[str, int] = {}
    for f in report.to_json()["media_read"]["files"]:
        host = Path(f["source"]).name.rsplit("-", 1)[0]
        out[host] = out.get(host, 0) + f["bytes_read"]
    return out


def flow_runs(session: session_gen.Session, repeat: int, log=print) -> dict[str, object]:  # noqa: ANN001
    """Call 1 building the summaries vs by time (alternating, best of repeat); then call 2 with them cached vs by
    time; outputs of call 2 compared with its by-time run (itself identical to a full scan, test_select)."""
    raw = session.root / "raw"
    work = session.root.parent
    assert session.sip2 is not None

    def forget() -> None:
        for p in raw.glob("*.flows.json"):
            p.unlink()

    first = by_time = float("inf")
    for _ in range(repeat):
        forget()
        began = time.perf_counter()
        _ours(session, work / "out-flows-first", flows=True)
        first = min(first, time.perf_counter() - began)
        began = time.perf_counter()
        _ours(session, work / "out-flows-bytime", flows=False)
        by_time = min(by_time, time.perf_counter() - began)
    second_s = second_time_s = float("inf")
    cached = timed = None
    after_call1 = {p: p.read_bytes() for p in raw.glob("*.flows.json")}
    for _ in range(repeat):
        began = time.perf_counter()
        timed = _ours(session, work / "out-call2-bytime", flows=False, sip=session.sip2)
        second_time_s = min(second_time_s, time.perf_counter() - began)
        forget()   # every repeat sees call 1's summaries only, not the ones call 2 extended
        for path, data in after_call1.items():
            path.write_bytes(data)
        began = time.perf_counter()
        cached = _ours(session, work / "out-call2-cached", flows=True, sip=session.sip2)
        second_s = min(second_s, time.perf_counter() - began)
    assert cached is not None and timed is not None
    identical = _outputs(work / "out-call2-cached") == _outputs(work / "out-call2-bytime")
    for name in ("out-flows-first", "out-flows-bytime", "out-call2-bytime", "out-call2-cached"):
        shutil.rmtree(work / name, ignore_errors=True)
    result = {"first_s": first, "by_time_s": by_time, "second_s": second_s, "second_by_time_s": second_time_s,
              "cached": _host_bytes(cached), "by_time": _host_bytes(timed), "identical": identical,
              "carrier": session.call2_host, "summary_bytes": sum(p.stat().st_size for p in raw.glob("*.flows.json"))}
    log(f"  flow summaries: call 1 first correlation {first:.2f} s vs by time {by_time:.2f} s "
        f"({first / by_time:.2f}×); call 2 cached {second_s:.2f} s vs by time {second_time_s:.2f} s; "
        f"bytes per host cached {result['cached']} by time {result['by_time']}; identical {identical}")
    forget()
    return result


def measure(sizes: list[float], *, repeat: int, s3_sizes: set[float], flows: bool = True,
            log=print) -> list[SizeResult]:  # noqa: ANN001
    """All sessions generated first, ours timed round-robin across the sizes (so the other engineers' load hits
    every size alike), then the tcpdump anchor and the S3 runs per size; sessions deleted at the end."""
    made = [_generate(gib, log) for gib in sizes]
    try:
        best = [float("inf")] * len(sizes)
        reports: list[CorrelationReport | None] = [None] * len(sizes)
        for _ in range(repeat):
            for i, (session, _) in enumerate(made):
                began = time.perf_counter()
                reports[i] = _ours(session, session.root.parent / f"out-{sizes[i]:g}gib")
                best[i] = min(best[i], time.perf_counter() - began)
        results = []
        for i, (gib, (session, gen_s)) in enumerate(zip(sizes, made)):
            report = reports[i]
            assert report is not None
            media = report.to_json()["media_read"]
            r = SizeResult(gib, len(session.chunks), session.seconds, gen_s, best[i], media["bytes_read"],
                           media["bytes_total"], _per_host(report), 0.0)
            log(f"{gib:g} GiB: ours {r.ours_s:.2f} s, read {r.bytes_read / 2**20:.0f} of {r.bytes_total / 2**20:.0f} "
                f"MiB, chunks per host {r.read_per_host}; legs {[leg['packets'] for leg in report.to_json()['legs']]}")
            out = session.root.parent / f"out-{gib:g}gib"
            if i == 0:
                full_out = session.root.parent / f"out-full-{gib:g}gib"
                began = time.perf_counter()
                _ours(session, full_out, select=False)
                r.full_s = time.perf_counter() - began
                r.identical = _outputs(out) == _outputs(full_out)
                log(f"  full scan: {r.full_s:.2f} s, outputs identical: {r.identical}")
                shutil.rmtree(full_out, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            plan = resolve_legs(session.sip, "inbound")
            bpf = session.root.parent / "legs.bpf"
            bpf.write_text(leg_filter(plan, LINKTYPE_ETHERNET) + "\n")
            anchor_out = session.root.parent / f"tcpdump-{gib:g}gib"
            cmd = ["bash", str(BENCH / "tcpdump_anchor.sh"), str(anchor_out), str(bpf), *map(str, session.chunks)]
            r.tcpdump_s, _ = _timed(lambda: subprocess.run(cmd, check=True), 1)
            log(f"  tcpdump -r over {len(session.chunks)} chunks: {r.tcpdump_s:.2f} s")
            shutil.rmtree(anchor_out, ignore_errors=True)
            results.append(r)
        for r, (session, _) in zip(results, made):
            if flows:
                r.flows = flow_runs(session, repeat, log)
            if r.gib in s3_sizes:
                r.s3 = _s3_run(session, repeat, log)
            shutil.rmtree(session.root, ignore_errors=True)
        return results
    finally:
        for session, _ in made:
            shutil.rmtree(session.root, ignore_errors=True)


def _hosts_text(per_host: dict[str, int]) -> str:
    """"media-1: 2, media-2: 1, …" from the chunk stems."""
    return ", ".join(f"{'-'.join(host.split('-')[-2:])}: {n}" for host, n in sorted(per_host.items()))


SUMMARY_RECORDS = 500_000


def summary_cost(repeat: int = 3) -> dict[str, float]:
    """CPU s per 1M records of the rolling writer as the capture runs it (with the index), and the extra cost of a
    per-flow summary (address:port pair → packets, first, last) kept in the same per-record loop."""
    from rtpcore.pcap.build import build_udp, frame
    from rtpcore.pcap.rolling import RollingPcapWriter

    frames = [frame(LINKTYPE_ETHERNET, build_udp(f"10.0.{i % 7}.{i % 50 + 1}", 10000 + 2 * i, "10.1.0.1",
                                                 20000 + 2 * i, bytes(172))) for i in range(200)]
    records = [(1_700_000_000 * 10**9 + i * 10_000, frames[i % 200], 214) for i in range(SUMMARY_RECORDS)]
    batches = [records[i:i + 2000] for i in range(0, SUMMARY_RECORDS, 2000)]
    folder = WORK / "summary-cost"

    def writer(flows: bool) -> float:
        shutil.rmtree(folder, ignore_errors=True)
        summary: dict[bytes, list[int]] = {}
        began = time.process_time()
        with RollingPcapWriter(folder, "cost", LINKTYPE_ETHERNET) as w:
            for batch in batches:
                w.write_many(batch)
                if flows:  # what the writer's loop would add per record (Ethernet/IPv4 without options only)
                    for ts, data, _ in batch:
                        if data[12:14] == b"\x08\x00" and data[14] == 0x45:
                            entry = summary.get(key := data[26:38])
                            if entry is None:
                                summary[key] = [1, ts, ts]
                            else:
                                entry[0] += 1
                                entry[2] = ts
        return (time.process_time() - began) * 10**6 / SUMMARY_RECORDS

    plain = min(writer(False) for _ in range(repeat))
    with_flows = min(writer(True) for _ in range(repeat))
    shutil.rmtree(folder, ignore_errors=True)
    return {"writer_s_per_m": plain, "summary_s_per_m": with_flows - plain}


def render(results: list[SizeResult], argv: list[str], capture_note: str, cost: dict[str, float]) -> str:
    """The markdown section for bench/RESULTS.md."""
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    small = results[0]
    lines = [f"<!-- {SECTION}:begin -->", "## Sessions of 1/4/16 GiB: read only what the call touched "
             "(issue 12, `bench/session_bench.py`)", "",
             f"Run {when} on {os.cpu_count()} cores, Python {platform.python_version()}, `{_shown_argv(argv)}`."
             f" The machine was shared with other engineers' work the whole time (load average {os.getloadavg()[0]:.1f}"
             " when the run ended), so every ratio below compares numbers measured in this one run.",
             f"Sessions: {HOSTS} hosts, rolling {CHUNK_BYTES // 10**6} MB chunks with their sidecar indexes, background"
             f" RTP at ≈ 0.69 MB/s per host, one {CALL_SECONDS:.0f}-s call (carrier leg SRTP) in the middle on host 1."
             " Ours = `rtpcore.pipeline.correlate` in-process (select + filter + decrypt + combine), best of the"
             " repeats, timed round-robin across the sizes; anchor = one `tcpdump -r` pass over every chunk with the legs' BPF, then mergecap.", "",
             "| size | chunks | captured | ours local s | read MiB (of) | chunks read per host | tcpdump s | "
             "ours/tcpdump | ours/ours@1GiB | S3 s | S3 fetched MiB | moto RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s3 = r.s3
        lines.append(
            f"| {r.gib:g} GiB | {r.chunks} | {r.seconds_captured / 60:.0f} min | {r.ours_s:.2f} | "
            f"{r.bytes_read / 2**20:.0f} ({r.bytes_total / 2**20:.0f}) | "
            f"{_hosts_text(r.read_per_host)} | "
            f"{r.tcpdump_s:.2f} | {r.ours_s / r.tcpdump_s:.3f} | {r.ours_s / small.ours_s:.2f} | "
            f"{s3.get('seconds', float('nan')):.2f} | {s3.get('fetched', float('nan')) / 2**20:.1f} | "
            f"{s3.get('moto_rss_mib', float('nan')):.0f} |")
    big = results[-1]
    carrying_bound = TARGET_CHUNKS * CHUNK_BYTES
    lines += ["", "Targets:"]
    lines.append(f"- time at {big.gib:g} GiB / at {small.gib:g} GiB: {big.ours_s / small.ours_s:.2f}× "
                 f"(target ≤ {TARGET_SCALE}×): {'met' if big.ours_s / small.ours_s <= TARGET_SCALE else 'missed'}")
    lines.append(f"- ours / tcpdump pass at {big.gib:g} GiB local: {big.ours_s / big.tcpdump_s:.3f}× "
                 f"(target ≤ {TARGET_ANCHOR}×): {'met' if big.ours_s / big.tcpdump_s <= TARGET_ANCHOR else 'missed'}")
    worst = max(max(r.bytes_read, r.s3.get("fetched", 0)) for r in results)
    lines.append(f"- bytes read/fetched ≤ {TARGET_CHUNKS} chunks per host that carried the call (1 host: "
                 f"{carrying_bound / 2**20:.0f} MiB): worst {worst / 2**20:.0f} MiB: "
                 f"{'met' if worst <= carrying_bound else 'missed'} — this table selects by time only, so the other 3"
                 " hosts' ranges in the call's time are read too (all 4 together stay under the bound); with flow"
                 " summaries cached a call reads ~2 MiB of the hosts that did not carry it (below)")
    if small.identical is not None:
        lines.append(f"- outputs identical to a full scan at {small.gib:g} GiB: {small.identical} (full scan "
                     f"{small.full_s:.2f} s); tests/rtpcore/test_select.py checks it on a 40 MB session every run")
    lines += ["", "Notes: a session whose call straddles two chunks per host (here 4 GiB) costs more than one that does"
              " not (more files to open, filter and merge for the same bytes). moto_server answers every ranged GET"
              " by reading the whole object (moto.s3.responses._handle_range_header), so its S3 times grow with the"
              " chunk size and count read, not the bytes fetched; it spools objects to disk (RSS column), so S3 ran at"
              " every size. Fetched = bytes written locally from S3 (the chunks' headers + ranges)."]
    lines += _flow_lines(results)
    lines += ["", f"Per-flow summary in the capture path (issue 12 point 1), measured here: the rolling writer with its"
              f" index costs {cost['writer_s_per_m']:.2f} CPU s per 1M records; keeping a per-flow summary in the same"
              f" loop adds {cost['summary_s_per_m']:.2f} s per 1M records, i.e. +{cost['summary_s_per_m'] / 3.0:.0%} of"
              " our whole capture client's 3.0 CPU s per 1M packets at 100k pps (RESULTS.md capture section), whose"
              " margin to the libpcap client was 0.89-0.99×: not kept at capture time; built lazily instead (below).", "",
              capture_note, "", f"<!-- {SECTION}:end -->"]
    return "\n".join(lines)


def _shown_argv(argv: list[str]) -> str:
    """The command line with the (long) capture note shortened."""
    out, skip = [], False
    for arg in argv:
        out.append("…" if skip else arg)
        skip = arg == "--capture-note"
    return " ".join(out) or "(defaults)"


def _flow_lines(results: list[SizeResult]) -> list[str]:
    """The flow-summary table: call 1's first correlation building them, call 2 with them cached."""
    rows = [r for r in results if r.flows]
    if not rows:
        return []
    out = ["", "Flow summaries built lazily (RTPHELPER_FLOW_SUMMARY=true; off by default since this run showed the first correlation's cost): call 1's first correlation"
           " summarizes the bytes it reads (`<chunk>.flows.json`); a second call at the same time on host 2"
           " (other ports) then skips what the summaries rule out. Ratios against by-time runs of the same call in"
           " the same run (alternating, best of the repeats; each second-call repeat starts from call 1's summaries).",
           "", "| size | call 1 first s | by time s | first/by time | second call, summaries cached: read MiB on the"
           " host that carried it / on the others | same call by time: carried / others | cached s | by time s |"
           " cached/by time | outputs identical | summaries KiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r.flows
        cached, timed, carrier = f["cached"], f["by_time"], f["carrier"]
        assert isinstance(cached, dict) and isinstance(timed, dict)
        own = cached.get(carrier, 0) / 2**20
        others = sum(v for k, v in cached.items() if k != carrier) / 2**20
        own_t = timed.get(carrier, 0) / 2**20
        others_t = sum(v for k, v in timed.items() if k != carrier) / 2**20
        first, by_time = float(f["first_s"]), float(f["by_time_s"])  # type: ignore[arg-type]
        second, second_t = float(f["second_s"]), float(f["second_by_time_s"])  # type: ignore[arg-type]
        out.append(f"| {r.gib:g} GiB | {first:.2f} | {by_time:.2f} | {first / by_time:.2f} | {own:.0f} / {others:.1f}"
                   f" | {own_t:.0f} / {others_t:.0f} | {second:.2f} | {second_t:.2f} | {second / second_t:.2f} |"
                   f" {f['identical']} | {int(f['summary_bytes']) / 1024:.0f} |")  # type: ignore[call-overload]
    return out


def write_section(text: str) -> None:
    """Replace (or append) this benchmark's own section of RESULTS.md."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    pattern = re.compile(rf"<!-- {SECTION}:begin -->.*?<!-- {SECTION}:end -->", re.S)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16], metavar="GIB")
    p.add_argument("--skip-16", action="store_true", help="leave out the 16 GiB session (quick runs)")
    p.add_argument("--no-s3", action="store_true", help="no moto_server runs")
    p.add_argument("--no-flows", action="store_true", help="no flow-summary runs (first call building, second call)")
    p.add_argument("--s3-sizes", type=float, nargs="+", default=[1, 4, 16], metavar="GIB")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--capture-note", default="", help="a line about the capture benchmark run alongside")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    sizes = [s for s in sorted(args.sizes) if not (args.skip_16 and s >= 16)]
    results = measure(sizes, repeat=args.repeat, s3_sizes=set() if args.no_s3 else set(args.s3_sizes),
                      flows=not args.no_flows)
    cost = summary_cost()
    print(f"writer with index {cost['writer_s_per_m']:.2f} CPU s / 1M records; a per-flow summary adds "
          f"{cost['summary_s_per_m']:.2f} s", flush=True)
    text = render(results, argv, args.capture_note, cost)
    print(text)
    if not args.no_write:
        write_section(text)
    ok = results[0].identical is not False and all(r.flows.get("identical", True) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
