"""The fast paths (decrypt's inlined IPv4 RTP path, demux's raw-key routing, merge in memory) against the slow ones."""
from __future__ import annotations

import base64
import json
import struct
import subprocess
from dataclasses import asdict
from pathlib import Path

import pylibsrtp
import pytest

from rtpcore.media import decrypt, demux
from rtpcore.media.decrypt import decrypt_capture
from rtpcore.pcap import merge
from rtpcore.pcap.build import build_udp, frame, internet_checksum, replace_udp_payload
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL
from rtpcore.pcap.merge import merge_captures
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.pipeline import correlate
from rtpcore.sip.crypto import CryptoAttribute
from tests.conftest import load_truth

SUITE = "AES_CM_128_HMAC_SHA1_80"
MASTER = bytes(range(30))                       # 16-byte key + 14-byte salt
SSRC = 0x1234ABCD
A, B = ("10.1.2.3", 40000), ("10.9.8.7", 50000)
SLOW_ONLY = {"vlan", "ipv6"}                    # VLAN tags and IPv6 are always parsed in full
VARIANTS = ["inbound-proxy", "vlan", "sll2", "duplicates", "wrap-across-files", "reinvite-rekey", "gcm", "ipv6"]


def _slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every packet through the generic parse: no link type qualifies for a fast path, merges stream."""
    monkeypatch.setattr(decrypt, "IPV4_FAST_LINKS", {})
    monkeypatch.setattr(demux, "IPV4_FAST_LINKS", {})
    monkeypatch.setattr(merge, "IN_MEMORY_BYTES", -1)


def _count_process(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = decrypt._process

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(decrypt, "_process", counting)
    return calls


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.pcap"))}


def _stats(result) -> list[dict]:
    return [asdict(s) for s in result.streams]


@pytest.mark.parametrize("name", VARIANTS)
def test_fast_and_slow_pipeline_write_identical_bytes_and_counts(
    name: str, generated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    select = truth.get("select") or {}

    def run(out: Path):
        report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], out,
                           call_id=select.get("call_id"), workers=1)
        doc = report.to_json()
        return _files(out), json.dumps(doc["legs"], sort_keys=True, default=str)

    with monkeypatch.context() as m:
        calls = _count_process(m)
        fast_files, fast_doc = run(tmp_path / "fast")
        fast_calls = calls[0]
    with monkeypatch.context() as m:
        _slow(m)
        calls = _count_process(m)
        slow_files, slow_doc = run(tmp_path / "slow")
        slow_calls = calls[0]
    assert fast_files.keys() == slow_files.keys() and len(fast_files) >= 5
    for key in fast_files:
        assert fast_files[key] == slow_files[key], key
    assert fast_doc == slow_doc
    if name in SLOW_ONLY:
        assert fast_calls == slow_calls
    else:
        assert fast_calls < slow_calls // 4, (fast_calls, slow_calls)


# -- a crafted capture: odd lengths, duplicates, a damaged packet, a wrap, frames that must go the slow way ---------


def _protector() -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=MASTER, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    return pylibsrtp.Session(policy)


def _rtp(seq: int, size: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, SSRC) + bytes(
        (seq * 7 + i) & 0xFF for i in range(size))


def _with_ip_options(l3: bytes) -> bytes:
    """The same IPv4 packet with 4 bytes of NOP options (IHL 6), header checksum recomputed."""
    header = bytearray(l3[:20]) + b"\x01\x01\x01\x01"
    header[0] = 0x46
    struct.pack_into("!H", header, 2, len(l3) + 4)
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return bytes(header) + l3[20:]


def _crafted(path: Path, linktype: int) -> list[tuple[bytes, bytes | None]]:
    """Write the capture; return (frame, expected plaintext or None when it must stay as it is) per kept frame."""
    protect = _protector().protect
    frames: list[tuple[bytes, bytes | None]] = []
    written: list[bytes] = []
    for n, seq in enumerate(range(65520, 65520 + 60)):          # wraps: ROC 0 → 1
        plain = _rtp(seq, 1 + n % 41)                              # odd and even payload lengths
        packet = protect(plain)
        if n == 30:
            packet = packet[:-1] + bytes([packet[-1] ^ 1])         # damaged tag: stays encrypted
            plain = None
        l3 = build_udp(A[0], A[1], B[0], B[1], packet, ip_id=n)
        if n % 11 == 5:
            l3 = _with_ip_options(l3)
        data = frame(linktype, l3, vlans=(100,) if n % 13 == 7 and linktype == LINKTYPE_ETHERNET else ())
        if n % 9 == 4:
            data += b"\x00" * 6                                    # Ethernet trailer after the IP packet
        written.append(data)
        frames.append((data, plain))
        if n in (10, 40):
            written.append(data)                                   # a duplicate: dropped
    with PcapWriter(path, linktype, nanosecond=True) as w:
        for i, data in enumerate(written):
            w.write(1_700_000_000_000_000_000 + i * 20_000_000, data)
    return frames


def _decrypt(src: Path, out: Path):
    key = base64.b64encode(MASTER).decode()
    return decrypt_capture(src, CryptoAttribute.parse(f"1 {SUITE} inline:{key}"), out)


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL])
def test_crafted_stream_fast_equals_slow_and_the_rewrite_oracle(
    linktype: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.pcap"
    expected = _crafted(src, linktype)
    with monkeypatch.context() as m:
        calls = _count_process(m)
        fast = _decrypt(src, tmp_path / "fast.pcap")
        assert calls[0] < 20, "most packets took the fast path"
    with monkeypatch.context() as m:
        _slow(m)
        slow = _decrypt(src, tmp_path / "slow.pcap")
    assert (tmp_path / "fast.pcap").read_bytes() == (tmp_path / "slow.pcap").read_bytes()
    assert _stats(fast) == _stats(slow)
    (stream,) = [s for s in fast.streams if s.kind == "rtp"]
    assert (stream.packets, stream.decrypted, stream.auth_failed, stream.duplicates) == (60, 59, 1, 2)
    assert (stream.first_seq, stream.highest_seq) == (65520, 65520 + 59)   # across the wrap, ROC 1
    with open_capture(tmp_path / "fast.pcap") as reader:
        got = [f.data for f in reader]
    assert len(got) == len(expected)
    for data, (original, plain) in zip(got, expected):
        assert data == (original if plain is None else replace_udp_payload(linktype, original, plain))


def test_decrypted_frames_have_valid_checksums_per_tshark(tmp_path: Path, tshark: str) -> None:
    src = tmp_path / "in.pcap"
    _crafted(src, LINKTYPE_ETHERNET)
    _decrypt(src, tmp_path / "out.pcap")
    out = subprocess.run(
        [tshark, "-r", str(tmp_path / "out.pcap"), "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
         "-T", "fields", "-e", "ip.checksum.status", "-e", "udp.checksum.status"],
        check=True, capture_output=True, text=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert len(rows) == 60
    assert all(row == ["1", "1"] for row in rows), rows  # 1 = PROTO_CHECKSUM_E_GOOD


def test_merge_in_memory_equals_streaming_even_out_of_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    times = [[5, 1, 9, 9, 12], [3, 9, 9, 20]]                        # the first input is out of time order
    paths = []
    for k, series in enumerate(times):
        path = tmp_path / f"in{k}.pcap"
        with PcapWriter(path, LINKTYPE_ETHERNET) as w:
            for i, t in enumerate(series):
                w.write(t * 1000, frame(LINKTYPE_ETHERNET, build_udp(A[0], A[1], B[0], B[1], bytes([k, i]))))
        paths.append(path)
    merge_captures(paths, tmp_path / "memory.pcap")
    monkeypatch.setattr(merge, "IN_MEMORY_BYTES", -1)
    merge_captures(paths, tmp_path / "stream.pcap")
    assert (tmp_path / "memory.pcap").read_bytes() == (tmp_path / "stream.pcap").read_bytes()
    with open_capture(tmp_path / "memory.pcap") as reader:
        order = [(f.ts_ns // 1000, f.data[-2:]) for f in reader]
    # heapq.merge semantics: each input read in its own order, the smaller head first, ties to the first input.
    assert [t for t, _ in order] == [3, 5, 1, 9, 9, 9, 9, 12, 20]
    assert [d for t, d in order if t == 9] == [bytes([0, 2]), bytes([0, 3]), bytes([1, 1]), bytes([1, 2])]
