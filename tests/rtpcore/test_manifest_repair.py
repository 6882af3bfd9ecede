"""Manifest read-back and crash repair: a SIGKILLed capture ends with every chunk valid and listed exactly once."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rtpcore.capture import Manifest, repair_session
from rtpcore.capture.manifest import ChunkRecord, GapRecord, OpenRecord
from rtpcore.pcap.linktypes import LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.rolling import ChunkInfo, RollingPcapWriter
from tests.rtpcore.test_rolling import capinfos_counts

REPO = Path(__file__).resolve().parents[2]
TS0 = 1_700_000_000_000_000_000

CHILD = textwrap.dedent("""
    import random, sys, time
    from pathlib import Path
    from rtpcore.capture import Manifest
    from rtpcore.pcap.rolling import RollingPcapWriter

    session = Path(sys.argv[1])
    manifest = Manifest.for_session(session)
    manifest.start(hosts=["mh1", "mh2"])
    writers = []
    for host, iface, stem, linktype in (("mh1", None, "eu-mh1", 1), ("mh2", "eth1", "eu-mh2-eth1", 276)):
        writers.append(RollingPcapWriter(
            session / "raw", stem, linktype, max_bytes=64 * 1024, flush_interval=0,
            on_open=lambda p, h=host, i=iface, lt=linktype: manifest.open_chunk(h, i, p.name, linktype=lt),
            on_close=lambda c, h=host, i=iface: manifest.append_chunk(h, i, c)))
    rng = random.Random(7)
    ts = 1_700_000_000_000_000_000
    while True:
        for w in writers:
            batch = []
            for _ in range(40):
                ts += 20_000_000
                data = rng.randbytes(rng.randint(60, 400))
                batch.append((ts, data, len(data)))
            w.write_many(batch)
        time.sleep(0.001)
""")


def records_in_manifest(path: Path) -> list[dict]:
    """Every parseable line, independently of Manifest.read."""
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def whole_records(path: Path) -> tuple[int, int]:
    """Independent walk of a classic LE pcap: (whole records, byte offset where they end)."""
    data = path.read_bytes()
    offset, count = 24, 0
    while offset + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, offset + 8)[0]
        if offset + 16 + caplen > len(data):
            break
        offset += 16 + caplen
        count += 1
    return count, offset


def test_sigkilled_capture_is_repaired_and_fully_accounted(tmp_path: Path, tshark: str) -> None:
    session = tmp_path / "session"
    raw = session / "raw"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(session)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while len(list(raw.glob("eu-mh2-eth1-*.pcap"))) < 4:
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        assert time.monotonic() < deadline, "child wrote too few chunks"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.stderr is not None
    child.stderr.close()

    before = Manifest.read(session / "manifest.jsonl")
    closed_before = {c.name for c in before.chunks}
    assert {o.name for o in before.open_chunks} <= {p.name for p in raw.glob("*.pcap")}
    # SIGKILL tears a record only when it lands inside a write() syscall; make the tear certain for mh1's
    # live chunk (as a power cut would), and add a created-but-headerless next chunk of mh2.
    torn = max(raw.glob("eu-mh1-*.pcap"))
    if torn.name in closed_before:  # killed between closing a chunk and creating the next: create it
        sibling = torn
        torn = raw / f"eu-mh1-{int(sibling.stem.rsplit('-', 1)[1]) + 1:04d}.pcap"
        torn.write_bytes(sibling.read_bytes()[:24])
    torn_packets, boundary = whole_records(torn)
    if boundary == torn.stat().st_size:
        with open(torn, "ab") as f:
            f.write(struct.pack("<IIII", TS0 // 10**9, 0, 200, 200) + b"\x55" * 50)
    torn_cut = torn.stat().st_size - boundary
    last_mh2 = max(raw.glob("eu-mh2-eth1-*.pcap"))
    headerless = raw / f"eu-mh2-eth1-{int(last_mh2.stem.rsplit('-', 1)[1]) + 1:04d}.pcap"
    headerless.write_bytes(b"")

    report = repair_session(session)

    actions = {a.file.name: a for a in report.actions}
    assert actions[torn.name].action == "truncated"
    assert (actions[torn.name].packets, actions[torn.name].bytes_cut) == (torn_packets, torn_cut)
    assert actions[headerless.name].action == "header-rewritten" and actions[headerless.name].packets == 0
    with open_capture(headerless) as r:
        assert r.linktype == LINKTYPE_LINUX_SLL2  # taken from its own stem's siblings
    assert headerless.read_bytes() == last_mh2.read_bytes()[:24]

    files = sorted(raw.glob("*.pcap"))
    counts = capinfos_counts(*files)  # every file valid: capinfos exits 0 with nothing on stderr
    chunk_lines = [r for r in records_in_manifest(session / "manifest.jsonl") if r.get("event") == "chunk"]
    assert sorted(r["name"] for r in chunk_lines) == [p.name for p in files]  # each file exactly once
    for r in chunk_lines:
        path = raw / r["name"]
        assert r["packets"] == counts[r["name"]]
        assert r["bytes"] == path.stat().st_size
        assert r["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert r["host"] == ("mh1" if r["name"].startswith("eu-mh1-") else "mh2")
    assert {r["name"] for r in chunk_lines if r["reason"] == "repair"} == set(actions)
    after = Manifest.read(session / "manifest.jsonl")
    assert after.open_chunks == ()

    manifest_bytes = (session / "manifest.jsonl").read_bytes()
    file_bytes = {p.name: p.read_bytes() for p in files}
    again = repair_session(session)
    assert again.actions == () and not again.changed
    assert (session / "manifest.jsonl").read_bytes() == manifest_bytes
    assert {p.name: p.read_bytes() for p in sorted(raw.glob("*.pcap"))} == file_bytes


def test_manifest_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    info = ChunkInfo("eu-h1-0001.pcap", tmp_path / "eu-h1-0001.pcap", 1, 12, 1500, TS0, TS0 + 5, "ab" * 32, "size")
    with Manifest(path) as m:
        m.start(hosts=["h1"], duration_s=60)
        m.open_chunk("h1", None, "eu-h1-0001.pcap", linktype=1)
        m.append_chunk("h1", None, info)
        m.open_chunk("h1", "eth0", "eu-h1-eth0-0002.pcap")
        m.append_gap("h1", TS0, TS0 + 10, "rpcap reconnect", interface="eth0")
        m.finish(stop="duration")
    state = Manifest.read(path)
    assert state.problems == ()
    assert state.chunks == (ChunkRecord("h1", None, "eu-h1-0001.pcap", 12, 1500, TS0, TS0 + 5, "ab" * 32, "size"),)
    assert state.gaps == (GapRecord("h1", "eth0", TS0, TS0 + 10, "rpcap reconnect"),)
    assert state.opened == (OpenRecord("h1", None, "eu-h1-0001.pcap", 1), OpenRecord("h1", "eth0", "eu-h1-eth0-0002.pcap", None))
    assert state.open_chunks == (OpenRecord("h1", "eth0", "eu-h1-eth0-0002.pcap", None),)
    assert [(s["status"], s.get("hosts"), s.get("stop")) for s in state.sessions] == [
        ("started", ["h1"], None), ("finished", None, "duration")]
    assert state.finished
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 7 and all(json.loads(line)["time_ns"] > 0 for line in lines[:-1])


def test_torn_and_bad_manifest_lines_are_ignored_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as m:
        m.start()
        m.append_gap("h1", 1, 2, "crash")
    good = path.read_bytes()
    path.write_bytes(good + b'{"event":"chunk","host":"h1","name":"eu-h1-00')
    state = Manifest.read(path)
    assert state.chunks == () and len(state.gaps) == 1
    assert state.problems == (f"{path} line 3: torn last line ignored (the writer stopped mid-line): "
                              "'{\"event\":\"chunk\",\"host\":\"h1\",\"name\":\"eu-h1-00'",)
    with Manifest(path) as m:  # the next writer must not glue its line onto the torn one
        m.append_gap("h1", 3, 4, "restart")
    state = Manifest.read(path)
    assert [g.why for g in state.gaps] == ["crash", "restart"]
    assert state.problems == (f"{path} line 3: not a JSON object, ignored: "
                              "'{\"event\":\"chunk\",\"host\":\"h1\",\"name\":\"eu-h1-00'",)
    with open(path, "ab") as f:
        f.write(b'{"event":"gap","host":"h1","from_ns":1,"why":"x"}\n{"event":"party"}\n')
    problems = Manifest.read(path).problems
    assert problems[1:] == (f"{path} line 5: 'gap' event lacks field 'to_ns', ignored",
                            f"{path} line 6: 'party' event ignored: unknown event 'party'")


def test_repair_small_files_garbage_missing_and_hardlinks(tmp_path: Path, tshark: str) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    m = Manifest.for_session(tmp_path)
    m.start()
    m.open_chunk("h9", "eth2", "ap-h9-eth2-0001.pcap", linktype=LINKTYPE_RAW)
    good = RollingPcapWriter(raw, "ap-h9-eth2", LINKTYPE_RAW, start_index=2)  # a closed, listed sibling
    good.write(TS0, b"\x45" + bytes(27))
    m.append_chunk("h9", "eth2", good.close())
    (raw / "ap-h9-eth2-0001.pcap").write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")      # 6 bytes of a header
    m.append_chunk("h9", None, ChunkInfo("gone-0001.pcap", raw / "gone-0001.pcap", 1, 0, 24, None, None, "0" * 64,
                                         "stop"))
    (raw / "notes.pcap").write_bytes(b"hello world, not a capture at all")
    (raw / "tiny.pcap").write_bytes(b"GIF8")
    w = RollingPcapWriter(tmp_path, "user", 1)
    w.write(TS0, b"x" * 30)
    w.close()
    os.link(w.chunks[0].path, raw / "imported.pcap")
    with open(w.chunks[0].path, "ab") as f:
        f.write(b"\x01\x02\x03")  # torn, but it is the user's file: repair must not cut it
    outside = w.chunks[0].path
    m.close()

    report = repair_session(tmp_path)
    by_name = {a.file.name: (a.action, a.packets, a.bytes_cut) for a in report.actions}
    assert by_name == {
        "ap-h9-eth2-0001.pcap": ("header-rewritten", 0, 6),
        "imported.pcap": ("skipped", 0, 0),
        "notes.pcap": ("skipped", 0, 0),
        "tiny.pcap": ("skipped", 0, 0),
    }
    assert (raw / "ap-h9-eth2-0001.pcap").read_bytes() == (raw / "ap-h9-eth2-0002.pcap").read_bytes()[:24]
    assert capinfos_counts(raw / "ap-h9-eth2-0001.pcap") == {"ap-h9-eth2-0001.pcap": 0}
    assert outside.stat().st_size == 24 + 16 + 30 + 3
    assert report.problems == (f"{raw / 'gone-0001.pcap'}: listed in the manifest but missing from disk",)
    state = Manifest.read(tmp_path / "manifest.jsonl")
    repaired = state.chunk("ap-h9-eth2-0001.pcap")
    assert repaired is not None and (repaired.host, repaired.interface, repaired.reason) == ("h9", "eth2", "repair")
    assert state.open_chunks == ()
    assert repair_session(tmp_path).actions == tuple(a for a in report.actions if a.action == "skipped")


def test_repair_header_from_open_event_when_no_sibling(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    with Manifest.for_session(tmp_path) as m:
        m.open_chunk("h1", None, "eu-h1-0001.pcap", linktype=LINKTYPE_LINUX_SLL2)
    (raw / "eu-h1-0001.pcap").write_bytes(b"")
    report = repair_session(tmp_path)
    assert [a.detail for a in report.actions] == [
        "0-byte partial header replaced by an empty pcap (link type 276 from the manifest's open event)"]
    with open_capture(raw / "eu-h1-0001.pcap") as r:
        assert (r.linktype, list(r)) == (LINKTYPE_LINUX_SLL2, [])


def test_repair_without_manifest_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "x-0001.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    report = repair_session(tmp_path)
    assert report.actions == () and "no manifest" in report.problems[0]
    assert (tmp_path / "raw" / "x-0001.pcap").read_bytes() == b"\xd4\xc3\xb2\xa1"
    assert not (tmp_path / "manifest.jsonl").exists()
