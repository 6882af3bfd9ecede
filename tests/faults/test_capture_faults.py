"""Capture rows of the fault matrix (issue 9), end to end: `rtphelper capture` as a subprocess against a real rpcapd.

Faults: SIGKILL / SIGTERM / SIGINT at a random point while traffic flows (20 seeds each), a second signal,
rpcapd killed mid-capture (restarted, or gone for good), and a full disk. For each: chunks lost = 0 (every
chunk on disk is a valid pcap whose sha256 and packet count are those listed in the manifest — after
`rtphelper repair` where the process died), every datagram sent while capturing is in the chunks once and in
order up to the fault (less the kernel drops rpcapd reports), the documented exit code and message, and an end
no later than duration + 15 s.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtpcore.capture.manifest import MANIFEST_NAME, Manifest, ManifestState
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.rolling import DEFAULT_FLUSH_INTERVAL
from tests.rpcap import conftest as rpcapd_conftest
from tests.rpcap.conftest import Rpcapd, root, rpcapd, rpcapd_binary  # noqa: F401 - fixtures
from tests.rpcap.test_capture_engine import Receiver, payloads, wait_for, written

REPO = Path(__file__).resolve().parents[2]
SEEDS = range(20)
SIGNAL_DURATION = 30.0        # seconds asked for; every signal lands long before it
END_SLACK_SECONDS = 15.0      # the acceptance bound: a capture ends by duration + 15 s whatever happens
STOP_SECONDS = 5.0            # a cooperative stop (first SIGTERM/SIGINT) returns within this
MAX_BYTES = "64KiB"           # small chunks: several roll over before the signal lands
DELAY_RANGE = (0.2, 3.0)      # seconds between the first chunk appearing and the signal
# The last datagrams before a signal may still be in flight (kernel -> rpcapd -> TCP) when the
# connection closes; everything sent this long before the signal must be on disk.
IN_FLIGHT_SECONDS = 0.3
# A SIGKILL may lose what the open chunk had not yet written (at most one flush interval).
KILL_LOSS_SECONDS = DEFAULT_FLUSH_INTERVAL + IN_FLIGHT_SECONDS


def cli(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`python -m rtpcore.cli` with no RTPHELPER_* of the developer's, local storage, fast reconnects."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTPHELPER_")}
    env |= {"RTPHELPER_STORAGE_MODE": "local", "PYTHONPATH": str(REPO), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "rtpcore.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Stream:
    """Unique datagrams at about 2000/s from a thread; remembers each one's send time."""

    def __init__(self, tag: bytes) -> None:
        self.udp = Receiver()
        self.tag = tag
        self.sent: list[bytes] = []
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = payloads(self.tag, 20, start=len(self.sent), size=150)
            self.udp.send(batch, pause_every=1000)
            now = time.monotonic()
            self.sent += batch
            self.times += [now] * len(batch)
            time.sleep(0.01)

    def sent_before(self, moment: float) -> int:
        """How many datagrams had been sent before `moment` (time.monotonic())."""
        return sum(1 for t in self.times if t < moment)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.udp.close()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """In-process CLI calls (repair) read no runtime.env of the developer's."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("RTPHELPER_"):
            monkeypatch.delenv(key)
    return tmp_path


def capture_args(server: Rpcapd, port: int, out: Path, duration: float, *extra: str) -> list[str]:
    return ["capture", "--address", "127.0.0.1", "--port", str(server.port), "--interface", "lo",
            "--filter", f"udp dst port {port}", "--duration", f"{duration:g}", "--out", str(out),
            "--max-bytes", MAX_BYTES, "--json", "--quiet", *extra]


def chunks_on_disk(out: Path) -> list[Path]:
    return sorted((out / "raw").glob("*.pcap"))


def assert_no_chunk_lost(out: Path) -> ManifestState:
    """Every chunk on disk is listed, reads to its end, and has the packets and sha256 the manifest says."""
    state = Manifest.read(out / MANIFEST_NAME)
    files = chunks_on_disk(out)
    assert [f.name for f in files] == sorted(c.name for c in state.chunks), "a chunk on disk is not in the manifest"
    assert not state.open_chunks
    for path in files:
        record = state.chunk(path.name)
        assert record is not None
        with open_capture(path) as reader:
            assert sum(1 for _ in reader) == record.packets, f"{path.name}: packets differ from the manifest"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256, f"{path.name}: sha256 differs"
    return state


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the captured datagrams sit in what was sent."""

    first: int
    end: int       # one past the last captured datagram's index in `sent`
    missing: int   # holes between first and end


def assert_in_order(got: list[bytes], sent: list[bytes], drops: int) -> Delivery:
    """The captured datagrams are sent's, once each, in order; holes only up to the drops rpcapd reported."""
    assert got, "nothing captured"
    index = {data: i for i, data in enumerate(sent)}
    positions = [index[data] for data in got]
    assert positions == sorted(set(positions)), "a datagram is doubled or out of order"
    missing = positions[-1] + 1 - positions[0] - len(positions)
    holes = [(a + 1, b) for a, b in zip(positions, positions[1:]) if b != a + 1]
    assert missing <= drops, (f"{missing} datagrams missing while capturing, rpcapd reported {drops} drops; "
                              f"holes (from, to) in the {len(got)} captured: {holes[:5]}")
    return Delivery(positions[0], positions[-1] + 1, missing)


def drops_of(host: dict[str, object]) -> int:
    drops = host["drops"]
    assert isinstance(drops, dict)
    return int(drops["client"]) + int(drops["server"]) + int(drops["interface"])


def repair(out: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "rtpcore.cli", "repair", str(out), "--json"], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert not doc["problems"]
    return doc


@dataclass(frozen=True, slots=True)
class Signalled:
    """One capture process that got a signal at a random point."""

    out: Path
    stream: Stream
    code: int
    stdout: str
    stderr: str
    signalled_at: float
    ended_at: float
    started_at: float


def capture_then_signal(server: Rpcapd, folder: Path, seed: int, signals: tuple[signal.Signals, ...]) -> Signalled:
    """Traffic flows, the capture starts, and after a seeded random delay the signals are sent back to back."""
    delay = random.Random(seed).uniform(*DELAY_RANGE)
    stream = Stream(b"seed%02d" % seed)
    out = folder / f"{signals[0].name}-{seed:02d}"
    started_at = time.monotonic()
    proc = cli(capture_args(server, stream.udp.port, out, SIGNAL_DURATION), folder)
    try:
        wait_for(lambda: any(chunks_on_disk(out)), seconds=10)
        time.sleep(delay)
    finally:
        signalled_at = time.monotonic()
        for sig in signals:
            proc.send_signal(sig)
        try:
            stdout, stderr = proc.communicate(timeout=SIGNAL_DURATION + END_SLACK_SECONDS)
        finally:
            ended_at = time.monotonic()
            stream.stop()
    return Signalled(out, stream, proc.returncode, stdout.decode(), stderr.decode(), signalled_at, ended_at,
                     started_at)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_at_random_points_stop_cooperatively(rpcapd: Rpcapd, tmp_path: Path,
                                                                 sig: signal.Signals) -> None:
    for seed in SEEDS:
        run = capture_then_signal(rpcapd, tmp_path, seed, (sig,))
        where = f"seed {seed}"
        assert run.code == 0, f"{where}: {run.stderr}"
        assert f"rtphelper capture: {sig.name}: stopping (closing chunks; send it again to abort)" in run.stderr
        assert run.ended_at - run.signalled_at < STOP_SECONDS, where
        assert run.ended_at - run.started_at <= SIGNAL_DURATION + END_SLACK_SECONDS, where
        (host,) = json.loads(run.stdout)["hosts"]
        assert host["error"] is None and host["gaps"] == [], where
        state = assert_no_chunk_lost(run.out)
        assert state.finished and state.sessions[-1]["ended"] == "stopped", where
        assert [Path(f).name for f in host["files"]] == [f.name for f in chunks_on_disk(run.out)], where
        got = written(chunks_on_disk(run.out), run.stream.udp.port)
        assert host["packets"] == len(got), where
        delivered = assert_in_order(got, run.stream.sent, drops_of(host))
        # Up to the signal: everything sent until just before it is on disk.
        assert delivered.end >= run.stream.sent_before(run.signalled_at - IN_FLIGHT_SECONDS), where


def test_sigkill_at_random_points_then_repair_loses_no_chunk(rpcapd: Rpcapd, tmp_path: Path) -> None:
    for seed in SEEDS:
        run = capture_then_signal(rpcapd, tmp_path, seed, (signal.SIGKILL,))
        where = f"seed {seed}"
        assert run.code == -signal.SIGKILL, where
        before = Manifest.read(run.out / MANIFEST_NAME)
        assert before.sessions[-1]["status"] == "started", where  # the crash is visible before repair
        doc = repair(run.out)
        state = assert_no_chunk_lost(run.out)
        assert repair(run.out)["changed"] is False, f"{where}: repair is idempotent"
        if doc["changed"]:
            assert any(c.reason == "repair" for c in state.chunks), where
        got = written(chunks_on_disk(run.out), run.stream.udp.port)
        delivered = assert_in_order(got, run.stream.sent, drops=0)
        # At most the last flush interval of the open chunk is lost.
        assert delivered.end >= run.stream.sent_before(run.signalled_at - KILL_LOSS_SECONDS), where


def test_a_second_signal_aborts_and_repair_accounts_for_every_chunk(rpcapd: Rpcapd, tmp_path: Path) -> None:
    """Ctrl-C starts the cooperative stop; a SIGTERM right behind it aborts (exit 130), repair makes it whole.

    Two signals of one kind sent back to back reach a process as one (POSIX does not queue them), and
    signals pending together are handled in signal-number order (SIGINT before SIGTERM), so SIGINT goes
    first: whether or not it was handled before SIGTERM arrived, it is the one that starts the stop.
    """
    for seed in range(5):
        run = capture_then_signal(rpcapd, tmp_path, seed, (signal.SIGINT, signal.SIGTERM))
        where = f"seed {seed}"
        assert run.ended_at - run.signalled_at < STOP_SECONDS, where
        assert run.code == 130, f"{where}: {run.stderr}"
        assert run.stderr.rstrip().endswith("rtphelper capture: interrupted"), run.stderr
        assert "stopping (closing chunks; send it again to abort)" in run.stderr
        assert run.stdout == "", where  # no summary claims a result
        repair(run.out)
        assert_no_chunk_lost(run.out)
        got = written(chunks_on_disk(run.out), run.stream.udp.port)
        assert_in_order(got, run.stream.sent, drops=0)


@pytest.fixture
def restartable(rpcapd_binary: Path, root: None, tmp_path: Path) -> Iterator[list[Rpcapd]]:  # noqa: F811
    """rpcapd servers of the test's own (the first one gets killed); all stopped afterwards."""
    servers = [Rpcapd(rpcapd_binary, ["-n"], tmp_path / "rpcapd-1.log")]
    yield servers
    for server in servers:
        server.stop()


def test_rpcapd_killed_mid_capture_and_back_records_the_gap_and_ends_on_time(
    restartable: list[Rpcapd], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = restartable[0]
    duration = 6.0
    stream = Stream(b"rpcapd")
    out = tmp_path / "reconnect"
    proc = cli(capture_args(server, stream.udp.port, out, duration), tmp_path,
               {"RTPHELPER_RPCAP_RECONNECT_BASE_SECONDS": "0.2", "RTPHELPER_RPCAP_RECONNECT_MAX_SECONDS": "0.5"})
    started = time.monotonic()
    try:
        wait_for(lambda: any(chunks_on_disk(out)), seconds=10)
        time.sleep(1.0)
        killed_at = time.monotonic()
        server.kill()
        time.sleep(0.5)
        monkeypatch.setattr(rpcapd_conftest, "_free_port", lambda: server.port)
        restartable.append(Rpcapd(Path(server.proc.args[0]), ["-n"], tmp_path / "rpcapd-2.log"))
        back_at = time.monotonic()
        stdout, stderr = (text.decode() for text in proc.communicate(timeout=duration + END_SLACK_SECONDS))
    finally:
        if proc.poll() is None:
            proc.kill()
        ended = time.monotonic()
        stream.stop()
    assert proc.returncode == 0, stderr
    assert ended - started <= duration + END_SLACK_SECONDS
    (host,) = json.loads(stdout)["hosts"]
    assert host["error"] is None
    (gap,) = host["gaps"]
    assert "rpcapd closed the" in gap["why"] and gap["from"] < gap["to"]
    state = assert_no_chunk_lost(out)
    assert [(g.from_ns, g.to_ns, g.why) for g in state.gaps] == [(gap["from"], gap["to"], gap["why"])]
    assert state.finished and state.sessions[-1]["ended"] == "deadline"
    got = written(chunks_on_disk(out), stream.udp.port)
    sent = stream.sent
    positions = [sent.index(data) for data in got]
    assert positions == sorted(set(positions))
    # Before the kill and after the reconnect, each stretch is complete; only the outage is missing.
    before_kill = stream.sent_before(killed_at - IN_FLIGHT_SECONDS)
    after_back = stream.sent_before(back_at + 1.0)  # reconnect backoff is at most 0.5 s
    first = positions[0]
    assert set(range(first, before_kill)) <= set(positions)
    end_of_capture = stream.sent_before(started + duration - 1.0)
    assert set(range(after_back, end_of_capture)) <= set(positions)


@pytest.mark.parametrize(("env", "code", "why"), [
    ({}, 0, "the capture ended before it came back"),
    ({"RTPHELPER_RPCAP_RECONNECT_BASE_SECONDS": "0.1", "RTPHELPER_RPCAP_RECONNECT_MAX_SECONDS": "0.2",
      "RTPHELPER_RPCAP_RECONNECT_MAX_ATTEMPTS": "2"}, 1, "gave up after 2 reconnect attempts"),
], ids=["default-backoff-outlasts-the-capture", "gives-up-after-2-attempts"])
def test_rpcapd_killed_for_good_ends_on_time_and_keeps_its_chunks(
    restartable: list[Rpcapd], tmp_path: Path, env: dict[str, str], code: int, why: str,
) -> None:
    """Still retrying at the deadline: a gap to the end, exit 0. Out of attempts: that host failed, exit 1."""
    server = restartable[0]
    duration = 5.0
    stream = Stream(b"gone")
    out = tmp_path / "gone"
    proc = cli(capture_args(server, stream.udp.port, out, duration), tmp_path, env)
    started = time.monotonic()
    try:
        wait_for(lambda: any(chunks_on_disk(out)), seconds=10)
        time.sleep(1.0)
        killed_at = time.monotonic()
        server.kill()
        stdout, stderr = (text.decode() for text in proc.communicate(timeout=duration + END_SLACK_SECONDS))
    finally:
        if proc.poll() is None:
            proc.kill()
        ended = time.monotonic()
        stream.stop()
    assert ended - started <= duration + END_SLACK_SECONDS
    assert proc.returncode == code, stderr
    assert "rpcapd closed the data channel during the capture (daemon stopped or killed?); reconnecting" in stderr
    (host,) = json.loads(stdout)["hosts"]
    (gap,) = host["gaps"]
    assert why in gap["why"]
    if code:
        assert ("rtphelper capture: error: 127.0.0.1 lo: capture lost and 2 reconnect attempts failed; last error: "
                f"rpcap://127.0.0.1:{server.port}: connection refused") in stderr
        assert "reconnect attempts failed" in host["error"]
    else:
        assert host["error"] is None and "error:" not in stderr
    state = assert_no_chunk_lost(out)
    assert state.finished and [g.why for g in state.gaps] == [gap["why"]]
    got = written(chunks_on_disk(out), stream.udp.port)
    delivered = assert_in_order(got, stream.sent, drops_of(host))
    assert delivered.end >= stream.sent_before(killed_at - IN_FLIGHT_SECONDS)


@pytest.fixture
def tiny_disk(root: None, tmp_path: Path) -> Iterator[Path]:  # noqa: F811
    """A 256 KiB tmpfs to capture into (mounting needs root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_disk_full_ends_the_capture_with_enospc_and_keeps_every_complete_chunk(
    rpcapd: Rpcapd, tiny_disk: Path, tmp_path: Path,
) -> None:
    duration = 20.0
    stream = Stream(b"full")
    out = tiny_disk / "session"
    proc = cli(capture_args(rpcapd, stream.udp.port, out, duration), tmp_path)
    started = time.monotonic()
    try:
        stdout, stderr = (text.decode() for text in proc.communicate(timeout=duration + END_SLACK_SECONDS))
    finally:
        if proc.poll() is None:
            proc.kill()
        ended = time.monotonic()
        stream.stop()
    assert ended - started < duration, "a full disk ends the capture at once, not at its deadline"
    assert proc.returncode == 1, stderr
    assert "No space left on device" in stderr and stderr.count("rtphelper capture: error:") == 1
    (host,) = json.loads(stdout)["hosts"]
    assert "No space left on device" in host["error"]
    # The chunk being written when the disk filled is cut to its last complete record by repair.
    repair(out)
    state = assert_no_chunk_lost(out)
    assert len(state.chunks) >= 2  # 64 KiB chunks rolled before the 256 KiB disk filled
    got = written(chunks_on_disk(out), stream.udp.port)
    assert_in_order(got, stream.sent, drops_of(host))
