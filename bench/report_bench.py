"""The call report (issue 11: ladder, timeline, report.html/md, WAVs) against the correlation it follows.

    .venv/bin/python bench/report_bench.py [--repeat N] [--no-write]

Data: the same call as bench/analysis_bench.py (generated inbound call, 108 s of media, ~21,700 call packets, about
the bench call's size). In the same run, best of N, file cache warm, interleaved: (anchor) the correlation in-process with
analysis and report off, and as every correlation runs (analysis + report); then `analyze_capture()` of its
media_decrypted.pcap; `write_call_report()` whole (reads the SIP pcap, renders both SVGs and both reports, writes
the WAVs from the correlation's collected packets, forces them to disk, renames everything into place); and its
parts. Prints ratios to the anchor; replaces its section of bench/RESULTS.md between the report markers.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for path in (ROOT, BENCH):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from analysis_bench import MEDIA_SECONDS, TARGET, best, off_and_on  # noqa: E402

from rtpcore.analysis.call import analyze_capture, write_audio  # noqa: E402
from rtpcore.analysis.ladder import build_ladder, ladder_svg  # noqa: E402
from rtpcore.analysis.report_html import write_call_report  # noqa: E402
from rtpcore.analysis.timeline import timeline_svg  # noqa: E402
from rtpcore.callgen import VARIANTS, render  # noqa: E402
from rtpcore.pipeline import make_job  # noqa: E402
from rtpcore.sip.capture import read_sip  # noqa: E402
from rtpcore.sip.legs import resolve_legs  # noqa: E402

RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"


def replace_section(text: str) -> None:
    """Put text between the report markers of RESULTS.md (appended when the markers are not there yet)."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    section = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    new = section.sub(lambda _: text + "\n", old) if section.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="best of N (default 5)")
    p.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        call = work / "call"
        truth = render(dataclasses.replace(VARIANTS["inbound-b2bua"], media_seconds=MEDIA_SECONDS), call)
        sip = call / str(truth["sip"])
        out = work / "out"

        job = make_job(sip, str(truth["direction"]), [call / "media"], out)
        (t_corr, c_corr, _plain), (t_with, c_with, report) = off_and_on(job, out, args.repeat)
        decrypted = report.outputs[1]  # type: ignore[attr-defined]
        collected = report.insight.analysis.packets  # type: ignore[attr-defined]  # the streams' packets, grouped
        t_analysis, analysis = best(lambda: analyze_capture(decrypted, sip=sip), args.repeat)
        plan = resolve_legs(sip, str(truth["direction"]))
        t_ladder, ladder = best(lambda: build_ladder(read_sip(sip), plan), args.repeat)
        origin = min(analysis.first_ts_ns, ladder.first_ns or analysis.first_ts_ns)  # type: ignore[attr-defined]
        t_svgs, _ = best(lambda: (ladder_svg(ladder, origin),  # type: ignore[arg-type]
                                  timeline_svg(analysis, ladder.messages, origin)),  # type: ignore[arg-type, attr-defined]
                         args.repeat)
        t_wav, _ = best(lambda: write_audio(decrypted, work / "wav", collected), args.repeat)
        in_correlation = dataclasses.replace(analysis, packets=collected)  # type: ignore[type-var]
        t_report, written = best(lambda: write_call_report(out, analysis=in_correlation,  # type: ignore[arg-type]
                                                           verdicts=[],
                                                           plan=plan, sip_pcap=sip), args.repeat)
        sizes = {p.name: p.stat().st_size for p in written if p.suffix != ".wav"}  # type: ignore[attr-defined]
        packets = sum(s.stats.packets for s in analysis.streams)  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    added, cpu_added = (t_with - t_corr) / t_corr, (c_with - c_corr) / c_corr
    rows = [
        ("(anchor) correlation in-process, analysis and report off", t_corr),
        ("correlation with analysis and report (as every correlation runs)", t_with),
        ("(anchor) CPU seconds of this process, analysis and report off", c_corr),
        ("CPU seconds with analysis and report", c_with),
        ("`analyze_capture()` of media_decrypted.pcap (what `rtphelper report` reads)", t_analysis),
        ("SIP read + ladder model", t_ladder),
        ("ladder.svg + timeline.svg rendering", t_svgs),
        ("WAVs (4 mono + 2 stereo) from the correlation's collected packets", t_wav),
        ("`write_call_report()` whole: SIP, SVGs, report.html/md, WAVs (forced to disk), renames", t_report),
    ]
    anchors = {name: c_corr if "CPU" in name else t_corr for name, _sec in rows}
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join([
        BEGIN,
        "## Call report (`bench/report_bench.py`, issue 11)",
        "",
        f"{now}, {platform.machine()}, {os.cpu_count()} cores shared with 6 other engineers' work (load average "
        f"{load:.1f} at the end), Python {platform.python_version()}; best of {args.repeat}.",
        f"Generated inbound B2BUA call, {MEDIA_SECONDS:g} s of media: {packets:,} RTP packets in "
        f"{len(analysis.streams)} streams; report files: "  # type: ignore[attr-defined]
        + ", ".join(f"{name} {size / 1024:.0f} KiB" for name, size in sizes.items()) + ".",
        "",
        "| step | seconds | ratio to anchor |",
        "|---|---:|---:|",
        *[f"| {name} | {sec:.3f} | {sec / anchors[name]:.2f} |" for name, sec in rows],
        "",
        f"Analysis + report together add {added:.0%} wall time ({cpu_added:.0%} CPU) to the correlation, measured in "
        f"the same interleaved runs; target ≤ {TARGET:.0%}: **{'met' if added <= TARGET else 'missed'}**. "
        f"The report alone takes {t_report / t_corr:.0%} of the anchor.",
        END,
    ])
    print(text)
    print(json.dumps({"report_over_correlation": round(t_report / t_corr, 3),
                      "analysis_and_report_added": round(added, 3), "analysis_and_report_added_cpu": round(cpu_added, 3)}))
    if not args.no_write:
        replace_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
