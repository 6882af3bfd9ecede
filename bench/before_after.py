"""bench/run.py's before/after helpers: the "before" code exported from git, the CLI run from a given checkout's code,
output comparison and CPU accounting."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

# `rtphelper correlate` as the console script runs it (main() without argv), from a given checkout's code;
# NO_ANALYSIS runs it with CorrelationJob.analysis=False (there is no CLI switch: only to measure its cost).
CLI_DRIVER = "import sys; sys.path.insert(0, {code!r}); from rtpcore.cli import main; sys.exit(main())"
CLI_DRIVER_NO_ANALYSIS = (
    "import sys, dataclasses; sys.path.insert(0, {code!r}); import rtpcore.pipeline as p; _make = p.make_job; "
    "p.make_job = lambda *a, **k: dataclasses.replace(_make(*a, **k), analysis=False); "
    "from rtpcore.cli import main; sys.exit(main())")


def cli_command(code: Path, sip: Path, direction: str, media: list[Path], out: Path, *, analysis: bool = True) -> list[str]:
    """`rtphelper correlate … --json` with the rtpcore of `code`, analysis as shipped or off."""
    driver = (CLI_DRIVER if analysis else CLI_DRIVER_NO_ANALYSIS).format(code=str(code))
    return [sys.executable, "-c", driver, "correlate", "--sip", str(sip), "--direction", direction,
            "--media", *map(str, media), "--out", str(out), "--overwrite", "--json"]


def cpu_seconds(name: str) -> float:
    """CPU (user + sys) used so far by this process and its waited-for children: subprocesses with their filter
    processes, tcpdump and mergecap under bash, the library's pool workers (`name` only labels the call)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def same_outputs(after: Path, before: Path) -> bool | str:
    """True when both runs wrote the same pcap files, byte for byte (combined/ and decrypted/); else what differs."""
    def pcaps(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*/*.pcap"))}

    a, b = pcaps(after), pcaps(before)
    differ = sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))
    return True if a and not differ else ", ".join(differ) or "no outputs"


def export(root: Path, ref: str, into: Path) -> Path:
    """The tracked files of `ref` (git archive, no worktree): the "before" code, run from its own folder."""
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", ref], check=True,
                             capture_output=True).stdout
    into.mkdir(parents=True)
    tar = into / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    tar.unlink()
    return into


def compile_bytecode(*roots: Path) -> None:
    """Write the .pyc files of each checkout's Python packages, as a user's first run does.

    A shell with PYTHONDONTWRITEBYTECODE=1 (this sandbox's) never caches bytecode, so every timed
    `rtphelper` start would compile all of rtpcore again (~0.12 s, measured 2026-12-03); Python still
    reads .pyc files that exist, so writing them once keeps that cost out of the start-up figures."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for root in roots:
        packages = [str(root / name) for name in ("rtpcore", "tasks", "flows") if (root / name).is_dir()]
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *packages], check=True, env=env,
                       stdout=subprocess.DEVNULL)


def default_before(root: Path) -> str | None:
    """The commit this branch left main at (its merge base), so "before" is main without this branch's work."""
    done = subprocess.run(["git", "-C", str(root), "merge-base", "HEAD", "main"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return done.stdout.strip()[:12]
