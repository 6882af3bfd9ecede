#!/usr/bin/env python3
"""RPCAP data channel → rolling chunk in-process, per-record path (anchor) vs the batch path, no network.

    PYTHONPATH=. .venv/bin/python bench/rpcap_parse_bench.py [--packets 200000] [--per-read 1000] [--repeat 5]

The same RPCAP byte stream, cut into reads of about --per-read messages, goes through
PacketStreamParser.feed + RollingPcapWriter.write_many (the per-record path, what main ran) and through
feed_records + write_records (the batch path the capture engine uses), alternating, best of --repeat,
CPU seconds (process_time) including sha256 and the chunk writes. Streams: equal-size messages (one
codec, as bench/capture_bench.py sends) and mixed sizes (60–1300 bytes, random). Prints µs per packet
and the batch/per-record ratio; writes nothing.
"""
from __future__ import annotations

import argparse
import random
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rtpcore.capture.stats import HostCounters  # noqa: E402
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET  # noqa: E402
from rtpcore.pcap.rolling import RollingPcapWriter  # noqa: E402
from rtpcore.rpcap.framing import PacketStreamParser  # noqa: E402


def stream(packets: int, sizes: tuple[int, ...], seed: int = 1) -> bytes:
    """RPCAP_MSG_PACKET messages, 10 µs apart, each frame's size drawn from sizes."""
    rng = random.Random(seed)
    out = []
    for i in range(packets):
        size = rng.choice(sizes)
        ts = 1_700_000_000_000_000 + 10 * i
        out.append(struct.pack(">BBHIIIIII", 0, 7, 0, 20 + size, ts // 10**6, ts % 10**6, size, size, i + 1)
                   + rng.randbytes(size))
    return b"".join(out)


def reads(data: bytes, per_read: int, average: int) -> list[bytes]:
    """Reads as recv() returns them: about per_read messages, cut anywhere."""
    step = per_read * (28 + average) + 7
    return [data[i:i + step] for i in range(0, len(data), step)]


def per_record(chunks: list[bytes], folder: Path) -> float:
    """The anchor: one tuple per packet, write_many."""
    parser, counters = PacketStreamParser(), HostCounters()
    start = time.process_time()
    with RollingPcapWriter(folder, "per-record", LINKTYPE_ETHERNET, big_endian=True) as writer:
        for chunk in chunks:
            packets = parser.feed(chunk)
            if packets:
                writer.write_many([(ts, data, length) for ts, _, length, _, data in packets])
                counters.count(packets)
    return time.process_time() - start


def batch(chunks: list[bytes], folder: Path) -> float:
    """The capture engine's path: RecordBatch, write_records, count_batch."""
    parser, counters = PacketStreamParser(), HostCounters()
    start = time.process_time()
    with RollingPcapWriter(folder, "batch", LINKTYPE_ETHERNET, big_endian=True) as writer:
        for chunk in chunks:
            got = parser.feed_records(chunk)
            if got.keys:
                writer.write_records(got.records, got.keys, got.caplens)
                counters.count_batch(len(got.keys), len(got.records) - 16 * len(got.keys), got.last_npkt)
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packets", type=int, default=200_000)
    p.add_argument("--per-read", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    kinds = {"equal size (242-byte frames)": (242,), "mixed sizes (60-1300 bytes)": (60, 90, 172, 214, 242, 1300)}
    print(f"{args.packets:,} packets per stream, reads of ~{args.per_read} messages, best of {args.repeat}, "
          "CPU µs per packet (parse + chunk write + sha256)")
    print("| stream | per-record (anchor) | batch | batch/anchor |")
    print("|---|---:|---:|---:|")
    for label, sizes in kinds.items():
        data = stream(args.packets, sizes)
        chunks = reads(data, args.per_read, sum(sizes) // len(sizes))
        best: dict[str, float] = {"anchor": 1e9, "batch": 1e9}
        runs: list[tuple[str, Callable[[list[bytes], Path], float]]] = [("anchor", per_record), ("batch", batch)]
        for i in range(args.repeat):
            for name, run in runs if i % 2 == 0 else runs[::-1]:
                with tempfile.TemporaryDirectory() as tmp:
                    best[name] = min(best[name], run(chunks, Path(tmp)))
        a, b = (best[k] / args.packets * 1e6 for k in ("anchor", "batch"))
        print(f"| {label} | {a:.3f} | {b:.3f} | {b / a:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
