"""Correlation fault matrix: SIGKILL / SIGTERM / SIGINT of `rtphelper correlate` at random points, and disk full.

Each run replaces the results of an earlier run on other media (--overwrite), so after a fault the output
folder must hold exactly the earlier results (byte for byte) or, when the signal came after the swap,
exactly the new ones — never a mix, never a final name of the failed run. The next run cleans the staging
leftovers and succeeds.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rtpcore.results import STAGING_PREFIX

ROOT = Path(__file__).resolve().parents[2]
SEEDS = range(20)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_USAGE = 2
CHILD_GRACE_SECONDS = 20.0
MEDIA_SECONDS = 120.0          # 13 rolling chunks: the run spends time in every step
ROLL_EVERY = 2000
EARLIER_CHUNKS = 3             # the earlier results come from the first chunks only (other outputs)
TMPFS_SIZE = "16m"             # room for the earlier results (~6 MB), not for the new run's (~28 MB)

Snapshot = dict[str, str]


def snapshot(out: Path) -> Snapshot:
    """Every result file (staging folders aside) → sha256: what a user would find in --out."""
    found: Snapshot = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if relative.parts[0].startswith(STAGING_PREFIX) or not path.is_file():
            continue
        found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def staging_left(out: Path) -> list[Path]:
    return sorted(out.glob(f"{STAGING_PREFIX}*"))


def command(call: Path, media: Path, out: Path, *, overwrite: bool = True) -> list[str]:
    return [sys.executable, "-m", "rtpcore.cli", "correlate", "--sip", str(call / "sip.pcap"), "--direction", "inbound",
            "--media", str(media), "--out", str(out), *(["--overwrite"] if overwrite else [])]


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A long rolling call, the earlier results (first chunks) and the full results, both as snapshots."""
    from rtpcore.callgen import render, variant

    root = tmp_path_factory.mktemp("correlation-faults")
    folder = root / "call"
    render(variant("rolling", media_seconds=MEDIA_SECONDS, rolling_packets=ROLL_EVERY,
                   core_suite="AES_CM_128_HMAC_SHA1_80"), folder)
    chunks = sorted((folder / "media").glob("*.pcap"))
    earlier_media = root / "earlier-media"
    earlier_media.mkdir()
    for chunk in chunks[:EARLIER_CHUNKS]:
        shutil.copy(chunk, earlier_media / chunk.name)
    earlier = root / "earlier"
    assert run(command(folder, earlier_media, earlier, overwrite=False)).returncode == 0
    full = root / "full"
    started = time.monotonic()
    done = run(command(folder, folder / "media", full, overwrite=False))
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    before, after = snapshot(earlier), snapshot(full)
    assert before != after and any(name.startswith("decrypted/") for name in before)
    return {"folder": folder, "earlier": earlier, "before": before, "after": after, "wall": wall, "root": root}


def fresh_out(call: dict, name: str) -> Path:
    out = call["root"] / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(call["earlier"], out)
    assert snapshot(out) == call["before"]
    return out


def wait_group_gone(pgid: int) -> None:
    """Orphaned filter workers of a killed run end by themselves; wait so the next run starts on a quiet folder."""
    deadline = time.monotonic() + CHILD_GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"processes of the killed run (group {pgid}) still alive after {CHILD_GRACE_SECONDS} s")


def signalled_run(call: dict, out: Path, seed: int, send: Callable[[subprocess.Popen[str]], None]) -> tuple[int, str]:
    """Start the --overwrite run, send the signal after a random delay within the run, return (code, stderr)."""
    delay = random.Random(seed).uniform(0.05, call["wall"] * 1.1)
    proc = subprocess.Popen(command(call["folder"], call["folder"] / "media", out), cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(delay)
    if proc.poll() is None:
        send(proc)
    _, stderr = proc.communicate(timeout=60)
    wait_group_gone(proc.pid)
    return proc.returncode, stderr


def check_then_recover(call: dict, out: Path, code: int, stderr: str, interrupted_codes: tuple[int, ...]) -> bool:
    """After the fault: earlier or new results exactly; then a run with --overwrite succeeds and cleans up."""
    found = snapshot(out)
    if code == 0:
        assert found == call["after"], "a run that exited 0 left other results than a full run"
        interrupted = False
    else:  # the signal came before the swap (earlier results) or after it (the complete new ones)
        assert code in interrupted_codes, (code, stderr)
        assert found in (call["before"], call["after"]), "previous results changed, or the failed run left final names"
        interrupted = found == call["before"]
    assert not [p for p in out.rglob("*.part") if not p.relative_to(out).parts[0].startswith(STAGING_PREFIX)]
    again = run(command(call["folder"], call["folder"] / "media", out))
    assert again.returncode == 0, again.stderr
    assert snapshot(out) == call["after"]
    assert staging_left(out) == [], "the next run must remove the staging leftovers"
    return interrupted


@pytest.mark.parametrize(("signum", "codes", "message", "to_group"), [
    # Ctrl-C in a terminal: SIGINT to the whole process group (the filter workers too).
    (signal.SIGINT, (EXIT_INTERRUPTED, -signal.SIGINT), "interrupted", True),
    # Prefect cancel, timeout(1), systemd: SIGTERM to the process only.
    (signal.SIGTERM, (EXIT_TERMINATED, -signal.SIGTERM), "terminated (SIGTERM)", False),
], ids=["SIGINT", "SIGTERM"])
def test_signal_at_random_points_keeps_previous_results(
    call: dict, signum: signal.Signals, codes: tuple[int, ...], message: str, to_group: bool
) -> None:
    interrupted_in_run = kept_earlier = 0
    for seed in SEEDS:
        out = fresh_out(call, f"out-{signum.name}-{seed}")

        def send(proc: subprocess.Popen[str]) -> None:
            if to_group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)

        code, stderr = signalled_run(call, out, seed, send)
        if code not in (0, -signum):  # -signum: the signal came during interpreter start-up, before rtphelper ran
            assert message in stderr and "previous results in --out are untouched" in stderr, stderr
            assert "Traceback" not in stderr.split("rtphelper correlate:")[-1]
            interrupted_in_run += 1
        kept_earlier += check_then_recover(call, out, code, stderr, codes)
        shutil.rmtree(out)
    assert kept_earlier >= len(SEEDS) // 4, f"only {kept_earlier} signals came before the swap"
    assert interrupted_in_run >= len(SEEDS) // 4, f"only {interrupted_in_run} signals landed inside the run"


def test_sigkill_at_random_points_leaves_only_a_staging_folder(call: dict) -> None:
    killed = 0
    for seed in SEEDS:
        out = fresh_out(call, f"out-SIGKILL-{seed}")
        code, _ = signalled_run(call, out, seed, lambda proc: proc.kill())
        killed += check_then_recover(call, out, code, "", (-signal.SIGKILL,))
        shutil.rmtree(out)
    assert killed >= len(SEEDS) // 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A tmpfs of TMPFS_SIZE (root only), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (disk-full test)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_correlation_keeps_previous_results(call: dict, small_disk: Path) -> None:
    out = small_disk / "out"
    shutil.copytree(call["earlier"], out)
    done = run(command(call["folder"], call["folder"] / "media", out))
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "no space left on the device" in done.stderr and "free some space or choose another --out" in done.stderr
    assert str(out) in done.stderr and "Traceback" not in done.stderr
    assert snapshot(out) == call["before"]
    assert staging_left(out) == [], "a failed run removes its own staging folder"
