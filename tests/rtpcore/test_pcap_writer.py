"""PcapWriter / PcapngWriter: tshark and capinfos must read back exactly what we wrote."""
from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import CookedLinux, Ether

from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapngWriter, PcapWriter

TS_BASE = 1_700_000_000_123_456_789


def tshark_fields(tshark: str, path: Path, *fields: str) -> list[list[str]]:
    """One row per frame with the requested fields."""
    args = [tshark, "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "rror" not in out.stderr.replace("Running as user", ""), out.stderr
    return [line.split("|") for line in out.stdout.splitlines()]


def capinfos(path: Path) -> dict[str, str]:
    """capinfos' file type, encapsulation and packet count."""
    out = subprocess.run(["capinfos", "-t", "-E", "-c", "-M", str(path)], capture_output=True, text=True, check=True)
    info = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def ether_udp(i: int, size: int = 40) -> bytes:
    """An independent (scapy-built) Ethernet/IPv4/UDP frame with a recognisable payload."""
    payload = bytes([i & 0xFF]) * size
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2", id=i)
                 / UDP(sport=41000, dport=41002) / payload)


def epoch(ts_ns: int, digits: int = 9) -> str:
    """tshark's frame.time_epoch text for an integer ns timestamp, truncated to `digits` decimals."""
    frac = f"{ts_ns % 10**9:09d}"[:digits].ljust(9, "0")
    return f"{ts_ns // 10**9}.{frac}"


@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_timestamps_counts_and_type(tmp_path: Path, tshark: str, nanosecond: bool) -> None:
    path = tmp_path / "out.pcap"
    stamps = [TS_BASE + k * 1_000_001_001 for k in range(5)] + [0, 999]
    frames = [ether_udp(i, 20 + i) for i in range(len(stamps))]
    with PcapWriter(path, LINKTYPE_ETHERNET, nanosecond=nanosecond) as w:
        for ts, data in zip(stamps, frames):
            w.write(ts, data)
    assert w.packets == len(frames)
    assert w.bytes_written == path.stat().st_size == 24 + sum(16 + len(f) for f in frames)

    info = capinfos(path)
    assert info["File type"] == ("nsecpcap" if nanosecond else "pcap")
    assert info["File encapsulation"] == "ether"
    assert info["Number of packets"] == str(len(frames))
    rows = tshark_fields(tshark, path, "frame.time_epoch", "frame.len", "ip.id", "_ws.malformed")
    digits = 9 if nanosecond else 6
    assert [r[0] for r in rows] == [epoch(ts, digits) for ts in stamps]
    assert [int(r[1]) for r in rows] == [len(f) for f in frames]
    assert [int(r[2], 16) for r in rows] == list(range(len(frames)))
    assert all(r[3] == "" for r in rows)


def test_pcap_header_fields(tmp_path: Path) -> None:
    path = tmp_path / "h.pcap"
    PcapWriter(path, LINKTYPE_LINUX_SLL2, snaplen=1500, nanosecond=True).close()
    magic, major, minor, zone, sigfigs, snaplen, network = struct.unpack("<IHHiIII", path.read_bytes())
    assert (magic, major, minor, zone, sigfigs, snaplen, network) == (0xA1B23C4D, 2, 4, 0, 0, 1500, 276)


def test_snaplen_truncates_and_keeps_orig_len(tmp_path: Path, tshark: str) -> None:
    path = tmp_path / "snap.pcap"
    big, small = ether_udp(1, 300), ether_udp(2, 10)
    with PcapWriter(path, LINKTYPE_ETHERNET, snaplen=100) as w:
        w.write(TS_BASE, big)
        w.write(TS_BASE + 1000, small)
        w.write(TS_BASE + 2000, small, orig_len=1514)   # caller already cut it
    rows = tshark_fields(tshark, path, "frame.cap_len", "frame.len")
    assert rows == [["100", str(len(big))], [str(len(small))] * 2, [str(len(small)), "1514"]]
    with open_capture(path) as reader:
        got = list(reader)
    assert got[0].data == big[:100] and got[0].orig_len == len(big)
    assert reader.snaplen == 100


def test_closes_only_what_it_opened(tmp_path: Path) -> None:
    buf = io.BytesIO()
    data = ether_udp(3)
    with PcapWriter(buf, LINKTYPE_RAW) as w:
        w.write(TS_BASE, data)
    assert not buf.closed
    raw = buf.getvalue()
    assert len(raw) == w.bytes_written == 24 + 16 + len(data)
    assert struct.unpack_from("<IIII", raw, 24) == (TS_BASE // 10**9, TS_BASE % 10**9 // 1000, len(data), len(data))
    assert raw[40:] == data

    path = tmp_path / "owned.pcap"
    w2 = PcapWriter(path, LINKTYPE_ETHERNET)
    w2.write(TS_BASE, data)
    w2.close()
    w2.close()  # idempotent
    assert path.stat().st_size == 24 + 16 + len(data)   # flushed and closed by the writer


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="snaplen must be positive"):
        PcapWriter(io.BytesIO(), LINKTYPE_ETHERNET, snaplen=0)
    with pytest.raises(ValueError, match="before 1970"):
        PcapWriter(io.BytesIO(), LINKTYPE_ETHERNET).write(-1, b"x")
    w = PcapngWriter(io.BytesIO())
    with pytest.raises(ValueError, match="interface 0 was not added"):
        w.write(TS_BASE, b"x")


def test_pcapng_interfaces_names_and_exact_ns(tmp_path: Path, tshark: str) -> None:
    path = tmp_path / "out.pcapng"
    eth = [ether_udp(i, 17 + i) for i in range(4)]    # lengths 59..62: every padding case
    sll = bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x01\x00\x00")
                / IP(src="10.9.9.9", dst="10.8.8.8") / UDP(sport=41000, dport=41002) / b"abc")
    stamps = [TS_BASE + k for k in range(5)]
    with PcapngWriter(path) as w:
        assert w.add_interface(LINKTYPE_ETHERNET, name="bond0.100") == 0
        assert w.add_interface(LINKTYPE_LINUX_SLL) == 1
        for ts, data in zip(stamps, eth):
            w.write(ts, data)
        w.write(stamps[4], sll, interface=1, orig_len=len(sll) + 50)
    assert w.packets == 5 and w.bytes_written == path.stat().st_size
    assert path.stat().st_size % 4 == 0

    info = capinfos(path)
    assert info["File type"] == "pcapng"
    assert info["Number of packets"] == "5"
    rows = tshark_fields(tshark, path, "frame.time_epoch", "frame.interface_id", "frame.interface_name",
                         "frame.cap_len", "frame.len", "ip.src", "_ws.malformed")
    assert [r[0] for r in rows] == [epoch(ts) for ts in stamps]
    assert [r[1] for r in rows] == ["0", "0", "0", "0", "1"]
    assert [r[2] for r in rows[:4]] == ["bond0.100"] * 4
    assert [int(r[3]) for r in rows] == [len(d) for d in eth] + [len(sll)]
    assert rows[4][4] == str(len(sll) + 50)
    assert [r[5] for r in rows] == ["10.0.0.1"] * 4 + ["10.9.9.9"]
    assert all(r[6] == "" for r in rows)

    with open_capture(path) as reader:
        got = list(reader)
    assert [(f.ts_ns, f.linktype, f.data) for f in got] == list(zip(stamps, [1] * 4 + [113], eth + [sll]))


def test_pcapng_snaplen_per_interface(tmp_path: Path, tshark: str) -> None:
    path = tmp_path / "snap.pcapng"
    data = ether_udp(9, 200)
    with PcapngWriter(path) as w:
        w.add_interface(LINKTYPE_ETHERNET, snaplen=64)
        w.write(TS_BASE, data)
    assert tshark_fields(tshark, path, "frame.cap_len", "frame.len") == [["64", str(len(data))]]
