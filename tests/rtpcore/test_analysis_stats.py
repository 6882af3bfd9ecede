"""Per-stream RTP statistics equal tshark's rtp,streams (packets, lost, max delta exactly; jitter within 0.01 ms)."""
from __future__ import annotations

from pathlib import Path

import pytest

from rtpcore.analysis.packets import read_media
from rtpcore.analysis.stats import StreamStats, compute_stats
from rtpcore.callgen import VARIANTS as ALL_VARIANTS
from tests.conftest import load_truth
from tests.rtpcore.test_analysis_helpers import tshark_streams

JITTER_TOLERANCE_MS = 0.01
# A representative set: proxy/B2BUA, both directions, IPv6, VLAN, SLL2, pcapng, re-INVITE, ROC, wraps, rolling
# files, duplicates, latching, two senders on one port, RTCP-mux.
# issue 11: now every generator variant (the impaired ones included), not a representative set.
VARIANTS = sorted(ALL_VARIANTS)
PUBLIC = ["sipp_g711a.pcap", "sipp_dtmf_2833_1.pcap", "heplify_rtp_rtcp_sip_ipv4_udp.pcap"]


def _stats(path: Path) -> dict[tuple[str, int, str, int, int], StreamStats]:
    media = read_media(path)
    return {(s.src, s.sport, s.dst, s.dport, s.ssrc): s for s in compute_stats(media.rtp, media.first_ts_ns)}


def assert_equal_to_tshark(tshark: str, path: Path) -> int:
    """Every stream tshark lists is ours with the same figures, and we list no other; returns the stream count."""
    theirs = tshark_streams(tshark, path)
    ours = _stats(path)
    assert set(ours) == set(theirs), f"{path.name}: streams differ: ours {sorted(ours)} tshark {sorted(theirs)}"
    for key, row in theirs.items():
        s = ours[key]
        where = f"{path.name} {s.key}"
        assert s.packets == int(row["pkts"]), where
        assert s.lost == int(row["lost"]), where
        assert f"{s.max_delta_ms:.3f}" == row["max_delta"], where
        assert f"{s.min_delta_ms:.3f}" == row["min_delta"], where
        assert f"{s.first_s:.6f}" == row["start"] and f"{s.last_s:.6f}" == row["end"], where
        assert abs(s.max_jitter_ms - float(row["max_jitter"])) <= JITTER_TOLERANCE_MS, where
        assert abs(s.mean_jitter_ms - float(row["mean_jitter"])) <= JITTER_TOLERANCE_MS, where
    return len(theirs)


@pytest.mark.parametrize("name", VARIANTS)
def test_generated_media_equals_tshark(name: str, generated, tshark: str) -> None:
    folder = generated(name)
    counted = sum(assert_equal_to_tshark(tshark, folder / media) for media in load_truth(folder)["media"])
    assert counted >= 2


@pytest.mark.parametrize("name", PUBLIC)
def test_public_capture_equals_tshark(name: str, shared_pcaps: Path, tshark: str) -> None:
    assert assert_equal_to_tshark(tshark, shared_pcaps / name) >= 1


def test_fax_capture_audio_direction_equals_tshark(shared_pcaps: Path, tshark: str) -> None:
    # Known difference, documented in README: after the re-INVITE to T.38 (m=image udptl) tshark decodes the later
    # packets towards 15580's peer as T.38 from the SDP; we read RTP headers only. The direction whose RTP
    # timestamp restarts at 0 after the fax (in time for Wireshark: it wraps past the first timestamp) agrees.
    path = shared_pcaps / "heplify_FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"
    theirs = tshark_streams(tshark, path)
    key = ("10.23.1.52", 16756, "10.35.60.100", 15580, 0x17D90134)
    s = _stats(path)[key]
    row = theirs[key]
    assert (s.packets, s.lost, f"{s.max_delta_ms:.3f}") == (int(row["pkts"]), int(row["lost"]), row["max_delta"])
    assert f"{s.max_delta_ms:.3f}" == "9199.842"
    assert abs(s.max_jitter_ms - float(row["max_jitter"])) <= JITTER_TOLERANCE_MS
    assert abs(s.mean_jitter_ms - float(row["mean_jitter"])) <= JITTER_TOLERANCE_MS


def _runs(numbers: set[int]) -> int:
    """How many separate runs of consecutive numbers (each run is one sequence gap)."""
    return sum(1 for n in numbers if n - 1 not in numbers)


# issue 11: the impairments are generator knobs now (docs/GENERATOR.md "Impairments"), acting on carrier->relay.
@pytest.mark.parametrize("knobs", [
    {"lost_packets": (33, 70, 101, 150, 188, 230, 260)},                   # random single losses
    {"loss_bursts": ((40, 5), (120, 5), (200, 5))},                        # bursts
    {"duplicated_packets": (30, 60, 90, 120)},                             # duplicates: tshark's lost goes negative
    {"reordered_packets": (25, 50, 75, 100, 125, 150)},                    # reordering: late packets
    {"lost_packets": (40,), "loss_bursts": ((100, 3), (180, 3)), "duplicated_packets": (60, 140),
     "reordered_packets": (80, 220, 260)},                                 # all together
    {"jitter_ms": 15.0},                                                   # up to 15 ms of arrival jitter
    {"loss_rate": 0.05, "loss_seed": 3},                                   # 5 % random loss
], ids=["single", "bursts", "duplicates", "reorder", "together", "jitter", "rate"])
def test_impaired_stream_equals_tshark_and_the_injected_truth(tmp_path: Path, tshark: str, knobs: dict) -> None:
    from rtpcore.callgen import render, variant

    truth = render(variant("inbound-proxy", **knobs), tmp_path / "call")
    media = tmp_path / "call" / truth["media"][0]
    assert_equal_to_tshark(tshark, media)
    t = next(s for s in truth["streams"] if s["kind"] == "rtp" and s["src"] == "198.51.100.10:30000")
    stream = next(s for s in _stats(media).values() if f"0x{s.ssrc:08x}" == t["ssrc"])
    assert stream.unique_lost == t["lost"]
    assert stream.duplicates == t["duplicates"]
    assert stream.out_of_order == t["reordered"]
    assert stream.lost == t["lost"] - t["duplicates"]  # Wireshark: expected − received, duplicates included
    assert stream.packets == t["packets"] + t["duplicates"]
    lost = set(knobs.get("lost_packets", ())) | {n for first, count in knobs.get("loss_bursts", ())
                                                 for n in range(first, first + count)}
    if lost:
        assert stream.loss_bursts == _runs(lost) and t["lost"] == len(lost)
    assert sum(stream.per_100ms) == stream.packets
    if "jitter_ms" in knobs:
        assert stream.max_jitter_ms > 1.0
    elif not knobs.get("reordered_packets"):
        assert stream.max_jitter_ms < 1.0


@pytest.mark.parametrize("name", ["inbound-proxy", "srtp-both-legs", "mid-call", "reinvite-rekey", "gcm",
                                  "impaired-loss", "impaired-reorder-jitter", "ssrc-change", "dtmf"])
def test_correlation_outputs_equal_tshark(name: str, generated, tshark: str, tmp_path: Path) -> None:
    from rtpcore.pipeline import correlate

    folder = generated(name)
    truth = load_truth(folder)
    select = truth.get("select") or {}
    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "out",
                       call_id=select.get("call_id"))
    for output in report.outputs:  # media_raw, media_decrypted, SIP_plus_media_decrypted (SDP-set-up streams)
        assert assert_equal_to_tshark(tshark, output) >= 4
