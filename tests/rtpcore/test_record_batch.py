"""The capture's batch path (RPCAP bytes → big-endian pcap records) writes what the per-record path writes."""
from __future__ import annotations

import hashlib
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from rtpcore.capture.stats import HostCounters
from rtpcore.pcap.index import build_index
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.rolling import ChunkInfo, RollingPcapWriter
from rtpcore.rpcap import protocol as p
from rtpcore.rpcap.framing import ControlReader, PacketStreamParser

SEC0 = 1_700_000_000


def message(npkt: int, sec: int, usec: int, data: bytes, wire_len: int | None = None) -> bytes:
    """One RPCAP_MSG_PACKET as rpcapd 1.10 sends it (plen cast to uint16)."""
    pkthdr = struct.pack(">IIIII", sec, usec, len(data), len(data) if wire_len is None else wire_len, npkt)
    return struct.pack(">BBHI", 0, 7, 0, (20 + len(data)) & 0xFFFF) + pkthdr + data


def rpcap_stream(n: int, seed: int, disorder: float = 0.02, same_size: float = 0.0) -> tuple[
        bytes, list[tuple[int, bytes, int]]]:
    """n packets over ~6 s with random sizes, some steps back in time, one giant packet and odd headers.

    Returns the byte stream and the (ts_ns, data, orig_len) a correct chunk holds for each packet.
    """
    rng = random.Random(seed)
    parts, expected = [], []
    usec_total = 0
    for i in range(n):
        usec_total += rng.randrange(0, 12_000)
        ts = usec_total - (rng.randrange(1, 50_000) if rng.random() < disorder else 0)  # out of order now and then
        sec, usec = SEC0 + ts // 1_000_000, ts % 1_000_000
        if rng.random() < same_size:  # RTP of one codec: runs of equal-size packets
            data, wire = rng.randbytes(214), 214
        else:
            data = rng.randbytes(rng.choice((0, 1, 60, 172, 214, 1514, rng.randrange(0, 1600))))
            wire = len(data) + rng.choice((0, 0, 0, 4, 1000))
        if i == n // 3:
            data = rng.randbytes(70_000)  # over 65515 bytes: rpcapd's plen wraps
            wire = len(data)
        if i == n // 2:
            wire = len(data) // 2  # len below caplen: written as caplen, as write_many does
        if i == 2 * n // 3:
            sec, usec = sec - 1, usec + 1_000_000  # an unnormalised timeval: written normalised
        parts.append(message(i + 1, sec, usec, data, wire))
        expected.append((sec * 10**9 + usec * 1000, data, max(wire, len(data))))
    return b"".join(parts), expected


def cuts(total: int, seed: int) -> list[int]:
    """Read boundaries as recv() returns them: tiny, misaligned and large."""
    rng = random.Random(seed)
    at, out = 0, [0]
    while at < total:
        at = min(total, at + rng.choice((1, 7, 28, 29, 500, 3000, 20_000, 200_000)))
        out.append(at)
    return out


def capture(tmp: Path, stream: bytes, bounds: list[int], batch: bool, **writer_kw: object) -> tuple[
        list[ChunkInfo], HostCounters]:
    """Feed the stream in the given reads through one path into a big-endian RollingPcapWriter."""
    closed: list[ChunkInfo] = []
    writer = RollingPcapWriter(tmp, "eu-mh1", LINKTYPE_ETHERNET, on_close=closed.append, big_endian=True,
                               **writer_kw)  # type: ignore[arg-type]
    parser, counters = PacketStreamParser(), HostCounters()
    for a, b in zip(bounds, bounds[1:]):
        if batch:
            got = parser.feed_records(stream[a:b])
            if got.keys:
                writer.write_records(got.records, got.keys, got.caplens)
                counters.count_batch(len(got.keys), sum(got.caplens), got.last_npkt)
            if got.tail:
                writer.write_many([(ts, data, length) for ts, _, length, _, data in got.tail])
                counters.count(got.tail)
        else:
            packets = parser.feed(stream[a:b])
            if packets:
                writer.write_many([(ts, data, length) for ts, _, length, _, data in packets])
                counters.count(packets)
    assert parser.pending == 0
    writer.close()
    return closed, counters


def read_back(chunks: list[ChunkInfo]) -> list[tuple[int, bytes, int]]:
    out = []
    for info in chunks:
        with open_capture(info.path) as reader:
            out += [(ts, data, orig) for ts, _, data, orig in reader.records()]
    return out


@pytest.mark.parametrize(("seed", "disorder", "same_size", "writer_kw"), [
    (1, 0.02, 0.0, {"max_bytes": 60_000, "max_seconds": 1.5}),
    (2, 0.02, 0.0, {"max_bytes": 250_000}),
    (3, 0.02, 0.0, {"max_seconds": 0.7, "flush_bytes": 0}),
    (4, 0.02, 0.0, {}),
    (5, 0.0, 0.0, {"max_bytes": 250_000, "max_seconds": 1.5}),  # in time order: whole batches take the bisect path
    (6, 0.003, 0.0, {}),  # rare steps back: most batches in order, a few not
    (7, 0.0, 0.995, {"max_bytes": 250_000, "max_seconds": 1.5}),  # long equal-size runs: checked and cut in groups
    (8, 0.003, 0.97, {}),
])
def test_batch_and_per_record_paths_write_the_same_chunks(tmp_path: Path, seed: int, disorder: float,
                                                          same_size: float, writer_kw: dict[str, object]) -> None:
    stream, expected = rpcap_stream(1500, seed, disorder, same_size)
    bounds = cuts(len(stream), seed)
    per_record, counted = capture(tmp_path / "per-record", stream, bounds, False, **writer_kw)
    batched, batch_counted = capture(tmp_path / "batch", stream, bounds, True, **writer_kw)
    assert [replace(c, path=Path(c.name)) for c in batched] == [replace(c, path=Path(c.name)) for c in per_record]
    for a, b in zip(per_record, batched):
        content = b.path.read_bytes()
        assert content == a.path.read_bytes() and hashlib.sha256(content).hexdigest() == b.sha256
        index = build_index(b.path)  # what a reader rebuilds from the file agrees with the capture-time index
        assert (index.packets, index.first_ns, index.last_ns, index.seeks, index.backstep_ns) == (
            b.packets, b.first_ns, b.last_ns, b.seeks, b.backstep_ns)
    assert read_back(batched) == expected
    assert (batch_counted.packets, batch_counted.bytes, batch_counted.client_drops) == (
        counted.packets, counted.bytes, counted.client_drops) == (1500, sum(len(d) for _, d, _ in expected), 0)
    if writer_kw:
        assert len(batched) > 2 and {c.closed_reason for c in batched[:-1]} <= {"size", "time"}
    assert any(c.backstep_ns for c in batched) == bool(disorder)


def test_batch_path_counts_npkt_holes_and_keeps_snaplen(tmp_path: Path) -> None:
    datas = [bytes([i]) * 300 for i in range(6)]
    stream = b"".join(message(n, SEC0, n, d) for n, d in zip((1, 2, 5, 6, 9, 10), datas))  # 3, 4, 7, 8 lost
    parser, counters = PacketStreamParser(), HostCounters()
    got = parser.feed_records(stream)
    counters.count_batch(len(got.keys), sum(got.caplens), got.last_npkt)
    assert (counters.packets, counters.client_drops, got.last_npkt, got.tail) == (6, 4, 10, [])
    with RollingPcapWriter(tmp_path, "cut", LINKTYPE_ETHERNET, snaplen=100, big_endian=True) as w:
        w.write_records(got.records, got.keys, got.caplens)
    with open_capture(w.chunks[0].path) as reader:
        assert [(data, orig) for _, _, data, orig in reader.records()] == [(d[:100], 300) for d in datas]


@pytest.mark.parametrize("run", [0, 300])
@pytest.mark.parametrize("make", [
    lambda good: good + bytes([0, 0x89, 0, 0, 0, 0, 0, 20]) + bytes(20),
    lambda good: good + message(3, SEC0, 0, b"efgh")[:4] + (99).to_bytes(4, "big") + message(3, SEC0, 0, b"efgh")[8:],
    lambda good: good + bytes([0, 7, 0, 0]) + bytes(4) + struct.pack(">IIIII", 0, 0, 300000, 0, 1),
])
def test_batch_path_raises_the_per_record_desync_errors(make: Callable[[bytes], bytes], run: int) -> None:
    """Also after a run of equal-size messages (the grouped check) and with the bad one inside such a run."""
    same = b"".join(message(3 + i, SEC0, 2 + i, b"s" * 200) for i in range(run))
    stream = make(message(1, SEC0, 0, b"abcd") + message(2, SEC0, 1, b"x" * 40) + same) + same
    errors = []
    for feed in (PacketStreamParser().feed, PacketStreamParser().feed_records):
        with pytest.raises(ValueError) as caught:
            feed(stream)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert errors[0].startswith("RPCAP") and str(len(message(1, SEC0, 0, b"abcd")) + 68 + len(same)) in errors[0]


def test_big_endian_chunk_reads_in_tshark_and_capinfos(tmp_path: Path, tshark: str) -> None:
    stream, expected = rpcap_stream(300, 7)
    chunks, _ = capture(tmp_path, stream, cuts(len(stream), 7), True)
    (chunk,) = chunks
    assert chunk.path.read_bytes()[:4] == bytes.fromhex("a1b2c3d4")
    info = subprocess.run(["capinfos", "-T", "-r", "-c", "-E", str(chunk.path)], capture_output=True, text=True)
    assert info.returncode == 0 and not info.stderr.strip(), info.stderr
    assert info.stdout.split("\t")[1:] == ["ether", "300\n"]
    lengths = subprocess.run([tshark, "-r", str(chunk.path), "-T", "fields", "-e", "frame.cap_len",
                              "-e", "frame.len", "-e", "frame.time_epoch"], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in lengths.stdout.splitlines()]
    assert [(int(c), int(w)) for c, w, _ in rows] == [(len(d), o) for _, d, o in expected]
    assert [round(float(t) * 10**6) for _, _, t in rows] == [ts // 1000 for ts, _, _ in expected]


def to_big_endian(path: Path) -> None:
    """Rewrite a little-endian classic pcap as the same capture in big-endian byte order (what capture writes now)."""
    raw = path.read_bytes()
    assert raw[:4] in (bytes.fromhex("d4c3b2a1"), bytes.fromhex("4d3cb2a1")), path
    out = [struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", raw))]
    off = 24
    while off < len(raw):
        sec, frac, caplen, length = struct.unpack_from("<IIII", raw, off)
        out.append(struct.pack(">IIII", sec, frac, caplen, length) + raw[off + 16:off + 16 + caplen])
        off += 16 + caplen
    path.write_bytes(b"".join(out))


@pytest.mark.parametrize("name", ["rolling", "inbound-b2bua"])
def test_correlation_outputs_do_not_depend_on_the_chunks_byte_order(name: str, generated: Callable[[str], Path],
                                                                    tmp_path: Path) -> None:
    from rtpcore.pipeline import correlate
    from tests.conftest import load_truth

    little = generated(name)
    big = tmp_path / "big"
    shutil.copytree(little, big)
    chunks = [p for p in (big / "media").rglob("*.pcap") if p.read_bytes()[:4] == bytes.fromhex("d4c3b2a1")]
    assert chunks
    for chunk in chunks:
        to_big_endian(chunk)
    truth = load_truth(little)
    select = truth.get("select") or {}
    reports = [correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / f"out-{i}",
                         call_id=select.get("call_id")) for i, folder in enumerate((little, big))]
    assert len(reports[0].outputs) == 3
    for a, b in zip(reports[0].outputs, reports[1].outputs):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
        assert a.read_bytes()[2:4] == b"\xb2\xa1"  # the outputs stay little-endian (µs or ns magic)


def test_null_link_chunks_stay_little_endian_and_match_bpf(tmp_path: Path) -> None:
    """BSD loopback's AF_ word is in the capturing host's order: libpcap's BPF reads it in the file's order."""
    from rtpcore.pcap.libpcap import filter_file
    from rtpcore.pcap.linktypes import LINKTYPE_NULL
    from rtpcore.pcap.rolling import BIG_ENDIAN_LINKTYPES

    assert LINKTYPE_NULL not in BIG_ENDIAN_LINKTYPES and LINKTYPE_ETHERNET in BIG_ENDIAN_LINKTYPES
    ip_udp = bytes.fromhex("4500002000000000401100007f0000017f000001") + bytes.fromhex("13881389000c0000") + b"rtp!"
    frame = struct.pack("<I", 2) + ip_udp  # AF_INET, little-endian as an x86 BSD host writes it
    stream = b"".join(message(i + 1, SEC0, i, frame) for i in range(5))
    got = PacketStreamParser().feed_records(stream)
    for big in (False, True):
        folder = tmp_path / str(big)
        with RollingPcapWriter(folder, "bsd", LINKTYPE_NULL, big_endian=big) as w:
            w.write_records(got.records, got.keys, got.caplens)
        matched = filter_file(w.chunks[0].path, tmp_path / f"{big}.pcap", "udp port 5000").packets_matched
        assert matched == (0 if big else 5)  # why NULL chunks are never written big-endian


@pytest.mark.parametrize("at", [0, 7, 300, 599])
@pytest.mark.parametrize("odd", ["usec", "len", "size", "giant"])
def test_an_odd_message_inside_an_equal_size_run_is_written_as_per_record(tmp_path: Path, at: int, odd: str) -> None:
    """One read of 600 equal-size messages (checked in groups of 256 and 16) with one odd message in it."""
    parts = []
    for i in range(600):
        sec, usec, data, wire = SEC0 + i // 1000, (i % 1000) * 1000, bytes([i % 251]) * 214, 214
        if i == at:
            sec, usec, data, wire = {"usec": (sec - 1, usec + 1_000_000, data, wire), "len": (sec, usec, data, 100),
                                     "size": (sec, usec, data[:213], 213), "giant": (sec, usec, data * 320, 68480)}[odd]
        parts.append(message(i + 1, sec, usec, data, wire))
    stream = b"".join(parts)
    per_record, _ = capture(tmp_path / "per-record", stream, [0, len(stream)], False)
    batched, counted = capture(tmp_path / "batch", stream, [0, len(stream)], True)
    assert [c.path.read_bytes() for c in batched] == [c.path.read_bytes() for c in per_record]
    assert counted.packets == 600 and counted.client_drops == 0


@pytest.mark.parametrize("at", [0, 7, 300, 599])
def test_a_caplen_that_disagrees_with_plen_inside_an_equal_size_run_is_a_desync(at: int) -> None:
    parts = [message(i + 1, SEC0, i, bytes(214)) for i in range(600)]
    bad = bytearray(parts[at])
    bad[16:20] = (100).to_bytes(4, "big")  # plen still says 214 + 20
    parts[at] = bytes(bad)
    errors = []
    for feed in (PacketStreamParser().feed, PacketStreamParser().feed_records):
        with pytest.raises(ValueError) as caught:
            feed(b"".join(parts))
        errors.append(str(caught.value))
    assert errors[0] == errors[1] == (f"RPCAP packet {at + 1}: plen 234 does not match caplen 100 + 20"
                                      f" (data channel out of sync at byte {at * 242})")
