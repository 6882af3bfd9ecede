"""RTCP report blocks: the far end's loss, jitter and delay since our SR, as tshark decodes them; RTT by hand."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from rtpcore.analysis.packets import RtcpDatagram, read_media
from rtpcore.analysis.rtcp import parse_reports

NS = 1_000_000_000


def test_report_blocks_equal_tshark_on_a_real_capture(shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / "heplify_rtp_rtcp_sip_ipv4_udp.pcap"
    out = subprocess.run([tshark, "-r", str(path), "-Y", "rtcp.ssrc.fraction", "-T", "fields", "-e", "frame.number",
                          "-e", "rtcp.ssrc.identifier", "-e", "rtcp.ssrc.fraction", "-e", "rtcp.ssrc.cum_nr",
                          "-e", "rtcp.ssrc.jitter", "-e", "rtcp.ssrc.dlsr", "-e", "rtcp.ssrc.high_seq"],
                         capture_output=True, text=True, check=True).stdout
    media = read_media(path)
    ours: dict[int, list] = {}
    for b in parse_reports(media.rtcp, media.first_ts_ns):
        ours.setdefault(b.frame, []).append(b)
    checked = 0
    for line in out.splitlines():
        frame, ident, fraction, cum, jitter, dlsr, high = line.split("\t")
        blocks = ours[int(frame)]
        theirs = list(zip(ident.split(","), fraction.split(","), cum.split(","), jitter.split(","),
                          dlsr.split(","), high.split(",")))
        assert len(blocks) == len(theirs), frame
        for b, (i, f, c, j, d, h) in zip(blocks, theirs):
            assert b.source_ssrc == int(i, 16)
            assert b.fraction_lost_pct == int(f) * 100 / 256
            assert b.cumulative_lost == int(c)
            assert round(b.jitter_ms * 8) == int(j)        # G.711: 8 timestamp units per ms
            assert round(b.dlsr_ms * 65.536) == int(d)
            assert b.highest_seq & 0xFFFF == int(h)
            checked += 1
    assert checked == 40


def _sr(ssrc: int, ntp_s: int, ntp_frac: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, ntp_s, ntp_frac, 0, 10, 1600)


def _rr(ssrc: int, source: int, fraction: int, cumulative: int, jitter: int, lsr: int, dlsr: int) -> bytes:
    lost_word = (fraction << 24) | (cumulative & 0xFFFFFF)
    return struct.pack("!BBHIIIIIII", 0x81, 201, 7, ssrc, source, lost_word, 70000, jitter, lsr, dlsr)


def test_rtt_from_lsr_and_dlsr_and_negative_cumulative_loss() -> None:
    sr = _sr(0xAAAA, 0x12345678, 0x9ABC0000)
    lsr = (0x5678 << 16) | 0x9ABC
    # The far end answers 180 ms after our SR passed, having held it 150 ms (DLSR 0.15·65536): RTT 30 ms.
    rr = _rr(0xBBBB, 0xAAAA, 64, -3, 160, lsr, int(0.150 * 65536))
    datagrams = [RtcpDatagram(1, 10 * NS, "10.0.0.1", 5001, "10.0.0.2", 7001, sr),
                 RtcpDatagram(2, 10 * NS + 180_000_000, "10.0.0.2", 7001, "10.0.0.1", 5001, rr + b"\x00\x00")]
    (block,) = parse_reports(datagrams, 9 * NS)
    assert block.reporter_ssrc == 0xBBBB and block.source_ssrc == 0xAAAA and block.kind == "RR"
    assert block.fraction_lost_pct == 25.0
    assert block.cumulative_lost == -3             # duplicates: RFC 3550 allows it, 24-bit two's complement
    assert block.jitter_ms == 20.0
    assert block.rtt_ms is not None and abs(block.rtt_ms - 30.0) < 0.01
    assert block.time_s == 1.18


def test_srtcp_trailer_is_not_read_as_reports() -> None:
    sr = _sr(0xAAAA, 1, 2)
    encrypted = sr[:8] + bytes(range(20)) + b"\x80\x00\x00\x02" + bytes(10)   # E-bit + index, then the tag
    rr = _rr(0xBBBB, 0xAAAA, 0, 0, 0, 0, 0)
    # Index 2 reads as a 12-byte RTCP header that fits the datagram: only the payload-type check rejects it.
    encrypted_rr = rr[:8] + bytes(range(24)) + b"\x80\x00\x00\x02" + bytes(10)
    datagrams = [RtcpDatagram(1, NS, "a", 1, "b", 2, encrypted), RtcpDatagram(2, NS, "a", 1, "b", 2, encrypted_rr)]
    assert parse_reports(datagrams, 0) == ()
