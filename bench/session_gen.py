"""A generated capture session: N media hosts writing rolling pcap chunks, one call in the middle on host 1.

Like a `capture-session` leaves it: raw/<region>-media-<n>-0001.pcap … per host, each closed chunk with its
sidecar index (what the rolling writer records: first/last time, a seek point every second), plus the call's
SIP capture (with second_call: a second call at the same time on host 2, other ports, call2/). Background streams are fixed-size RTP records; a second of them is one template whose 4-byte
second field is joined in by bytes.join, so gigabytes take seconds. The call's own media (rtpcore.callgen,
the same keys as its SIP) is merged by timestamp into host 1's records.

    .venv/bin/python bench/session_gen.py OUT --bytes 1GiB [--hosts 4] [--chunk 500MB]
"""
from __future__ import annotations

import argparse
import bisect
import random
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import gen_media  # noqa: E402

from rtpcore.callgen import render, variant  # noqa: E402
from rtpcore.pcap.build import build_udp, frame  # noqa: E402
from rtpcore.pcap.index import BUILT_CAPTURE, ChunkIndex, write_index  # noqa: E402
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET  # noqa: E402
from rtpcore.pcap.rolling import chunk_name, pcap_file_header  # noqa: E402
from rtpcore.sizes import parse_size  # noqa: E402

NS_PER_S = 10**9
TICK_NS = 20_000_000
TICKS_PER_S = NS_PER_S // TICK_NS
RECORD_HEADER = struct.Struct("<IIII")
PAYLOAD = 160
STREAMS_PER_HOST = 60          # ≈ 3,000 pps ≈ 0.69 MB/s per host: 500 MB chunks hold ~12 minutes
REGION = "eu-west-1"
HOSTS = 4                      # the issue-12 sessions: 4 media hosts, rolling 500 MB chunks, a 3-minute call
CHUNK_BYTES = 500 * 10**6
CALL_SECONDS = 180.0


@dataclass(frozen=True, slots=True)
class Session:
    """What a benchmark or test needs of a generated session."""

    root: Path             # the session folder (raw/ inside)
    sip: Path
    chunks: tuple[Path, ...]
    call_host: str         # the host whose chunks carry the call
    seconds: float
    bytes: int
    sip2: Path | None = None     # the second call's SIP capture (second_call=True)
    call2_host: str | None = None


def _template(rng: random.Random, host: int, streams: int) -> tuple[list[bytes], list[int]]:
    """One second of background records without their 4-byte seconds field, and each record's ns offset."""
    records: list[tuple[int, bytes]] = []
    for s in range(streams):
        peer = f"198.51.{100 + host}.{11 + s % 200}"
        relay = gen_media.HOST_CARRIER if s % 2 else gen_media.HOST_CORE
        sport, dport = 20000 + 2 * s, 50000 + 2 * s   # far from the call's ports (30000/40000/16384/42000)
        phase = rng.randrange(0, TICK_NS // 1000) * 1000
        l3 = bytearray(build_udp(peer, sport, relay, dport, bytes(12) + rng.randbytes(PAYLOAD), ip_id=s))
        l3[26:28] = b"\x00\x00"
        data = frame(LINKTYPE_ETHERNET, bytes(l3))
        for tick in range(TICKS_PER_S):
            rtp = bytes([0x80, 0]) + struct.pack("!HII", (s * 7 + tick) & 0xFFFF, tick * 160, 0x1000 + s)
            records.append((tick * TICK_NS + phase, data[:42] + rtp + data[54:]))
    records.sort(key=lambda r: r[0])
    pieces = [RECORD_HEADER.pack(0, off // 1000, len(d), len(d))[4:] + d for off, d in records]
    return pieces, [off for off, _ in records]


class _HostWriter:
    """Chunks of one host rolled at a second boundary below max_bytes, each closed with its sidecar index."""

    def __init__(self, raw: Path, stem: str, max_bytes: int) -> None:
        self.raw, self.stem, self.max_bytes = raw, stem, max_bytes
        self.header = pcap_file_header(LINKTYPE_ETHERNET)
        self.paths: list[Path] = []
        self._f = None
        self._open()

    def _open(self) -> None:
        path = self.raw / chunk_name(self.stem, len(self.paths) + 1)
        self.paths.append(path)
        self._f = open(path, "wb", buffering=1 << 22)
        self._f.write(self.header)
        self.size, self.packets, self.seeks = len(self.header), 0, []
        self.first = self.last = None

    def write_second(self, blob: bytes, packets: int, first_ts: int, last_ts: int) -> None:
        """One second of records (sorted); a seek point at its first record, as the rolling writer records it."""
        if self.packets and self.size + len(blob) > self.max_bytes:
            self.close()
            self._open()
        self.seeks.append((first_ts, self.size))
        self._f.write(blob)
        self.size += len(blob)
        self.packets += packets
        self.first = first_ts if self.first is None else self.first
        self.last = last_ts

    def close(self) -> None:
        self._f.close()
        path = self.paths[-1]
        write_index(ChunkIndex(path.name, self.size, self.packets, self.first, self.last, 0, tuple(self.seeks),
                               BUILT_CAPTURE), path)


def _merged_second(sec: int, pieces: list[bytes], offsets: list[int], call: list[tuple[int, bytes]]
                   ) -> tuple[bytes, int, int, int]:
    """A second of background with the call's records in it, by timestamp (the slow path, call seconds only)."""
    base = sec * NS_PER_S
    out: list[bytes] = []
    sec4 = struct.pack("<I", sec)
    pos = 0
    for ts, data in call:
        stop = bisect.bisect_right(offsets, ts - base)
        out += [sec4 + p for p in pieces[pos:stop]]
        pos = stop
        out.append(RECORD_HEADER.pack(ts // NS_PER_S, ts % NS_PER_S // 1000, len(data), len(data)) + data)
    out += [sec4 + p for p in pieces[pos:]]
    first = min(base + offsets[0], call[0][0])
    last = max(base + offsets[-1], call[-1][0])
    return b"".join(out), len(pieces) + len(call), first, last


SECOND_CALL_PORTS = {"carrier_media_port": 32000, "core_media_port": 18384, "host_carrier_port": 44000,
                     "host_core_port": 46000}   # the same media host addresses, other ports: another call


def generate(out: Path, total_bytes: int, *, hosts: int = HOSTS, chunk_bytes: int = CHUNK_BYTES,
             call_seconds: float = CALL_SECONDS, streams: int = STREAMS_PER_HOST, seed: int = 12, second_call: bool = False,
             log=print) -> Session:
    """The session under out/: raw/ chunks with sidecars for every host, call/sip.pcap; the call mid-session."""
    began = time.perf_counter()
    out = Path(out)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    spec = variant("inbound-proxy", media_seconds=call_seconds, seed=seed)
    truth = render(spec, out / "call")
    call = gen_media._call_frames(spec)
    host_calls: dict[int, dict[int, list[tuple[int, bytes]]]] = {0: {}}
    sip2 = None
    if second_call and hosts > 1:
        spec2 = variant("inbound-proxy", media_seconds=call_seconds, seed=seed + 1, **SECOND_CALL_PORTS)
        sip2 = out / "call2" / render(spec2, out / "call2")["sip"]
        host_calls[1] = {}
        for ts, data in gen_media._call_frames(spec2):
            host_calls[1].setdefault(ts // NS_PER_S, []).append((ts, data))
    rng = random.Random(seed)
    templates = [_template(rng, h, streams) for h in range(hosts)]
    per_second = sum(len(p) + 4 for p in templates[0][0])
    seconds = max(int(total_bytes / hosts / per_second), int(call_seconds) + 60)
    call_mid = (call[0][0] + call[-1][0]) // 2
    start_sec = call_mid // NS_PER_S - seconds // 2
    for ts, data in call:
        host_calls[0].setdefault(ts // NS_PER_S, []).append((ts, data))
    chunks: list[Path] = []
    total = 0
    for h, (pieces, offsets) in enumerate(templates):
        writer = _HostWriter(raw, f"{REGION}-media-{h + 1}", chunk_bytes)
        joined = [b""] + pieces
        for sec in range(start_sec, start_sec + seconds):
            extra = host_calls.get(h, {}).get(sec)
            if extra:
                blob, n, first, last = _merged_second(sec, pieces, offsets, extra)
            else:
                blob = struct.pack("<I", sec).join(joined)
                n, first, last = len(pieces), sec * NS_PER_S + offsets[0], sec * NS_PER_S + offsets[-1]
            writer.write_second(blob, n, first, last)
        writer.close()
        chunks += writer.paths
        total += sum(p.stat().st_size for p in writer.paths)
    sip = out / "call" / truth["sip"]
    log(f"generated {total / 2**30:.2f} GiB in {len(chunks)} chunks ({hosts} hosts, {seconds} s) in "
        f"{time.perf_counter() - began:.1f} s")
    return Session(out, sip, tuple(chunks), f"{REGION}-media-1", float(seconds), total, sip2,
                   f"{REGION}-media-2" if sip2 is not None else None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--bytes", default="1GiB")
    p.add_argument("--hosts", type=int, default=HOSTS)
    p.add_argument("--chunk", default=f"{CHUNK_BYTES // 10**6}MB")
    args = p.parse_args(argv)
    generate(args.out, parse_size(args.bytes), hosts=args.hosts, chunk_bytes=parse_size(args.chunk))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
