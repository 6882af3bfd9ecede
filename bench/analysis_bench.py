"""Call analysis + report (issue 11) against the correlation of the bench data set: does it add ≤ 15 %?

    .venv/bin/python bench/analysis_bench.py [--repeat N] [--no-write]

Data: bench/gen_media.py's data set (2 × 256 MiB, 2,328,119 packets: 400 background streams and the 21,735-packet
inbound call; generated into bench/out/ when missing, as bench/run.py does) and its SIP pcap. Measured in the same
run, best of N, file cache warm, the contenders taking turns in every round so the machine's other load hits all:

- in-process: `run_steps(job, InProcessRunner())` with `CorrelationJob.analysis=False` (the anchor) and as every
  correlation runs (the decrypt pass collects the RTP headers; statistics, MOS, DTMF, RTCP, verdicts,
  combined/analysis.json and the call report: SVGs, report.html/md, WAVs — in another process beside combine);
  and with a runner without `beside`, which runs the same analysis in this process after combine;
- the CLI: `rtphelper correlate` in a subprocess (interpreter start included), its analysis off through
  `rtpcore.cli.main` with `run_steps` given `analysis=False` (the CLI has no switch: it is off only to measure);
- wall seconds, and CPU seconds of the process *and its child processes* (the filter step's 2 worker processes,
  the analysis process): getrusage(RUSAGE_SELF) + getrusage(RUSAGE_CHILDREN);
- then the parts of the analysis on the bench call's decrypted media (each best of N on its own).

The target: (with − without) / without ≤ 15 % of wall time, in-process and CLI. Replaces the table between
the analysis-run markers of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (ROOT, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import gen_media  # noqa: E402

from rtpcore import pipeline  # noqa: E402
from rtpcore.analysis.call import analyze_capture, write_audio  # noqa: E402
from rtpcore.analysis.insight import ANALYSIS_FILE, call_insight  # noqa: E402
from rtpcore.analysis.ladder import build_ladder, ladder_svg  # noqa: E402
from rtpcore.analysis.timeline import timeline_svg  # noqa: E402
from rtpcore.pipeline import CorrelationJob, InProcessRunner, make_job, run_steps  # noqa: E402
from rtpcore.sip.capture import read_sip  # noqa: E402

RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- analysis-run:begin -->", "<!-- analysis-run:end -->"
DIRECTION = "inbound"          # bench/run.py's
TARGET = 0.15
# rtpcore.cli.main, what the rtphelper script runs; argv[1] == "off": every job with its analysis off.
CLI_WRAPPER = """
import dataclasses, sys
import rtpcore.pipeline as p
if sys.argv[1] == "off":
    run = p.run_steps
    p.run_steps = lambda job, runner: run(dataclasses.replace(job, analysis=False), runner)
from rtpcore.cli import main
sys.exit(main(sys.argv[2:]))
"""


def cpu_seconds() -> float:
    """User + system CPU of this process and of its waited-for children (the filter and analysis processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclasses.dataclass
class Runs:
    """One contender's wall and CPU seconds per round, and its last result."""

    walls: list[float] = dataclasses.field(default_factory=list)
    cpus: list[float] = dataclasses.field(default_factory=list)
    last: object = None

    @property
    def wall(self) -> float:
        return min(self.walls)

    @property
    def cpu(self) -> float:
        return min(self.cpus)


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, Runs]:
    """Every fn once per round, in turn, repeat rounds: best wall and best CPU of each."""
    runs = {name: Runs() for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            c0, t0 = cpu_seconds(), time.perf_counter()
            runs[name].last = fn()
            runs[name].walls.append(time.perf_counter() - t0)
            runs[name].cpus.append(cpu_seconds() - c0)
    return runs


def best(fn: Callable[[], object], repeat: int) -> tuple[float, Any]:
    """Best wall time of fn over repeat runs, and its last result."""
    times = []
    result: object = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


class InOrder:
    """InProcessRunner without `beside`: the analysis after combine in this process, as before (and as a flow's)."""

    def __init__(self) -> None:
        self._runner = InProcessRunner()

    def run(self, step: Callable[..., Any], *args: Any) -> Any:
        return self._runner.run(step, *args)

    def map(self, step: Callable[..., Any], items: Sequence[Any], *args: Any) -> list[Any]:
        return self._runner.map(step, items, *args)


def correlations(job: CorrelationJob, sip: Path, media: Sequence[Path], work: Path,
                 before: Path | None = None) -> dict[str, Callable[[], object]]:
    """The four contenders: in-process and CLI, analysis off and on; before: also the CLI of that source tree."""
    def in_process(analysis: bool, runner: Callable[[], Any] = InProcessRunner) -> Callable[[], object]:
        out = work / f"lib-{analysis}-{runner.__name__}"
        return lambda: run_steps(dataclasses.replace(job, analysis=analysis, out=out, overwrite=True),
                                 runner()).report

    def cli(analysis: bool, tree: Path = ROOT) -> Callable[[], object]:
        out = work / f"cli-{analysis}-{tree.name}"
        argv = [sys.executable, "-c", CLI_WRAPPER, "on" if analysis else "off", "correlate", "--sip", str(sip),
                "--direction", DIRECTION, "--media", *map(str, media), "--out", str(out), "--overwrite", "--json"]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        return lambda: subprocess.run(argv, check=True, capture_output=True, text=True, env=env)

    contenders = {"lib off": in_process(False), "lib on": in_process(True), "lib in order": in_process(True, InOrder),
                  "cli off": cli(False), "cli on": cli(True)}
    if before is not None:
        contenders["cli on before"] = cli(True, before)
    return contenders


def parts(job: CorrelationJob, work: Path, repeat: int) -> dict[str, float]:
    """The analysis' parts on the bench call, the steps before it run once: what each costs on its own."""
    job = dataclasses.replace(job, out=work / "parts", overwrite=True)
    plan = sdp_plan = pipeline.plan_call(job)
    txn = pipeline.open_results(job)
    selection = pipeline.select_media(job, plan, txn, pipeline.list_media(job, txn))
    results = InProcessRunner().map(pipeline.filter_one, selection.reads, job, plan, txn)
    plan, results = pipeline.learn(job, plan, results)
    pipeline.merge_raw(job, plan, results, txn)
    found: dict[str, float] = {}
    decrypts = interleaved({"off": lambda: pipeline.decrypt(plan, results, txn, False),
                            "on": lambda: pipeline.decrypt(plan, results, txn, True)}, repeat)
    found["decrypt"] = decrypts["off"].wall
    found["collect"] = decrypts["on"].wall - decrypts["off"].wall
    decrypted = decrypts["on"].last
    assert isinstance(decrypted, pipeline.DecryptResult)
    staged = txn.staged
    found["combine"], _ = best(lambda: (staged.sip_plus_media.unlink(missing_ok=True),
                                        pipeline.combine(job, txn)), repeat)
    found["insight"], insight = best(lambda: call_insight(job.sip, sdp_plan, plan, decrypted, staged.media_decrypted),
                                     repeat)
    found["json"], _ = best(lambda: insight.write(staged.combined / ANALYSIS_FILE, facts={}), repeat)
    ladder = build_ladder(read_sip(job.sip), plan)
    origin = min(insight.analysis.first_ts_ns, ladder.first_ns or insight.analysis.first_ts_ns)
    found["svgs"], _ = best(lambda: (ladder_svg(ladder, origin), timeline_svg(insight.analysis, ladder.messages,
                                                                               origin)), repeat)
    found["wavs"], _ = best(lambda: write_audio(staged.media_decrypted, work / "wav", insight.analysis.packets), repeat)
    found["report"], _ = best(lambda: pipeline.write_report(job, plan, insight, staged), repeat)
    found["analyze step"], _ = best(lambda: pipeline.analyze(job, sdp_plan, plan, decrypted, txn), repeat)
    found["read back"], _ = best(lambda: analyze_capture(staged.media_decrypted), repeat)
    pipeline.abort(txn)
    return found


def verdict(added: float) -> str:
    return f"**{'met' if added <= TARGET else 'missed'}**"


def render(runs: dict[str, Runs], found: dict[str, float], repeat: int, packets: int, streams: int,
           before: str = "") -> str:
    """The table between the analysis-run markers."""
    rows: list[tuple[str, str, str, str]] = []
    for where, label in (("lib", "in-process `run_steps(job, InProcessRunner())`"),
                         ("cli", "CLI `rtphelper correlate` (subprocess, interpreter start included)")):
        off, on = runs[f"{where} off"], runs[f"{where} on"]
        wall, cpu = (on.wall - off.wall) / off.wall, (on.cpu - off.cpu) / off.cpu
        rows += [
            (f"(anchor) {label}, analysis off", f"{off.wall:.3f}", f"{off.cpu:.3f}", ""),
            (f"{label}, analysis + report on", f"{on.wall:.3f}", f"{on.cpu:.3f}",
             f"wall +{wall:.1%} (≤ {TARGET:.0%}: {verdict(wall)}); CPU +{cpu:.1%}"),
        ]
    off, serial = runs["lib off"], runs["lib in order"]
    rows.insert(2, ("in-process, analysis + report in this process after combine (no other process, as flows run it)",
                    f"{serial.wall:.3f}", f"{serial.cpu:.3f}", f"wall +{(serial.wall - off.wall) / off.wall:.1%}; "
                    f"CPU +{(serial.cpu - off.cpu) / off.cpu:.1%}"))
    if "cli on before" in runs:
        off, then, now = runs["cli off"], runs["cli on before"], runs["cli on"]
        rows.append((f"CLI, analysis + report on, before this work (`--before`: {before})", f"{then.wall:.3f}",
                     f"{then.cpu:.3f}", f"wall +{(then.wall - off.wall) / off.wall:.1%}; CPU "
                     f"+{(then.cpu - off.cpu) / off.cpu:.1%} (same anchor); after/before wall {now.wall / then.wall:.2f}×"))
    anchor = runs["lib off"].wall
    names = [
        ("collect", "… parts: header collection in the decrypt pass (decrypt with − without)"),
        ("insight", "… statistics, MOS, DTMF, RTCP, verdicts (`call_insight`)"),
        ("json", "… combined/analysis.json written (fsynced)"),
        ("svgs", "… ladder.svg + timeline.svg rendered"),
        ("wavs", "… WAVs (4 mono + 2 stereo) from the collected packets, not forced to disk"),
        ("report", "… `write_report` whole: SVGs, report.html/md, WAVs, renames"),
        ("analyze step", "… the analysis step alone (insight + analysis.json + report), in this process"),
        ("decrypt", "for scale: the decrypt step without collection"),
        ("combine", "for scale: the combine step (what the analysis overlaps)"),
        ("read back", "for scale: `analyze_capture()` reading media_decrypted.pcap back (`rtphelper analyze`)"),
    ]
    rows += [(label, f"{found[key]:.3f}", "", f"{found[key] / anchor:.1%} of the in-process anchor")
             for key, label in names]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return "\n".join([
        BEGIN,
        f"{now}, {platform.machine()}, {os.cpu_count()} cores shared with the other engineers' work (load average "
        f"{load:.1f} at the end), Python {platform.python_version()}; best of {repeat}, contenders interleaved. "
        f"Bench data set: {packets:,} RTP packets of the call in {streams} streams in media_decrypted.pcap.",
        "",
        "| measurement | wall s | CPU s (+ children) | added / note |",
        "|---|---:|---:|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "All runs (wall/CPU s): " + "; ".join(
            f"{name} " + ", ".join(f"{w:.3f}/{c:.3f}" for w, c in zip(r.walls, r.cpus)) for name, r in runs.items()),
        END,
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--repeat", type=int, default=9, help="best of N (default 9)")
    p.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.relative_to(ROOT)}")
    p.add_argument("--skip-parts", action="store_true", help="only the four correlations")
    p.add_argument("--before", type=Path, help="a source tree (its rtpcore/) whose CLI runs as a fifth contender")
    p.add_argument("--before-label", default="", help="what --before is (a commit), for the table")
    args = p.parse_args(argv)
    ds = gen_media.generate()
    media = list(ds.media)
    for f in media:  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    work = Path(tempfile.mkdtemp(prefix="analysis-bench-"))
    try:
        job = make_job(ds.sip, DIRECTION, media, work / "out")
        runs = interleaved(correlations(job, ds.sip, media, work, args.before), args.repeat)
        report = runs["lib on"].last
        insight = report.insight  # type: ignore[attr-defined]
        assert insight is not None, "the analysis did not run"
        for name in ("cli off", "cli on"):  # the switch took: report.html only when the analysis ran
            doc = json.loads(runs[name].last.stdout)  # type: ignore[attr-defined]
            assert bool(doc.get("report_file")) == (name == "cli on"), f"{name}: {doc.get('report_file')}"
        assert report.report_file is not None  # type: ignore[attr-defined]
        packets = sum(s.stats.packets for s in insight.analysis.streams)
        found = {} if args.skip_parts else parts(job, work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.skip_parts:
        found = {key: float("nan") for key in ("collect", "insight", "json", "svgs", "wavs", "report", "analyze step",
                                              "decrypt", "combine", "read back")}
    text = render(runs, found, args.repeat, packets, len(insight.analysis.streams),
                  args.before_label or str(args.before))
    print(text)
    summary = {f"{w}_added_{k}": round((getattr(runs[f"{w} on"], k) - getattr(runs[f"{w} off"], k))
                                        / getattr(runs[f"{w} off"], k), 3) for w in ("lib", "cli") for k in ("wall", "cpu")}
    print(json.dumps(summary))
    if not args.no_write:
        old = RESULTS.read_text()
        section = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
        if not section.search(old):
            raise SystemExit(f"{RESULTS}: no {BEGIN} … {END} section to replace")
        RESULTS.write_text(section.sub(lambda _: text, old))
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
