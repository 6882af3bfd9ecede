"""CaptureSession against real rpcapd processes on 127.0.0.1, capturing on lo: what was sent is what was written."""
from __future__ import annotations

import hashlib
import json
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rtpcore.capture.engine import DEFAULT_FILTER, CaptureSession, CaptureTarget, ReconnectPolicy, adhoc_target
from rtpcore.capture.manifest import MANIFEST_NAME, Manifest, ManifestState
from rtpcore.capture.stats import HostSummary
from rtpcore.pcap.reader import open_capture
from tests.rpcap import conftest as rpcapd_conftest

WAIT = 5.0
FAST = ReconnectPolicy(base_seconds=0.2, max_seconds=0.4, max_attempts=5)


# -- traffic and decoding ---------------------------------------------------------------------------


class Receiver:
    """A bound UDP socket on 127.0.0.1 (no ICMP port-unreachable noise) and a sender aimed at it."""

    def __init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.port = self.rx.getsockname()[1]
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind(("127.0.0.1", 0))

    def send(self, payloads: list[bytes], pause_every: int = 50) -> None:
        for i, data in enumerate(payloads, 1):
            self.tx.sendto(data, ("127.0.0.1", self.port))
            if i % pause_every == 0:
                time.sleep(0.001)  # the receiver's buffer is not drained: let the kernel breathe

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@pytest.fixture
def udp() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def payloads(tag: bytes, n: int, start: int = 0, size: int = 0) -> list[bytes]:
    """Unique datagrams with a counter (and varying padding) so loss, duplication and reordering all show."""
    return [tag + b"-%06d-" % i + bytes([i % 251]) * (size or i % 61) for i in range(start, start + n)]


def udp_of(frame: bytes) -> tuple[int, int, bytes] | None:
    """(sport, dport, payload) of an Ethernet/IPv4/UDP frame as captured on lo, None for anything else."""
    if len(frame) < 42 or struct.unpack_from(">H", frame, 12)[0] != 0x0800 or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    sport, dport, length = struct.unpack_from(">HHH", frame, 14 + ihl)
    return sport, dport, frame[14 + ihl + 8: 14 + ihl + length]


def written(files: list[Path] | tuple[Path, ...], port: int | None = None) -> list[bytes]:
    """UDP payloads (to `port`, or all) in the chunk files, in file then record order."""
    out = []
    for path in files:
        with open_capture(path) as reader:
            for frame in reader:
                parsed = udp_of(frame.data)
                if parsed is not None and (port is None or parsed[1] == port):
                    out.append(parsed[2])
    return out


def wait_for(condition: Callable[[], bool], seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def target(server: rpcapd_conftest.Rpcapd, label: str = "test-lo", **kwargs: object) -> CaptureTarget:
    return CaptureTarget(label, "test", "test", "127.0.0.1", server.port, str(kwargs.pop("interface", "lo")), label,
                         **kwargs)  # type: ignore[arg-type]


def session(targets: list[CaptureTarget], out: Path, **kwargs: object) -> CaptureSession:
    kwargs.setdefault("duration", 30)
    kwargs.setdefault("reconnect", FAST)
    return CaptureSession(targets, out, **kwargs)  # type: ignore[arg-type]


def capturing(s: CaptureSession) -> None:
    """Wait until every target has its chunk open (the capture is running on rpcapd)."""
    wait_for(lambda: all(any(s.raw.glob(f"{t.label}-*.pcap")) for t in s.targets))
    time.sleep(0.1)  # the chunk opens right after STARTCAP's reply; let rpcapd's capture thread settle


def received(s: CaptureSession, index: int, n: int) -> Callable[[], bool]:
    return lambda: s.progress()[index].packets >= n


def manifest_of(root: Path) -> ManifestState:
    return Manifest.read(root / MANIFEST_NAME)


def check_chunks_against_manifest(root: Path, host: HostSummary) -> None:
    """Every file of the host is listed once with its true size, hash and packet count."""
    state = Manifest.read(root / MANIFEST_NAME)
    records = {c.name: c for c in state.chunks}
    assert not state.problems and not state.open_chunks
    for path in host.files:
        assert path.is_absolute() and path.parent == root / "raw"
        record = records[path.name]
        data = path.read_bytes()
        assert record.bytes == len(data)
        assert record.sha256 == hashlib.sha256(data).hexdigest()
        with open_capture(path) as reader:
            assert record.packets == sum(1 for _ in reader)


# -- tests -------------------------------------------------------------------------------------------


def test_every_datagram_written_once_in_order_and_the_filter_holds(rpcapd, udp, tmp_path: Path) -> None:
    other = Receiver()
    sent = payloads(b"media", 400)
    s = session([target(rpcapd)], tmp_path, filter_expression=f"udp and dst port {udp.port}", stats_interval=0.3)
    s.start()
    try:
        capturing(s)
        other.send(payloads(b"noise", 50))  # same host, another port: outside the filter
        udp.send(sent)
        wait_for(received(s, 0, len(sent)))
        time.sleep(0.4)  # a stats round while streaming
    finally:
        s.stop()
        other.close()
    summary = s.wait()
    host = summary.hosts[0]
    assert host.error is None and host.gaps == () and summary.ended == "stopped"
    assert written(host.files) == sent  # nothing else on the port-filtered capture, each datagram once
    assert written(host.files, other.port) == []
    frames = [f for path in host.files for f in open_capture(path)]
    assert host.packets == len(sent) == len(frames)
    assert host.bytes == sum(len(f.data) for f in frames) == sum(14 + 20 + 8 + len(d) for d in sent)
    assert (host.drops.client, host.drops.server, host.drops.interface) == (0, 0, 0)
    check_chunks_against_manifest(tmp_path, host)
    state = manifest_of(tmp_path)
    assert state.sessions[0]["filter"] == f"udp and dst port {udp.port}"
    assert state.sessions[-1]["status"] == "finished" and state.sessions[-1]["hosts"][0]["packets"] == len(sent)
    assert [c.reason for c in state.chunks] == ["stop"]


def test_empty_filter_captures_udp_only(rpcapd, udp, tmp_path: Path) -> None:
    sent = payloads(b"plain", 50)
    s = session([target(rpcapd)], tmp_path, filter_expression="  ")
    assert s.filter_expression == DEFAULT_FILTER
    listener = socket.create_server(("127.0.0.1", 0))
    s.start()
    try:
        capturing(s)
        with socket.create_connection(listener.getsockname()) as tcp, listener.accept()[0] as peer:
            tcp.sendall(b"tcp-bytes-not-wanted")
            peer.recv(100)
        udp.send(sent)
        wait_for(lambda: len(written([p for p in s.raw.glob("*.pcap")], udp.port)) == len(sent))
    finally:
        s.stop()
        listener.close()
    host = s.wait().hosts[0]
    frames = [f.data for path in host.files for f in open_capture(path)]
    assert all(udp_of(f) is not None for f in frames)  # no TCP frame (the handshake above) was captured
    assert written(host.files, udp.port) == sent


def test_two_hosts_each_write_a_complete_series(rpcapd, rpcapd_disposable, udp, tmp_path: Path) -> None:
    sent = payloads(b"both", 300)
    targets = [target(rpcapd, "eu-one"), target(rpcapd_disposable, "us-two")]
    s = session(targets, tmp_path, filter_expression=f"udp port {udp.port}", max_bytes=6000)
    s.start()
    try:
        capturing(s)
        udp.send(sent)
        wait_for(lambda: all(p.packets >= len(sent) for p in s.progress()))
    finally:
        s.stop()
    summary = s.wait()
    assert summary.ok
    for host, label in zip(summary.hosts, ("eu-one", "us-two")):
        assert len(host.files) > 1 and all(p.name.startswith(f"{label}-") for p in host.files)
        assert [p.name for p in host.files] == [f"{label}-{i:04d}.pcap" for i in range(1, len(host.files) + 1)]
        assert written(host.files) == sent
        check_chunks_against_manifest(tmp_path, host)


def test_size_rollover_keeps_every_chunk_under_the_limit(rpcapd, udp, tmp_path: Path) -> None:
    sent = payloads(b"size", 200, size=100)
    max_bytes = 24 + 10 * (16 + 14 + 20 + 8 + len(sent[0]))  # header + exactly 10 records
    s = session([target(rpcapd)], tmp_path, filter_expression=f"udp port {udp.port}", max_bytes=max_bytes)
    s.start()
    try:
        capturing(s)
        udp.send(sent)
        wait_for(received(s, 0, len(sent)))
    finally:
        s.stop()
    host = s.wait().hosts[0]
    assert len(host.files) == 20 and all(p.stat().st_size == max_bytes for p in host.files)
    assert written(host.files) == sent
    reasons = [c.reason for c in manifest_of(tmp_path).chunks]
    assert reasons == ["size"] * 19 + ["stop"]


def test_time_rollover_with_max_seconds_1(rpcapd, udp, tmp_path: Path) -> None:
    s = session([target(rpcapd)], tmp_path, filter_expression=f"udp port {udp.port}", max_seconds=1)
    sent: list[bytes] = []
    s.start()
    try:
        capturing(s)
        for i in range(12):  # 2.4 s of traffic
            batch = payloads(b"time", 5, start=5 * i)
            udp.send(batch)
            sent += batch
            time.sleep(0.2)
        wait_for(received(s, 0, len(sent)))
    finally:
        s.stop()
    host = s.wait().hosts[0]
    chunks = manifest_of(tmp_path).chunks
    assert len(chunks) >= 3 and [c.reason for c in chunks][:2] == ["time", "time"]
    assert all(c.last_ns - c.first_ns < 10**9 for c in chunks if c.packets)
    assert written(host.files) == sent


def test_rpcapd_killed_and_restarted_on_the_same_port(rpcapd_disposable, udp, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = payloads(b"before", 100), payloads(b"after", 100, start=100)
    s = session([target(rpcapd_disposable)], tmp_path, filter_expression=f"udp port {udp.port}")
    s.start()
    restarted = None
    try:
        capturing(s)
        udp.send(before)
        wait_for(received(s, 0, len(before)))
        rpcapd_disposable.kill()
        killed_ns = time.time_ns()
        wait_for(lambda: s.progress()[0].state == "reconnecting")
        monkeypatch.setattr(rpcapd_conftest, "_free_port", lambda: rpcapd_disposable.port)
        restarted = rpcapd_conftest.Rpcapd(rpcapd_disposable.proc.args[0], ["-n"], tmp_path / "rpcapd2.log")
        wait_for(lambda: s.progress()[0].gaps == 1 and s.progress()[0].state == "capturing")
        time.sleep(0.2)
        udp.send(after)
        wait_for(received(s, 0, len(before) + len(after)))
    finally:
        s.stop()
        summary = s.wait()
        if restarted is not None:
            restarted.stop()
    host = summary.hosts[0]
    assert host.error is None
    assert [p.name for p in host.files] == ["test-lo-0001.pcap", "test-lo-0002.pcap"]
    assert written(host.files[:1]) == before and written(host.files[1:]) == after
    (gap,) = host.gaps
    assert killed_ns - 10**9 < gap.from_ns <= gap.to_ns < time.time_ns()
    assert "rpcapd closed the" in gap.why
    state = manifest_of(tmp_path)
    (recorded,) = state.gaps
    assert (recorded.host, recorded.from_ns, recorded.to_ns, recorded.why) == ("test-lo", gap.from_ns, gap.to_ns,
                                                                                gap.why)
    assert [c.reason for c in state.chunks] == ["stop", "stop"]
    assert json.loads(json.dumps(summary.to_json()))["hosts"][0]["gaps"][0]["why"] == gap.why


def test_gave_up_host_fails_while_the_other_keeps_capturing(rpcapd, rpcapd_disposable, udp, tmp_path: Path) -> None:
    sent = payloads(b"survivor", 60)
    targets = [target(rpcapd, "stays"), target(rpcapd_disposable, "dies")]
    policy = ReconnectPolicy(base_seconds=0.1, max_seconds=0.2, max_attempts=2)
    s = session(targets, tmp_path, filter_expression=f"udp port {udp.port}", reconnect=policy)
    s.start()
    try:
        capturing(s)
        rpcapd_disposable.kill()
        wait_for(lambda: s.progress()[1].state == "failed")
        udp.send(sent)
        wait_for(received(s, 0, len(sent)))
    finally:
        s.stop()
    summary = s.wait()
    stays, dies = summary.hosts
    assert not summary.ok and stays.error is None and written(stays.files) == sent
    assert dies.error is not None and dies.error.startswith("dies lo: ")
    assert "2 reconnect attempts failed" in dies.error and "connection refused" in dies.error
    assert len(dies.gaps) == 1 and "gave up after 2 reconnect attempts" in dies.gaps[0].why
    assert dies.files and dies.files[0].name == "dies-0001.pcap"  # the chunk before the outage is kept and listed
    check_chunks_against_manifest(tmp_path, dies)


def test_cooperative_stop_ends_well_before_the_deadline(rpcapd, udp, tmp_path: Path) -> None:
    s = session([target(rpcapd)], tmp_path, duration=60, filter_expression=f"udp port {udp.port}")
    s.start()
    capturing(s)
    udp.send(payloads(b"stop", 20))
    wait_for(received(s, 0, 20))
    t0 = time.monotonic()
    s.stop()
    summary = s.wait(timeout=5)
    assert summary is not None and time.monotonic() - t0 < 2.0
    assert summary.ended == "stopped" and summary.ok
    state = manifest_of(tmp_path)
    assert state.sessions[-1]["ended"] == "stopped" and not state.open_chunks


def test_deadline_ends_the_capture(rpcapd, tmp_path: Path) -> None:
    s = session([target(rpcapd)], tmp_path, duration=0.6, filter_expression="udp port 9")
    t0 = time.monotonic()
    summary = s.run()
    assert 0.6 <= time.monotonic() - t0 < 2.5
    assert summary.ended == "deadline" and summary.ok and len(summary.hosts[0].files) == 1


def test_bad_targets_fail_alone_with_messages(rpcapd, udp, tmp_path: Path) -> None:
    closed_port = rpcapd_conftest._free_port()
    targets = [
        target(rpcapd, "good"),
        CaptureTarget("refused", "t", "t", "127.0.0.1", closed_port, "lo", "refused"),
        target(rpcapd, "noiface", interface="nosuch9"),
    ]
    s = session(targets, tmp_path, filter_expression=f"udp port {udp.port}")
    s.start()
    try:
        wait_for(lambda: any(s.raw.glob("good-*.pcap")))  # only the good one gets as far as a chunk
        time.sleep(0.1)
        udp.send(payloads(b"ok", 10))
        wait_for(received(s, 0, 10))
    finally:
        s.stop()
    good, refused, noiface = s.wait().hosts
    assert good.error is None and good.packets == 10
    assert refused.error.startswith(f"refused lo: rpcap://127.0.0.1:{closed_port}: connection refused")
    assert noiface.error.startswith("noiface nosuch9: ")
    assert "interface 'nosuch9' not found on the host; it has: " in noiface.error and "lo" in noiface.error
    assert refused.files == () and noiface.files == ()


def test_filter_rejected_for_the_remote_link_type(rpcapd, tmp_path: Path) -> None:
    summary = session([target(rpcapd)], tmp_path, duration=1, filter_expression="udp port 99999").run()
    error = summary.hosts[0].error
    assert error is not None and "does not compile" in error and "99999" in error


def test_password_refused_names_the_user(rpcapd_pwd, system_user, tmp_path: Path) -> None:
    user, password = system_user
    bad = target(rpcapd_pwd, auth=(user, password + "x"))
    summary = session([bad], tmp_path, duration=1).run()
    assert summary.hosts[0].error is not None and f"authentication as {user!r} refused" in summary.hosts[0].error
    # Right password: rpcapd runs the session as that (unprivileged) user, so lo cannot be opened; the
    # message must be that one, not an authentication failure.
    good = target(rpcapd_pwd, "pwd-ok", auth=(user, password))
    error = session([good], tmp_path / "ok", duration=0.3).run().hosts[0].error
    assert error is not None and "refused" not in error and "permission" in error


def test_disk_full_stops_that_host_with_enospc(rpcapd, udp, tmp_path: Path) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        s = session([target(rpcapd)], mount / "session", filter_expression=f"udp port {udp.port}")
        s.start()
        capturing(s)
        udp.send(payloads(b"fill", 200, size=1000))  # 200 kB into 64 kB
        summary = s.wait(timeout=WAIT)
        assert summary is not None  # the host ended by itself, before the 30 s duration
        error = summary.hosts[0].error
        assert error is not None and "No space left on device" in error and "test-lo-0001.pcap" in error
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_adhoc_target_labels() -> None:
    t = adhoc_target("2001:db8::1", "eth0.100", 2003)
    assert (t.env, t.region, t.host, t.label, t.endpoint) == (
        "adhoc", "adhoc", "2001:db8::1", "adhoc-2001_db8__1-eth0.100", "[2001:db8::1]:2003")
    with pytest.raises(ValueError, match="repeat a chunk label"):
        CaptureSession([t, t], Path("/nonexistent"), duration=1)


def test_reconnect_backoff_doubles_up_to_the_cap() -> None:
    policy = ReconnectPolicy(base_seconds=2, max_seconds=30, max_attempts=6)
    assert [policy.delay(a) for a in range(1, 7)] == [2, 4, 8, 16, 30, 30]
