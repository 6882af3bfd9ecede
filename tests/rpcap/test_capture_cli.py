"""`rtphelper capture` / `diagnose` end to end against real rpcapd: JSON shape, exit codes, messages, kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from rtpcore.capture.manifest import MANIFEST_NAME, Manifest
from rtpcore.cli import main
from rtpcore.pcap.reader import open_capture
from tests.rpcap import conftest as rpcapd_conftest
from tests.rpcap.test_capture_engine import Receiver, payloads, wait_for, written

REPO = Path(__file__).resolve().parents[2]
HOST_KEYS = {"host", "address", "interface", "packets", "bytes", "drops", "gaps", "files", "error"}


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config/runtime.env of the developer's; fast reconnects."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("RTPHELPER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RTPHELPER_RPCAP_RECONNECT_BASE_SECONDS", "0.1")
    monkeypatch.setenv("RTPHELPER_RPCAP_RECONNECT_MAX_SECONDS", "0.2")
    monkeypatch.setenv("RTPHELPER_STORAGE_MODE", "local")  # S3 is covered in tests/storage


def hosts_yaml(path: Path, envs: dict[str, list[dict[str, object]]]) -> Path:
    """A hosts.yaml with one region "lab" / sub-region "lab-1" per environment."""
    data = {"rpcap": {"default_port": 2002, "auth_mode": None},
            "environments": {env: {"regions": {"lab": {"sub-region": {"lab-1": {"hosts": hosts}}}}}
                             for env, hosts in envs.items()}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def send_later(receiver: Receiver, data: list[bytes], delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), receiver.send(data)))
    thread.start()
    return thread


def test_capture_json_shape_and_files(rpcapd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = hosts_yaml(tmp_path / "hosts.yaml", {"TEST": [
        {"id": "lab-a", "address": "127.0.0.1", "port": rpcapd.port, "interfaces": ["lo"]}]})
    udp = Receiver()
    sent = payloads(b"cli", 50)
    sender = send_later(udp, sent, 0.6)
    out = tmp_path / "new" / "session"
    code, stdout, _ = run(["capture", "--env", "TEST", "--host", "lab-a", "--filter", f"udp port {udp.port}",
                           "--duration", "1.5", "--out", str(out), "--config", str(cfg), "--json"], capsys)
    sender.join()
    udp.close()
    assert code == 0
    lines = stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(result) == {"hosts", "session", "storage"} and result["session"] == str(out.resolve())
    assert result["storage"]["mode"] == "local"
    (host,) = result["hosts"]
    assert set(host) == HOST_KEYS and set(host["drops"]) == {"client", "server", "interface"}
    assert (host["host"], host["address"], host["interface"], host["error"], host["gaps"]) == (
        "lab-a", "127.0.0.1", "lo", None, [])
    assert host["files"] == [str(out.resolve() / "raw" / "lab-lab-a-0001.pcap")]
    assert written([Path(f) for f in host["files"]]) == sent and host["packets"] == len(sent)
    state = Manifest.read(out / MANIFEST_NAME)
    assert [c.name for c in state.chunks] == ["lab-lab-a-0001.pcap"] and state.sessions[-1]["ended"] == "deadline"


def test_one_failing_interface_exits_1_and_keeps_the_other(rpcapd, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = hosts_yaml(tmp_path / "hosts.yaml", {"TEST": [
        {"id": "lab-b", "address": "127.0.0.1", "port": rpcapd.port, "interfaces": ["lo", "nosuch9"]}]})
    code, stdout, stderr = run(["capture", "--env", "TEST", "--host", "lab-b", "--duration", "0.5", "--filter",
                                "udp port 9", "--out", str(tmp_path / "s"), "--config", str(cfg), "--quiet"], capsys)
    assert code == 1
    assert "lab-b nosuch9: rpcap://127.0.0.1:" in stderr
    assert "interface 'nosuch9' not found on the host; it has: " in stderr
    assert sorted(p.name for p in (tmp_path / "s" / "raw").iterdir()) == ["lab-lab-b-lo-0001.pcap",
                                                                         "lab-lab-b-lo-0001.pcap.idx.json"]
    assert "ok   lab-lab-b-lo lo:" in stdout and "FAIL lab-lab-b-nosuch9 nosuch9:" in stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--env", "NOPE", "--host", "x"], "unknown environment 'NOPE' in hosts.yaml; known: TEST"),
    (["--env", "TEST", "--host", "ghost"], "unknown host 'ghost' in environment TEST; known: lab-c"),
    (["--env", "TEST", "--host", "lab-c", "--filter", "udp prot 5"], "--filter 'udp prot 5' does not compile: "),
    (["--address", "127.0.0.1"], "--address needs exactly one --interface"),
    (["--address", "127.0.0.1", "--interface", "lo", "--env", "TEST"], "do not combine it with --env/--host"),
    (["--interface", "lo"], "give --env ENV with --host ID"),
    (["--env", "TEST", "--host", "lab-c", "--max-bytes", "500"], "--max-bytes 500: must be at least"),
    (["--env", "TEST", "--host", "lab-c", "--interface", "eth7"], "lab-c: interface eth7 is not configured"),
])
def test_usage_and_config_errors_exit_2(argv: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = hosts_yaml(tmp_path / "hosts.yaml", {"TEST": [
        {"id": "lab-c", "address": "127.0.0.1", "port": 9, "interfaces": ["lo"]}]})
    out = tmp_path / "out"
    code, stdout, stderr = run(["capture", *argv, "--duration", "1", "--out", str(out), "--config", str(cfg)], capsys)
    assert code == 2 and stdout == ""
    assert stderr.startswith("rtphelper capture: error: ") and message in stderr and stderr.count("\n") == 1
    assert not out.exists()  # nothing is created before the input is known good


def test_output_folder_problems_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / MANIFEST_NAME).write_text("")
    base = ["capture", "--address", "127.0.0.1", "--interface", "lo", "--duration", "1", "--out"]
    code, _, stderr = run([*base, str(used)], capsys)
    assert code == 2 and f"{used} already holds a capture session (manifest.jsonl: a capture still running or " \
        "crashed); choose a new --out folder" in stderr and f"rtphelper repair {used}" in stderr
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, stderr = run([*base, str(a_file / "sub")], capsys)
    assert code == 2 and f"{a_file / 'sub'}: output folder is not writable: Not a directory" in stderr


def test_a_capture_that_captured_nothing_can_be_retried_in_the_same_folder(
    rpcapd, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "retry"
    closed = rpcapd_conftest._free_port()
    base = ["capture", "--address", "127.0.0.1", "--interface", "lo", "--out", str(out), "--storage", "local",
            "--quiet"]
    code, _, stderr = run([*base, "--duration", "1", "--port", str(closed)], capsys)
    assert code == 1 and "connection refused" in stderr
    assert (out / MANIFEST_NAME).exists() and not list((out / "raw").iterdir())
    udp = Receiver()
    sent = payloads(b"retry", 100)
    def send_when_capturing() -> None:
        wait_for(lambda: any((out / "raw").glob("*.pcap")), seconds=10)
        time.sleep(0.3)
        udp.send(sent)

    sender = threading.Thread(target=send_when_capturing)
    sender.start()
    code, _, stderr = run([*base, "--duration", "3", "--port", str(rpcapd.port), "--filter",
                           f"udp dst port {udp.port}"], capsys)
    sender.join()
    udp.close()
    assert code == 0, stderr
    files = sorted((out / "raw").glob("*.pcap"))
    assert written(files, udp.port) == sent
    state = Manifest.read(out / MANIFEST_NAME)
    assert state.finished and [c.name for c in state.chunks] == [f.name for f in files]
    (aside,) = out.glob("manifest.failed-*.jsonl")  # the failed attempt's record is kept, not lost
    assert "connection refused" in aside.read_text()
    # A folder that holds data is never reused.
    code, _, stderr = run([*base, "--duration", "1", "--port", str(rpcapd.port)], capsys)
    assert code == 2 and f"{out} already holds a capture session (manifest.jsonl: 1 chunk(s))" in stderr


def test_unreachable_and_refused_auth_exit_1(rpcapd_pwd, system_user, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    closed = rpcapd_conftest._free_port()
    code, _, stderr = run(["capture", "--address", "127.0.0.1", "--port", str(closed), "--interface", "lo",
                           "--duration", "1", "--out", str(tmp_path / "a"), "--quiet"], capsys)
    assert code == 1 and f"error: 127.0.0.1 lo: rpcap://127.0.0.1:{closed}: connection refused" in stderr
    user, password = system_user
    code, _, stderr = run(["capture", "--address", "127.0.0.1", "--port", str(rpcapd_pwd.port), "--interface", "lo",
                           "--auth", f"{user}:{password}-wrong", "--duration", "1", "--out", str(tmp_path / "b"),
                           "--quiet"], capsys)
    assert code == 1 and f"authentication as {user!r} refused" in stderr


def cli_process(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTPHELPER_")} | {"RTPHELPER_STORAGE_MODE": "local"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-m", "rtpcore.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Traffic:
    """Datagrams at about 2000 per second from a thread until stopped; remembers what it sent."""

    def __init__(self) -> None:
        self.udp = Receiver()
        self.sent: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            batch = payloads(b"kill", 20, start=i, size=150)
            self.udp.send(batch, pause_every=1000)
            self.sent += batch
            i += 20
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.udp.close()


def test_sigkill_then_repair_accounts_for_every_chunk(rpcapd, tmp_path: Path) -> None:
    traffic = Traffic()
    out = tmp_path / "killed"
    proc = cli_process(["capture", "--address", "127.0.0.1", "--port", str(rpcapd.port), "--interface", "lo",
                        "--filter", f"udp port {traffic.udp.port}", "--duration", "30", "--out", str(out),
                        "--max-bytes", "64KiB", "--quiet"], tmp_path)
    try:
        wait_for(lambda: len(list((out / "raw").glob("*.pcap"))) >= 3, seconds=10)
        time.sleep(1.2)  # past a flush interval: the open chunk has records on disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        traffic.stop()
    before = Manifest.read(out / MANIFEST_NAME)
    assert before.sessions[-1]["status"] == "started"
    listed = {c.name for c in before.chunks}
    # The chunk being written when the kill landed; none when it landed between closing one chunk and
    # creating the next (rare, but a real crash can do it too).
    leftover = [f for f in sorted((out / "raw").glob("*.pcap")) if f.name not in listed]
    assert len(leftover) <= 1 and len(before.open_chunks) <= 1
    repair = [sys.executable, "-m", "rtpcore.cli", "repair", str(out), "--json"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first_run = subprocess.run(repair, capture_output=True, text=True, timeout=60, env=env)
    assert first_run.returncode == 0, first_run.stderr
    doc = json.loads(first_run.stdout)
    assert not doc["problems"] and doc["changed"] == bool(leftover or before.open_chunks)
    again = subprocess.run(repair, capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False, "repair is idempotent"
    state = Manifest.read(out / MANIFEST_NAME)
    files = sorted((out / "raw").glob("*.pcap"))
    assert sorted(c.name for c in state.chunks) == [f.name for f in files] and not state.open_chunks
    if leftover:
        assert state.chunk(leftover[0].name).reason == "repair"
        assert any(a["action"] in ("recorded", "truncated") for a in doc["actions"])
    got = written(files)  # every file reads to the end without error
    for chunk, path in zip(sorted(state.chunks, key=lambda c: c.name), files):
        with open_capture(path) as reader:
            assert sum(1 for _ in reader) == chunk.packets
    assert len(got) > 300
    first = traffic.sent.index(got[0])  # the traffic started before the capture process did
    assert got == traffic.sent[first:first + len(got)]  # in order, none lost or doubled up to the kill


def test_sigterm_is_a_cooperative_stop(rpcapd, tmp_path: Path) -> None:
    out = tmp_path / "term"
    proc = cli_process(["capture", "--address", "127.0.0.1", "--port", str(rpcapd.port), "--interface", "lo",
                        "--filter", "udp port 9", "--duration", "30", "--out", str(out), "--json", "--quiet"],
                       tmp_path)
    wait_for(lambda: any((out / "raw").glob("*.pcap")), seconds=10)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert b"SIGTERM: stopping" in stderr
    assert json.loads(stdout)["hosts"][0]["error"] is None
    state = Manifest.read(out / MANIFEST_NAME)
    assert state.sessions[-1]["ended"] == "stopped" and not state.open_chunks and len(state.chunks) == 1


def test_diagnose_lines_and_exit_codes(rpcapd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    closed = rpcapd_conftest._free_port()
    cfg = hosts_yaml(tmp_path / "hosts.yaml", {
        "GOOD": [{"id": "fine", "address": "127.0.0.1", "port": rpcapd.port, "interfaces": ["lo"]}],
        "BAD": [{"id": "down", "address": "127.0.0.1", "port": closed, "interfaces": ["lo"]},
                {"id": "wrongif", "address": "127.0.0.1", "port": rpcapd.port, "interfaces": ["lo", "pkt0"]}],
    })
    code, stdout, _ = run(["diagnose", "--config", str(cfg)], capsys)
    assert code == 1
    fine, down, wrongif = stdout.splitlines()
    assert fine.startswith(f"OK   GOOD/lab/fine 127.0.0.1:{rpcapd.port}: tcp ok; auth ok (null); "
                           "interfaces ok (lo Ethernet); libpcap ok (libpcap version ")
    assert down.startswith(f"FAIL BAD/lab/down 127.0.0.1:{closed}: tcp FAILED (connection refused on port {closed}")
    assert "auth - (not checked)" in down and "libpcap ok" in down
    assert wrongif.startswith("FAIL BAD/lab/wrongif") and "auth ok (null)" in wrongif
    assert "interfaces FAILED (pkt0 not on the host; it has: " in wrongif
    code, stdout, _ = run(["diagnose", "--config", str(cfg), "--env", "GOOD", "--json"], capsys)
    result = json.loads(stdout)
    assert code == 0 and result["ok"] is True and [h["host"] for h in result["hosts"]] == ["fine"]
    assert [c["name"] for c in result["hosts"][0]["checks"]] == ["tcp", "auth", "interfaces", "libpcap"]
    script = subprocess.run([sys.executable, str(REPO / "scripts" / "rpcap_diagnose.py"), "--config", str(cfg)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert script.returncode == 1 and script.stdout.splitlines()[0] == fine
    code, _, stderr = run(["diagnose", "--config", str(cfg), "--env", "NOPE"], capsys)
    assert code == 2 and "unknown environment 'NOPE'" in stderr
