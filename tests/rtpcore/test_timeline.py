"""The media timeline: per-100-ms bars equal tshark's frame times, losses marked, SIP events on the same axis."""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from rtpcore.analysis.call import CallAnalysis, analyze_capture
from rtpcore.analysis.ladder import build_ladder
from rtpcore.analysis.timeline import MAX_BARS, stream_legs, timeline_svg
from rtpcore.sip.capture import read_sip
from rtpcore.sip.legs import resolve_legs
from tests.conftest import load_truth
from tests.rtpcore.test_analysis_helpers import impair

SVG_NS = "{http://www.w3.org/2000/svg}"
BINS_PER_S = 10
StreamBins = dict[str, Counter[int]]


def tshark_bins(tshark: str, path: Path) -> StreamBins:
    """Packets per stream per 100 ms of frame.time_relative, counted from tshark's RTP dissection alone."""
    out = subprocess.run([tshark, "-o", "rtp.heuristic_rtp:TRUE", "-r", str(path), "-Y", "rtp", "-T", "fields",
                          "-e", "frame.time_relative", "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst",
                          "-e", "udp.dstport", "-e", "rtp.ssrc"], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    found: StreamBins = {}
    for line in out.splitlines():
        t, src, sport, dst, dport, ssrc = line.split("\t")
        key = f"{src}:{sport} -> {dst}:{dport} 0x{int(ssrc, 16):08X}"
        found.setdefault(key, Counter())[int(Decimal(t) * BINS_PER_S)] += 1
    return found


def svg_streams(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("data-stream") or "": g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "stream"}


def drawn(group: ET.Element, cls: str) -> list[ET.Element]:
    return [r for r in group.iter(f"{SVG_NS}rect") if r.get("class") == cls]


def svg_bins(svg: str) -> StreamBins:
    """Packets per stream per bin as the SVG draws them (only bins with packets have a bar)."""
    return {key: Counter({int(r.get("data-bin") or -1): int(r.get("data-count") or 0) for r in drawn(g, "bin")})
            for key, g in svg_streams(svg).items()}


@pytest.fixture(scope="module")
def impaired(generated, tmp_path_factory) -> tuple[Path, int, int, int]:
    """The raw media of a B2BUA call with 4 runs of 3 packets dropped from one carrier stream: path, ssrc, drops."""
    folder = generated("inbound-b2bua")
    truth = load_truth(folder)
    ssrc = int(truth["streams"][0]["ssrc"], 16)
    dest = tmp_path_factory.mktemp("timeline") / "impaired.pcap"
    done = impair(folder / truth["media"][0], dest, ssrc, seed=11, drop_runs=4, run_len=3)
    return dest, ssrc, done.dropped, done.bursts


def test_bins_equal_counts_from_tshark_frame_times(impaired, tshark: str) -> None:
    path, _ssrc, _dropped, _bursts = impaired
    analysis = analyze_capture(path)
    svg = timeline_svg(analysis, (), analysis.first_ts_ns)
    ours, theirs = svg_bins(svg), tshark_bins(tshark, path)
    assert len(theirs) >= 8 and ours == theirs
    assert all(g.get("data-bin-ms") == "100" for g in svg_streams(svg).values())


@pytest.mark.parametrize("name", ["heplify_rtp_rtcp_sip_ipv4_udp.pcap", "sipp_g711a.pcap"])
def test_bins_of_real_captures_equal_tshark(name: str, shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / name
    analysis = analyze_capture(path)
    theirs = tshark_bins(tshark, path)
    assert theirs and svg_bins(timeline_svg(analysis, (), analysis.first_ts_ns)) == theirs


def test_losses_are_marked_where_they_happened(impaired) -> None:
    path, ssrc, dropped, bursts = impaired
    analysis = analyze_capture(path)
    streams = svg_streams(timeline_svg(analysis, (), analysis.first_ts_ns))
    hit = next(g for key, g in streams.items() if key.endswith(f"0x{ssrc:08X}"))
    gaps = drawn(hit, "gap")
    assert len(gaps) == bursts == 4 and sum(int(r.get("data-missing") or 0) for r in gaps) == dropped == 12
    assert hit.get("data-lost") == "12"
    others = [g for key, g in streams.items() if not key.endswith(f"0x{ssrc:08X}")]
    assert others and not any(drawn(g, "gap") for g in others)


def _x_of(element: ET.Element, tag: str, attr: str) -> float:
    return float(next(element.iter(f"{SVG_NS}{tag}")).get(attr) or "nan")


def test_media_and_sip_share_one_time_axis(generated, tmp_path_factory) -> None:
    """The combined capture starts with the first packet, ~3 s after the INVITE: bars must still sit between 183 and BYE."""
    from rtpcore.pipeline import correlate

    folder = generated("inbound-b2bua")
    truth = load_truth(folder)
    sip = folder / truth["sip"]
    report = correlate(sip, truth["direction"], [folder / "media"], tmp_path_factory.mktemp("axis"))
    analysis = analyze_capture(report.outputs[1], sip=sip)
    plan = resolve_legs(sip, truth["direction"])
    ladder = build_ladder(read_sip(sip), plan)
    origin = min(analysis.first_ts_ns, ladder.first_ns or analysis.first_ts_ns)
    assert analysis.first_ts_ns - origin > 2 * 10**9          # the offset the timeline must apply
    root = ET.fromstring(timeline_svg(analysis, ladder.messages, origin, stream_legs(analysis, plan)))
    events = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "sip-event"]
    assert len(events) == len(ladder.messages) == 14
    at = {m.label: _x_of(g, "line", "x1") for m, g in zip(ladder.messages, events)}   # the last of each label
    streams = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "stream"]
    assert len(streams) == 4 and {g.get("data-leg") for g in streams} == {"carrier", "core"}
    xs = [_x_of(g, "line", "x1") for g in events]
    per_s = (xs[-1] - xs[0]) / ((ladder.messages[-1].ts_ns - ladder.messages[0].ts_ns) / 1e9)
    for g in streams:
        bars = [float(r.get("x") or "nan") for r in drawn(g, "bin")]
        assert at["183 Session Progress (INVITE)"] < min(bars) < at["ACK"]
        assert at["BYE"] < max(bars) < at["BYE"] + 0.5 * per_s


def test_a_long_stream_merges_whole_bins_and_keeps_every_packet(impaired) -> None:
    path, _ssrc, _dropped, _bursts = impaired
    analysis = analyze_capture(path)
    first = analysis.streams[0]
    long_bins = tuple([5] * (MAX_BARS * 2 + 7))             # ~10 minutes of 20 ms packets
    stretched = replace(first, stats=replace(first.stats, per_100ms=long_bins))
    longer = CallAnalysis(analysis.capture, analysis.first_ts_ns, (stretched,), ())
    group = next(iter(svg_streams(timeline_svg(longer, (), analysis.first_ts_ns)).values()))
    bars = drawn(group, "bin")
    assert group.get("data-bin-ms") == "300" and len(bars) <= MAX_BARS
    assert sum(int(r.get("data-count") or 0) for r in bars) == sum(long_bins)
