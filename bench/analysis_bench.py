"""Call analysis (issue 11) against the correlation it follows, on a call of the bench data set's size.

    .venv/bin/python bench/analysis_bench.py [--repeat N] [--no-write]

Data (generated here, seed fixed): the call generator's inbound call (carrier SRTP, core RTP) with 108 s of
media = 21,740 call packets, about the 21,735 of the 2×256 MiB bench call. In the same run, best of N with
the file cache warm: (anchor) `rtpcore.pipeline.correlate()` of that call in-process; then `analyze_capture()`
of its media_decrypted.pcap, and its parts. The target (≤ 15 % added) is analysis / correlation; the ratio
to the bench data set's recorded in-process correlation (bench/RESULTS.md, 512 MiB of input) is printed too.
Appends/replaces its section of bench/RESULTS.md between the analysis markers.
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
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rtpcore.analysis.call import analyze_capture, write_audio  # noqa: E402
from rtpcore.analysis.packets import read_media  # noqa: E402
from rtpcore.analysis.stats import compute_stats  # noqa: E402
from rtpcore.callgen import VARIANTS, render  # noqa: E402
from rtpcore.pipeline import correlate  # noqa: E402

RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- analysis:begin -->", "<!-- analysis:end -->"
MEDIA_SECONDS = 108.0          # 21,740 call packets ≈ the bench call's 21,735
TARGET = 0.15
BENCH_CORRELATE = re.compile(r"`rtpcore\.pipeline\.correlate\(\)` in-process \| ([\d.]+) \| ([\d,]+)")


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Best wall time of fn over repeat runs, and its last result."""
    times = []
    result: object = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="best of N (default 5)")
    p.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="analysis-bench-"))
    try:
        call = work / "call"
        truth = render(dataclasses.replace(VARIANTS["inbound-proxy"], media_seconds=MEDIA_SECONDS), call)
        out = work / "out"

        def run_correlate() -> object:
            shutil.rmtree(out, ignore_errors=True)
            return correlate(call / str(truth["sip"]), str(truth["direction"]), [call / "media"], out)

        t_corr, report = best(run_correlate, args.repeat)
        decrypted = report.outputs[1]  # type: ignore[attr-defined]
        t_read, media = best(lambda: read_media(decrypted), args.repeat)
        t_stats, _ = best(lambda: compute_stats(media.rtp, media.first_ts_ns), args.repeat)  # type: ignore[attr-defined]
        t_all, analysis = best(lambda: analyze_capture(decrypted), args.repeat)
        t_wav, wavs = best(lambda: write_audio(decrypted, work / "wav"), args.repeat)
        packets = len(media.rtp)  # type: ignore[attr-defined]
        streams = len(analysis.streams)  # type: ignore[attr-defined]
        recorded = BENCH_CORRELATE.search(RESULTS.read_text()) if RESULTS.exists() else None
        bench_corr = float(recorded.group(1)) if recorded else None
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = t_all / t_corr
    rows = [
        ("(anchor) `correlate()` in-process of the generated call", t_corr, "1.00", ""),
        ("read media_decrypted.pcap (RTP/RTCP headers)", t_read, f"{t_read / t_corr:.2f}", ""),
        ("per-stream statistics (Wireshark rules)", t_stats, f"{t_stats / t_corr:.2f}", ""),
        ("`analyze_capture()`: read + stats + MOS + DTMF + RTCP", t_all, f"{ratio:.2f}",
         f"≤ {TARGET:.2f}: **{'met' if ratio <= TARGET else 'missed'}**"),
        ("WAV files (4 mono + 2 stereo), separate step", t_wav, f"{t_wav / t_corr:.2f}", ""),
    ]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        BEGIN,
        "## Call analysis (`bench/analysis_bench.py`, issue 11)",
        "",
        f"{now}, {platform.machine()}, {os.cpu_count()} cores (shared: load average {load:.1f} at the end), "
        f"Python {platform.python_version()}; best of {args.repeat}.",
        f"Generated inbound call, {MEDIA_SECONDS:g} s of media: {packets:,} RTP packets in {streams} streams in "
        "media_decrypted.pcap (the bench call has 21,735).",
        "",
        "| step | seconds | ratio to anchor | target |",
        "|---|---:|---:|---|",
        *[f"| {name} | {sec:.3f} | {r} | {t} |" for name, sec, r, t in rows],
        "",
    ]
    if bench_corr is not None:
        lines.append(f"Against the bench data set's recorded in-process correlation ({bench_corr:.3f} s for 512 MiB of "
                     f"input, above): analysis adds {t_all / bench_corr:.0%}.")
    lines.append(END)
    text = "\n".join(lines)
    print(text)
    print(json.dumps({"analysis_over_correlation": round(ratio, 3),
                      "analysis_over_bench_correlation": round(t_all / bench_corr, 3) if bench_corr else None}))
    if not args.no_write:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        section = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
        new = section.sub(lambda _: text + "\n", old) if section.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
        RESULTS.write_text(new)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
