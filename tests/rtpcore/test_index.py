"""Chunk indexes: what the rolling writer records equals a scan of the file, ranges never lose a packet, stale
or corrupt sidecars are refused, a repaired chunk gets its index rebuilt."""
from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest

from rtpcore.capture.manifest import Manifest, record_index
from rtpcore.capture.repair import repair_session
from rtpcore.pcap.index import (
    BUILT_LAZY,
    IndexProblem,
    build_index,
    copy_ranges,
    index_path,
    load_index,
    read_index,
)
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.rolling import ChunkInfo, RollingPcapWriter

TS0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def records(n: int, *, seed: int = 3, step_ns: int = 7_000_000, jitter_ns: int = 0) -> list[tuple[int, bytes, int]]:
    """n records 7 ms apart (µs-exact), optionally stepping back in time by up to jitter_ns (capture on 'any')."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        back = rng.randrange(0, jitter_ns // 1000 + 1) * 1000 if jitter_ns and rng.random() < 0.2 else 0
        data = rng.randbytes(rng.randint(60, 400))
        out.append((TS0 + i * step_ns - back, data, len(data)))
    return out


def write_chunks(folder: Path, recs: list[tuple[int, bytes, int]], max_bytes: int) -> list[ChunkInfo]:
    closed: list[ChunkInfo] = []
    with RollingPcapWriter(folder, "h1", LINKTYPE_ETHERNET, max_bytes=max_bytes, on_close=closed.append) as w:
        for i in range(0, len(recs), 97):
            w.write_many(recs[i:i + 97])
    return closed


def frames(path: Path) -> list[tuple[int, bytes]]:
    with open_capture(path) as r:
        return [(f.ts_ns, f.data) for f in r]


@pytest.mark.parametrize("jitter_ns", [0, 40_000_000])
def test_capture_time_index_equals_a_scan_of_the_closed_chunk(tmp_path: Path, jitter_ns: int) -> None:
    closed = write_chunks(tmp_path, records(4000, jitter_ns=jitter_ns), 200_000)
    assert len(closed) >= 4
    for info in closed:
        assert record_index(info) == index_path(info.path)
        written = read_index(info.path)
        scanned = build_index(info.path)
        assert written is not None
        assert (written.packets, written.bytes, written.backstep_ns) == (scanned.packets, scanned.bytes,
                                                                         scanned.backstep_ns)
        assert [o for _, o in written.seeks] == [o for _, o in scanned.seeks]
        assert all(abs(a - b) < 1000 for (a, _), (b, _) in zip(written.seeks, scanned.seeks))
        gaps = [b[0] - a[0] for a, b in zip(written.seeks, written.seeks[1:])]
        assert gaps and all(g >= S for g in gaps) and all(g < S + 50_000_000 for g in gaps)
        assert (written.backstep_ns > 0) == bool(jitter_ns)


@pytest.mark.parametrize("jitter_ns", [0, 40_000_000])
def test_byte_range_holds_every_record_of_the_window_and_little_else(tmp_path: Path, jitter_ns: int) -> None:
    [info] = write_chunks(tmp_path, records(3000, jitter_ns=jitter_ns), 10**8)
    index = build_index(info.path)
    everything = frames(info.path)
    rng = random.Random(9)
    for _ in range(40):
        start = TS0 + rng.randrange(-2 * S, 23 * S)
        end = start + rng.randrange(0, 5 * S)
        want = [f for f in everything if start <= f[0] <= end]
        span = index.byte_range(start, end)
        if span is None:
            assert want == []
            continue
        part = tmp_path / "part.pcap"
        copy_ranges(info.path, (span,), part)
        got = [f for f in frames(part) if start <= f[0] <= end]
        assert got == want
        assert span[1] - span[0] <= (end - start + 3 * S + 2 * jitter_ns) / (7_000_000) * 430  # ≈ window + 2 s


def test_stale_corrupt_and_foreign_sidecars_are_refused_and_rebuilt(tmp_path: Path) -> None:
    [info] = write_chunks(tmp_path, records(500), 10**8)
    record_index(info)
    sidecar = index_path(info.path)
    good = json.loads(sidecar.read_text())

    sidecar.write_text(json.dumps({**good, "bytes": good["bytes"] + 16}))
    with pytest.raises(IndexProblem, match=r"describes .* bytes but h1-0001.pcap has"):
        read_index(info.path)
    sidecar.write_text('{"version": 1, "chunk": "h1-0001.pcap", "bytes"')
    with pytest.raises(IndexProblem, match="corrupt index"):
        read_index(info.path)
    sidecar.write_text(json.dumps({**good, "chunk": "h9-0001.pcap"}))
    with pytest.raises(IndexProblem, match="describes h9-0001.pcap, not h1-0001.pcap"):
        read_index(info.path)

    index, note = load_index(info.path)
    assert note is not None and "rebuilt by reading the whole chunk" in note
    assert index.built == BUILT_LAZY and index.packets == 500
    assert read_index(info.path) == index  # cached next to the chunk


def test_repaired_chunk_gets_its_index_rebuilt(tmp_path: Path) -> None:
    session = tmp_path / "s"
    raw = session / "raw"
    with Manifest.for_session(session) as manifest:
        manifest.start(hosts=["h1"])
    [info] = write_chunks(raw, records(400), 10**8)
    record_index(info)  # an index of the whole file; then the chunk is torn as by a crash mid-record
    with open(info.path, "ab") as f:
        f.write(struct.pack("<IIII", TS0 // S + 30, 0, 100, 100) + os.urandom(10))
    with pytest.raises(IndexProblem):
        read_index(info.path)
    report = repair_session(session)
    assert [a.action for a in report.actions] == ["truncated"]
    index = read_index(info.path)
    assert index is not None and index.packets == 400 and index.bytes == info.path.stat().st_size


@pytest.mark.parametrize("splice", [True, False])
def test_the_ranges_stream_reads_as_the_header_and_the_ranges_with_and_without_sendfile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, splice: bool) -> None:
    import rtpcore.pcap.index as index

    monkeypatch.setattr(index, "SPLICE_TO_PIPE", splice)      # False: the macOS path (pread + write)
    chunk = tmp_path / "chunk.pcap"
    chunk.write_bytes(bytes(range(24)) + os.urandom(3 * 1024 * 1024))
    ranges = ((24, 1000), (5000, 2 * 1024 * 1024 + 17), (3 * 1024 * 1024, 3 * 1024 * 1024 + 24))
    with index.ranges_stream(chunk, ranges) as path:
        got = path.read_bytes()
    data = chunk.read_bytes()
    assert got == data[:24] + b"".join(data[b:e] for b, e in ranges)
