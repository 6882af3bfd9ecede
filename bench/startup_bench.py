"""Issue 12: `rtphelper`'s fixed cost (interpreter + imports) before and after, and the bench set end to end vs tcpdump.

    .venv/bin/python bench/startup_bench.py [--repeat N] [--before REF]

"before" is the code of REF (default: main at the start of the issue-12 start-up work) exported with `git archive`
into a temporary folder; "after" is this checkout. Both run as `python -m rtpcore.cli` with PYTHONPATH at their
code, round-robin, best of N (other work on the machine hits both alike). Then the 2 × 256 MiB bench set
(bench/gen_media.py) end to end: `rtphelper correlate` (this checkout, subprocess) vs the tcpdump one-pass anchor.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import gen_media  # noqa: E402
from before_after import compile_bytecode, export  # noqa: E402  (the "before" code: git archive of a ref)

BEFORE_REF = "cbe161c"     # main when the start-up work began
HEAVY = ("pydantic", "yaml", "boto3", "botocore", "prefect", "rtpcore.hosts", "rtpcore.capture.engine",
         "rtpcore.analysis.call")
PROBE = ("import json, sys\nfrom rtpcore.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
         "except SystemExit as exc:  # --help\n    rc = exc.code\nsys.stdout.flush()\n"
         "print('\\nMODULES ' + json.dumps(sorted(sys.modules)))\nraise SystemExit(rc)\n")
DIRECTION = "inbound"


def cli(code: Path, args: list[str], cwd: Path) -> list[str]:
    """The command that runs `rtphelper ARGS` from the code at `code`."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(code)!r}); "
            "from rtpcore.cli import main; sys.exit(main())", *args]


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[3:])}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return took


def heavy_modules(code: Path, args: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """Which of HEAVY the command loaded (top-level names only)."""
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(code)!r})\n" + PROBE, *args],
                          cwd=cwd, env=env, capture_output=True, text=True)
    modules = set(json.loads(done.stdout.rpartition("\nMODULES ")[2]))
    return [h for h in HEAVY if h in modules]


def round_robin(contenders: dict[str, Callable[[], float]], repeat: int) -> dict[str, list[float]]:
    """Best-of-N material, after one untimed run each (the exported code compiles its .pyc files then)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()
    for _ in range(repeat):
        for name, fn in contenders.items():
            times[name].append(fn())
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--before", default=BEFORE_REF, help=f"git ref of the 'before' code (default {BEFORE_REF})")
    args = ap.parse_args(argv)
    ds = gen_media.generate()
    call = ds.sip.parent
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp_name:
        tmp = Path(tmp_name)
        before = export(ROOT, args.before, tmp / "before")
        compile_bytecode(ROOT, before)
        work = tmp / "work"   # cwd without config/: both read the same (default) settings
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTPHELPER_")}
        env["RTPHELPER_HOSTS_FILE"] = str(work / "no-hosts.yaml")
        small = tmp / "small"
        subprocess.run(cli(ROOT, ["generate", "--variant", "inbound-proxy", "--out", str(small)], work), cwd=work,
                       env=env, check=True, capture_output=True)
        commands = {
            "--help": ["--help"],
            "legs": ["legs", "--sip", str(small / "sip.pcap"), "--direction", DIRECTION],
            "correlate (small call)": ["correlate", "--sip", str(small / "sip.pcap"), "--direction", DIRECTION,
                                       "--media", str(small / "media"), "--out", str(tmp / "o"), "--overwrite"],
        }
        print(f"python -c pass: {min(round_robin({'p': lambda: timed([sys.executable, '-c', 'pass'], work, env)}, args.repeat)['p']):.3f} s")
        print(f"{'command':24} {'before s':>9} {'after s':>9} {'after/before':>12}  heavy modules before → after")
        rows = {}
        for name, argv_ in commands.items():
            t = round_robin({"before": lambda a=argv_: timed(cli(before, a, work), work, env),
                             "after": lambda a=argv_: timed(cli(ROOT, a, work), work, env)}, args.repeat)
            b, a = min(t["before"]), min(t["after"])
            hb, ha = heavy_modules(before, argv_, work, env), heavy_modules(ROOT, argv_, work, env)
            rows[name] = (b, a)
            print(f"{name:24} {b:9.3f} {a:9.3f} {a / b:12.2f}  {','.join(hb) or '-'} → {','.join(ha) or '-'}")

        media = [str(m) for m in ds.media]
        bpf = work / "legs.bpf"
        sys.path.insert(0, str(ROOT))
        from rtpcore.media.demux import filter_for_file
        from rtpcore.sip.legs import resolve_legs

        bpf.write_text(filter_for_file(resolve_legs(ds.sip, DIRECTION), ds.media[0]) + "\n")
        big = ["correlate", "--sip", str(call / "sip.pcap"), "--direction", DIRECTION, "--media", *media,
               "--out", str(tmp / "big"), "--overwrite"]
        anchor = ["bash", str(BENCH / "tcpdump_anchor.sh"), str(tmp / "tcpdump"), str(bpf), *media]
        t = round_robin({"before": lambda: timed(cli(before, big, work), work, env),
                         "after": lambda: timed(cli(ROOT, big, work), work, env),
                         "tcpdump": lambda: timed(anchor, work, env)}, args.repeat)
        tb, ta, tt = min(t["before"]), min(t["after"]), min(t["tcpdump"])
        print(f"2 x 256 MiB end to end: CLI before {tb:.3f} s ({tb / tt:.2f}x tcpdump), after {ta:.3f} s "
              f"({ta / tt:.2f}x tcpdump), tcpdump one pass {tt:.3f} s; target <= 1.00x")
        print(json.dumps({"small": rows, "bench_set": {"before": tb, "after": ta, "tcpdump": tt},
                          "load": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
