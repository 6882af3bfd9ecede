"""libpcap via ctypes, cross-checked against tcpdump (same libpcap, independent caller) and tshark."""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from rtpcore.errors import PcapError, TruncatedCaptureError
from rtpcore.pcap import libpcap
from rtpcore.pcap.reader import open_capture

pytestmark = pytest.mark.skipif(not libpcap.available(), reason="libpcap not installed (apt-get install libpcap0.8)")

RTP_RTCP = "heplify_rtp_rtcp_sip_ipv4_udp.pcap"
ERSPAN = "heplify_erspan_sip_ipv4_udp.pcapng"
SLL = "heplify_sip_ipv4_tcp_retrans.pcap"
# One real RTP leg of RTP_RTCP (tshark -z rtp,streams: 200.57.7.204:8000 <-> 200.57.7.196:40376).
RTP_LEG = "udp and host 200.57.7.204 and port 8000"


@pytest.fixture(scope="module")
def tcpdump() -> str:
    path = shutil.which("tcpdump")
    if path is None:
        pytest.skip("tcpdump not on PATH: apt-get install tcpdump")
    return path


def _tcpdump_ddd(tcpdump: str, expression: str, dlt_name: str, *extra: str) -> list[tuple[int, int, int, int]]:
    """tcpdump -ddd prints the count, then one 'code jt jf k' line per instruction."""
    out = subprocess.run(
        [tcpdump, "-ddd", *extra, "-y", dlt_name, expression], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    count = int(out[0])
    insns = [tuple(int(v) for v in line.split()) for line in out[1 : 1 + count]]
    assert len(insns) == count
    return insns  # type: ignore[return-value]


def _tcpdump_write(tcpdump: str, src: Path, dst: Path, expression: str, *, nano: bool) -> None:
    precision = ["--time-stamp-precision=nano"] if nano else []
    # -Z root: as root tcpdump would drop to user "tcpdump", who cannot write into pytest's 0700 tmp folder.
    subprocess.run(
        [tcpdump, *precision, "-Z", "root", "-r", str(src), "-w", str(dst), expression],
        capture_output=True,
        check=True,
    )


def _frames(path: Path) -> list[tuple[int, bytes]]:
    with open_capture(path) as reader:
        return [(f.ts_ns, f.data) for f in reader]


def _udp_frame(sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    addresses = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, *addresses)
    return ip + udp


def _write_pcap(path: Path, linktype: int, records: list[tuple[int, bytes]], *, nano: bool) -> None:
    """A little-endian classic pcap with µs or ns timestamps."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    chunks = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for ts_ns, data in records:
        frac = ts_ns % 1_000_000_000 if nano else ts_ns % 1_000_000_000 // 1000
        chunks.append(struct.pack("<IIII", ts_ns // 1_000_000_000, frac, len(data), len(data)) + data)
    path.write_bytes(b"".join(chunks))


def _pcap_record_ends(data: bytes) -> list[int]:
    """Byte offsets where each record of a little-endian classic pcap ends."""
    ends, offset = [], 24
    while offset + 16 <= len(data):
        offset += 16 + struct.unpack_from("<I", data, offset + 8)[0]
        ends.append(offset)
    return ends


def _pcapng_block_ends(data: bytes) -> list[tuple[int, int]]:
    """(block type, end offset) of each block of a little-endian pcapng file."""
    blocks, offset = [], 0
    while offset + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, offset)
        offset += blen
        blocks.append((btype, offset))
    return blocks


# --- library --------------------------------------------------------------------------------------


def test_version_is_the_libpcap_tcpdump_uses(tcpdump: str) -> None:
    lines = subprocess.run([tcpdump, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert libpcap.version() in [line.strip() for line in lines]


def test_missing_library_raises_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libpcap, "_load", lambda: None)
    assert libpcap.available() is False
    with pytest.raises(PcapError, match=r"libpcap not found: install libpcap \(Debian: apt-get install libpcap0.8"):
        libpcap.compile_filter("udp", linktype=1)


# --- compile_filter ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("linktype", "dlt_name", "expression"),
    [
        (1, "EN10MB", "udp port 5060"),
        (113, "LINUX_SLL", "udp port 5060"),
        (101, "RAW", "udp port 5060"),
        (1, "EN10MB", "vlan and udp portrange 10000-20000"),
        (276, "LINUX_SLL2", "host 10.1.2.3 and (udp port 5060 or tcp port 5061)"),
    ],
)
def test_compile_filter_matches_tcpdump(tcpdump: str, linktype: int, dlt_name: str, expression: str) -> None:
    assert libpcap.compile_filter(expression, linktype=linktype) == _tcpdump_ddd(tcpdump, expression, dlt_name)


def test_compile_filter_unoptimized_matches_tcpdump_O(tcpdump: str) -> None:
    expression = "udp and (port 5060 or port 5062)"
    unoptimized = libpcap.compile_filter(expression, linktype=1, optimize=False)
    assert unoptimized == _tcpdump_ddd(tcpdump, expression, "EN10MB", "-O")
    assert unoptimized != libpcap.compile_filter(expression, linktype=1)


def test_compile_filter_syntax_error_carries_libpcap_message(tcpdump: str) -> None:
    bad = "udp porrt 5"
    stderr = subprocess.run([tcpdump, "-d", "-y", "EN10MB", bad], capture_output=True, text=True).stderr
    libpcap_text = stderr.strip().removeprefix("tcpdump: ")
    assert "syntax error" in libpcap_text
    with pytest.raises(libpcap.LibpcapError) as caught:
        libpcap.compile_filter(bad, linktype=1)
    assert str(caught.value) == f"filter 'udp porrt 5' does not compile: {libpcap_text}"


# --- linktype_of ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [RTP_RTCP, SLL, ERSPAN])
def test_linktype_of_real_captures(shared_pcaps: Path, name: str) -> None:
    with open_capture(shared_pcaps / name) as reader:
        expected = next(iter(reader)).linktype
    assert libpcap.linktype_of(shared_pcaps / name) == expected


def test_linktype_raw_round_trips_through_dlt(tmp_path: Path, tcpdump: str) -> None:
    """LINKTYPE_RAW (101) is DLT_RAW (12) inside libpcap: the file number must come back, and filter the same."""
    src, ours, theirs = tmp_path / "raw.pcap", tmp_path / "ours.pcap", tmp_path / "theirs.pcap"
    base = 1_700_000_000_000_000_000
    records = [(base + i * 20_000_000, _udp_frame(4000 + i % 3, 5060, bytes(20))) for i in range(9)]
    _write_pcap(src, 101, records, nano=False)
    assert libpcap.linktype_of(src) == 101
    result = libpcap.filter_file(src, ours, "udp src port 4001", nanosecond=False)
    _tcpdump_write(tcpdump, src, theirs, "udp src port 4001", nano=False)
    assert result.linktype == 101
    assert result.packets_matched == 3
    assert struct.unpack_from("<I", ours.read_bytes(), 20)[0] == 101
    assert ours.read_bytes() == theirs.read_bytes()


# --- filter_file ------------------------------------------------------------------------------------


@pytest.mark.parametrize("nano", [False, True])
def test_filter_file_equals_tcpdump_output(shared_pcaps: Path, tmp_path: Path, tcpdump: str, nano: bool) -> None:
    src = shared_pcaps / RTP_RTCP
    ours, theirs = tmp_path / "ours.pcap", tmp_path / "theirs.pcap"
    result = libpcap.filter_file(src, ours, RTP_LEG, nanosecond=nano)
    _tcpdump_write(tcpdump, src, theirs, RTP_LEG, nano=nano)
    expected = _frames(theirs)
    assert result == libpcap.FilterResult(
        packets_matched=len(expected), linktype=1, snaplen=65535, src_error=None
    )
    assert len(expected) == 548 + 891  # both directions of the leg, per tshark -z rtp,streams
    assert _frames(ours) == expected
    assert ours.read_bytes() == theirs.read_bytes()


def test_filter_file_reads_pcapng(shared_pcaps: Path, tmp_path: Path, tcpdump: str) -> None:
    src = shared_pcaps / ERSPAN
    ours, theirs = tmp_path / "ours.pcap", tmp_path / "theirs.pcap"
    expression = "proto gre and greater 900"
    result = libpcap.filter_file(src, ours, expression)
    _tcpdump_write(tcpdump, src, theirs, expression, nano=True)
    expected = _frames(theirs)
    assert 0 < result.packets_matched == len(expected) < 140
    assert result.linktype == 1 and result.src_error is None
    assert _frames(ours) == expected
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.read_bytes()[:4] == struct.pack("<I", 0xA1B23C4D)  # classic pcap, ns magic


def test_filter_file_no_match_writes_empty_capture(shared_pcaps: Path, tmp_path: Path) -> None:
    dst = tmp_path / "none.pcap"
    result = libpcap.filter_file(shared_pcaps / RTP_RTCP, dst, "udp port 1")
    assert result.packets_matched == 0
    assert dst.stat().st_size == 24
    assert _frames(dst) == []


def test_filter_file_keeps_nanoseconds(tmp_path: Path, tshark: str) -> None:
    src, dst = tmp_path / "ns.pcap", tmp_path / "out.pcap"
    base = 1_700_000_000_123_456_789
    records = [(base + i * 20_000_001, _udp_frame(4000 + i % 2, 6000, bytes([i]) * 12)) for i in range(10)]
    _write_pcap(src, 101, records, nano=True)
    result = libpcap.filter_file(src, dst, "udp src port 4001")
    assert result.packets_matched == 5
    epochs = subprocess.run(
        [tshark, "-r", str(dst), "-T", "fields", "-e", "frame.time_epoch"], capture_output=True, text=True, check=True
    ).stdout.split()
    wanted = [ts for i, (ts, _) in enumerate(records) if i % 2]
    assert epochs == [f"{ts // 1_000_000_000}.{ts % 1_000_000_000:09d}" for ts in wanted]
    capinfos = subprocess.run(["capinfos", str(dst)], capture_output=True, text=True, check=True).stdout
    assert "nanoseconds" in capinfos


def test_filter_file_truncated_pcap_keeps_packets_before_cut(
    shared_pcaps: Path, tmp_path: Path, tcpdump: str
) -> None:
    data = (shared_pcaps / RTP_RTCP).read_bytes()
    ends = _pcap_record_ends(data)
    keep = len(ends) // 2
    cut, whole = tmp_path / "cut.pcap", tmp_path / "whole.pcap"
    cut.write_bytes(data[: ends[keep - 1] + 16 + 10])  # a full record header, then 10 of its data bytes
    whole.write_bytes(data[: ends[keep - 1]])
    ours, theirs = tmp_path / "ours.pcap", tmp_path / "theirs.pcap"
    result = libpcap.filter_file(cut, ours, "udp", nanosecond=False)
    _tcpdump_write(tcpdump, whole, theirs, "udp", nano=False)
    matched = len(_frames(theirs))
    assert matched > 0
    assert result.packets_matched == matched
    assert result.src_error is not None
    assert result.src_error.startswith(f"{cut}: truncated or corrupt after {matched} matching packets: ")
    assert "truncated" in result.src_error.split(": ", 2)[2]
    assert ours.read_bytes() == theirs.read_bytes()
    with pytest.raises(TruncatedCaptureError):  # the pure-Python reader agrees the source is cut
        _frames(cut)


def test_filter_file_truncated_pcapng(shared_pcaps: Path, tmp_path: Path, tcpdump: str) -> None:
    data = (shared_pcaps / ERSPAN).read_bytes()
    blocks = _pcapng_block_ends(data)
    epb_ends = [end for btype, end in blocks if btype == 6]
    boundary = epb_ends[len(epb_ends) // 2]
    cut, whole = tmp_path / "cut.pcapng", tmp_path / "whole.pcapng"
    cut.write_bytes(data[: boundary + 40])
    whole.write_bytes(data[:boundary])
    ours, theirs = tmp_path / "ours.pcap", tmp_path / "theirs.pcap"
    result = libpcap.filter_file(cut, ours, "proto gre")
    _tcpdump_write(tcpdump, whole, theirs, "proto gre", nano=True)
    assert result.src_error is not None and result.src_error.startswith(f"{cut}: truncated or corrupt after ")
    assert result.packets_matched == len(_frames(theirs)) == len(epb_ends) // 2 + 1
    assert ours.read_bytes() == theirs.read_bytes()


def test_filter_file_not_a_capture_names_file(tmp_path: Path, tcpdump: str) -> None:
    src, dst = tmp_path / "notes.txt", tmp_path / "out.pcap"
    src.write_text("this is not a capture\n" * 4)
    stderr = subprocess.run([tcpdump, "-r", str(src)], capture_output=True, text=True).stderr
    libpcap_text = stderr.strip().removeprefix("tcpdump: ")
    with pytest.raises(libpcap.LibpcapError) as caught:
        libpcap.filter_file(src, dst, "udp")
    assert str(caught.value) == f"{src}: cannot be read as a capture: {libpcap_text}"
    assert list(tmp_path.iterdir()) == [src]


def test_filter_file_bad_expression_leaves_no_output(shared_pcaps: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.pcap"
    with pytest.raises(libpcap.LibpcapError, match=r"^filter 'udp port' does not compile: .*syntax error"):
        libpcap.filter_file(shared_pcaps / RTP_RTCP, dst, "udp port")
    assert list(tmp_path.iterdir()) == []


def test_filter_file_replaces_existing_output(shared_pcaps: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.pcap"
    dst.write_bytes(b"old")
    result = libpcap.filter_file(shared_pcaps / RTP_RTCP, dst, RTP_LEG)
    assert len(_frames(dst)) == result.packets_matched > 0
    assert list(tmp_path.iterdir()) == [dst]
