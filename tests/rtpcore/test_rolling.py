"""RollingPcapWriter: size/time rollover, numbering, hashes and durability, checked with capinfos and our reader."""
from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pytest

from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.rolling import ChunkInfo, RollingPcapWriter, chunk_name

TS0 = 1_700_000_000_000_000_000
S = 1_000_000_000
RECORD_HEADER = 16
FILE_HEADER = 24


def capinfos_counts(*paths: Path) -> dict[str, int]:
    """Packet count per file from capinfos; fails on any file capinfos calls damaged."""
    out = subprocess.run(["capinfos", "-T", "-r", "-c", "-M", *map(str, paths)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines() if line.strip()]
    return {Path(name).name: int(count) for name, count in rows}


def make_records(n: int, seed: int = 1, *, step_ns: int = 20_000_000) -> list[tuple[int, bytes, int]]:
    """n records with random sizes/contents and µs-exact increasing timestamps."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        data = rng.randbytes(rng.randint(60, 1400))
        out.append((TS0 + i * step_ns + rng.randrange(0, 1000) * 1000, data, len(data)))
    return out


def read_all(paths: list[Path]) -> list[tuple[int, bytes, int]]:
    """Every record of the chunks in order, as (ts_ns, data, orig_len)."""
    got = []
    for p in paths:
        with open_capture(p) as r:
            got += [(f.ts_ns, f.data, f.orig_len) for f in r]
    return got


def test_roll_by_size_chunks_valid_contiguous_and_bounded(tmp_path: Path, tshark: str) -> None:
    max_bytes = 64 * 1024
    records = make_records(600)
    closed: list[ChunkInfo] = []
    opened: list[Path] = []
    w = RollingPcapWriter(tmp_path, "eu-mh1", LINKTYPE_ETHERNET, max_bytes=max_bytes,
                          on_close=closed.append, on_open=opened.append)
    w.write_many(records[:250])
    for ts, data, orig in records[250:300]:
        w.write(ts, data, orig)
    w.write_many(iter(records[300:]))
    last = w.close()
    assert last is not None and last.closed_reason == "stop" and w.current is None
    assert closed == w.chunks and closed[-1] == last

    # the expected split, from the rule: a record goes into a new chunk when it would push the chunk past max_bytes
    sizes = [FILE_HEADER]
    for _, data, _ in records:
        if sizes[-1] > FILE_HEADER and sizes[-1] + RECORD_HEADER + len(data) > max_bytes:
            sizes.append(FILE_HEADER)
        sizes[-1] += RECORD_HEADER + len(data)
    files = sorted(tmp_path.glob("*.pcap"))
    n = len(files)
    assert n == len(sizes) > 4 and [c.bytes for c in closed] == sizes
    assert [p.name for p in files] == [chunk_name("eu-mh1", i) for i in range(1, n + 1)]
    assert [c.path for c in closed] == files == opened
    assert [c.index for c in closed] == list(range(1, n + 1))
    assert [c.closed_reason for c in closed] == ["size"] * (n - 1) + ["stop"]

    counts = capinfos_counts(*files)
    assert sum(counts.values()) == len(records)
    for c in closed:
        assert c.bytes == c.path.stat().st_size <= max_bytes
        assert counts[c.name] == c.packets
        assert c.sha256 == hashlib.sha256(c.path.read_bytes()).hexdigest()
    assert read_all(files) == records  # nothing lost, duplicated or reordered across boundaries
    start = 0
    for c, nxt in zip(closed, closed[1:]):
        start += c.packets
        # it rolled only because the next record would not fit
        assert c.bytes + RECORD_HEADER + len(records[start][1]) > max_bytes
        assert c.first_ns == records[start - c.packets][0] and c.last_ns == records[start - 1][0]
        assert c.last_ns < nxt.first_ns


def test_single_record_larger_than_max_bytes_gets_its_own_chunk(tmp_path: Path) -> None:
    w = RollingPcapWriter(tmp_path, "h", LINKTYPE_ETHERNET, max_bytes=1000)
    w.write(TS0, b"a" * 100)
    w.write(TS0 + 1000, b"b" * 1500)
    w.write(TS0 + 2000, b"c" * 100)
    w.close()
    assert [c.packets for c in w.chunks] == [1, 1, 1]
    assert [c.bytes for c in w.chunks] == [FILE_HEADER + RECORD_HEADER + k for k in (100, 1500, 100)]
    assert read_all([c.path for c in w.chunks]) == [(TS0, b"a" * 100, 100), (TS0 + 1000, b"b" * 1500, 1500),
                                                    (TS0 + 2000, b"c" * 100, 100)]


def test_roll_by_time_on_capture_timestamps(tmp_path: Path, tshark: str) -> None:
    offsets = [0, 3, 9.999, 10, 12, 25, 26, 47]  # seconds after TS0
    records = [(TS0 + int(o * S), bytes([i]) * 80, 80) for i, o in enumerate(offsets)]
    w = RollingPcapWriter(tmp_path, "us-mh2-eth1", LINKTYPE_LINUX_SLL2, max_seconds=10)
    w.write_many(records)
    w.close()
    # expected boundaries derived from the rule: a chunk holds packets < first + 10 s
    groups: list[list[int]] = []
    for i, o in enumerate(offsets):
        if groups and o - offsets[groups[-1][0]] < 10:
            groups[-1].append(i)
        else:
            groups.append([i])
    assert [c.packets for c in w.chunks] == [len(g) for g in groups] == [3, 2, 2, 1]
    assert [c.closed_reason for c in w.chunks] == ["time", "time", "time", "stop"]
    assert [c.first_ns for c in w.chunks] == [records[g[0]][0] for g in groups]
    counts = capinfos_counts(*(c.path for c in w.chunks))
    assert [counts[c.name] for c in w.chunks] == [3, 2, 2, 1]
    assert read_all([c.path for c in w.chunks]) == records


def test_tick_rolls_without_traffic_and_next_chunk_opens_with_next_packet(tmp_path: Path) -> None:
    w = RollingPcapWriter(tmp_path, "h", LINKTYPE_ETHERNET, max_seconds=5)
    assert w.tick(TS0 + 100 * S) is None  # empty chunk: nothing to roll, no stream of empty files
    w.write(TS0, b"x" * 60)
    assert w.tick(TS0 + 4 * S) is None
    info = w.tick(TS0 + 5 * S)
    assert info is not None and info.closed_reason == "time" and info.packets == 1 and info.name == "h-0001.pcap"
    assert w.current is None and sorted(p.name for p in tmp_path.iterdir()) == ["h-0001.pcap"]
    assert w.tick(TS0 + 50 * S) is None
    w.write(TS0 + 60 * S, b"y" * 60)
    assert w.current == tmp_path / "h-0002.pcap"
    w.close()
    assert read_all([c.path for c in w.chunks]) == [(TS0, b"x" * 60, 60), (TS0 + 60 * S, b"y" * 60, 60)]


def test_numbering_continues_after_existing_files_and_never_overwrites(tmp_path: Path) -> None:
    old = {"eu-h1-0001.pcap": b"old1", "eu-h1-0003.pcap": b"old3", "eu-h1-eth0-0007.pcap": b"other stem",
           "eu-h10-0009.pcap": b"other host"}
    for name, content in old.items():
        (tmp_path / name).write_bytes(content)
    w = RollingPcapWriter(tmp_path, "eu-h1", LINKTYPE_ETHERNET, max_bytes=200)
    w.write_many([(TS0 + i, b"z" * 100, 100) for i in range(3)])
    w.close()
    assert [c.name for c in w.chunks] == ["eu-h1-0004.pcap", "eu-h1-0005.pcap", "eu-h1-0006.pcap"]
    assert {name: (tmp_path / name).read_bytes() for name in old} == old
    w2 = RollingPcapWriter(tmp_path, "eu-h1-eth0", LINKTYPE_ETHERNET, start_index=3)
    assert w2.current == tmp_path / "eu-h1-eth0-0008.pcap"  # after the highest existing, not start_index
    w2.close()
    w3 = RollingPcapWriter(tmp_path, "eu-h2", LINKTYPE_ETHERNET, start_index=42)
    assert w3.current == tmp_path / "eu-h2-0042.pcap"
    w3.close()


def test_empty_capture_is_a_valid_pcap(tmp_path: Path, tshark: str) -> None:
    w = RollingPcapWriter(tmp_path / "raw", "h", LINKTYPE_LINUX_SLL2, snaplen=65535)
    path = w.current
    assert path is not None and path.stat().st_size == FILE_HEADER  # header on disk before any packet
    info = w.close()
    assert info == ChunkInfo("h-0001.pcap", path, 1, 0, FILE_HEADER, None, None,
                             hashlib.sha256(path.read_bytes()).hexdigest(), "stop")
    assert capinfos_counts(path) == {"h-0001.pcap": 0}
    with open_capture(path) as r:
        assert (r.linktype, r.snaplen, list(r)) == (LINKTYPE_LINUX_SLL2, 65535, [])
    assert w.close() is None


def test_flush_interval_bounds_what_a_kill_would_lose(tmp_path: Path) -> None:
    lazy = RollingPcapWriter(tmp_path, "lazy", LINKTYPE_ETHERNET, flush_interval=3600, flush_bytes=1 << 30)
    eager = RollingPcapWriter(tmp_path, "eager", LINKTYPE_ETHERNET, flush_interval=0)
    for w in (lazy, eager):
        w.write_many([(TS0 + i * 1000, bytes([i]) * 50, 50) for i in range(10)])
    # what is on disk now is what a SIGKILL would leave: read it without closing
    assert lazy.current is not None and lazy.current.stat().st_size == FILE_HEADER
    assert eager.current is not None and len(read_all([eager.current])) == 10
    lazy.flush()
    assert len(read_all([lazy.current])) == 10
    by_bytes = RollingPcapWriter(tmp_path, "bybytes", LINKTYPE_ETHERNET, flush_interval=3600, flush_bytes=1000)
    by_bytes.write_many([(TS0 + i * 1000, b"q" * 84, 84) for i in range(15)])  # 100 B records
    assert by_bytes.current is not None
    assert len(read_all([by_bytes.current])) == 10  # flushed once the pending bytes reached 1000
    for w in (lazy, eager, by_bytes):
        info = w.close()
        assert info is not None and info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()


def test_snaplen_cut_nanosecond_timestamps_and_orig_len(tmp_path: Path, tshark: str) -> None:
    w = RollingPcapWriter(tmp_path, "ns", LINKTYPE_ETHERNET, snaplen=100, nanosecond=True)
    w.write(TS0 + 123_456_789, b"k" * 300, 1514)
    w.write(TS0 + 987, b"m" * 40)
    info = w.close()
    assert info is not None and info.first_ns == TS0 + 123_456_789 and info.last_ns == TS0 + 987
    assert read_all([info.path]) == [(TS0 + 123_456_789, b"k" * 100, 1514), (TS0 + 987, b"m" * 40, 40)]
    out = subprocess.run([tshark, "-r", str(info.path), "-T", "fields", "-e", "frame.cap_len", "-e", "frame.len",
                          "-e", "frame.time_epoch"], capture_output=True, text=True, check=True).stdout
    assert [line.split("\t") for line in out.splitlines()] == [
        ["100", "1514", f"{TS0 // S}.123456789"], ["40", "40", f"{TS0 // S}.000000987"]]
    us = RollingPcapWriter(tmp_path, "us", LINKTYPE_ETHERNET)
    us.write(TS0 + 123_456_789, b"k")
    info = us.close()
    assert info is not None and info.first_ns == TS0 + 123_456_000  # the value the file holds


def test_invalid_arguments_and_use_after_close(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes must be at least 40"):
        RollingPcapWriter(tmp_path, "h", 1, max_bytes=39)
    with pytest.raises(ValueError, match="stem 'a/b'"):
        RollingPcapWriter(tmp_path, "a/b", 1)
    with pytest.raises(ValueError, match="link type 70000"):
        RollingPcapWriter(tmp_path, "h", 70000)
    assert list(tmp_path.iterdir()) == []
    w = RollingPcapWriter(tmp_path, "h", 1)
    with pytest.raises(ValueError, match="timestamp -1 ns is before 1970"):
        w.write(-1, b"x")
    with pytest.raises(ValueError, match="past 2106"):
        w.write(2**32 * S, b"x")
    with pytest.raises(ValueError, match="close reason 'crash'"):
        w.close("crash")
    w.close()
    with pytest.raises(ValueError, match="h: write after close"):
        w.write(TS0, b"x")
    assert is_empty_pcap(tmp_path / "h-0001.pcap")


def is_empty_pcap(path: Path) -> bool:
    """True when the file is a valid pcap without records."""
    with open_capture(path) as r:
        return list(r) == []
