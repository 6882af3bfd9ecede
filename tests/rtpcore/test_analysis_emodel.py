"""E-model R/MOS against hand-computed values, and on streams with injected loss and jitter."""
from __future__ import annotations

from pathlib import Path

import pytest

from rtpcore.analysis.emodel import EModelConfig, burst_ratio, delay_impairment, mos_from_r, score, stream_quality
from rtpcore.analysis.packets import read_media
from rtpcore.analysis.stats import compute_stats
from tests.conftest import load_truth
from tests.rtpcore.test_analysis_helpers import impair


def test_g711_without_loss_is_the_narrowband_ceiling() -> None:
    q = score("g711U", 0.0, 1.0)
    assert round(q.r_factor, 1) == 93.2 and round(q.mos, 2) == 4.41


def test_hand_computed_cases() -> None:
    # 1 % random loss, G.711 with PLC (Bpl 25.1): Ie_eff = 95·1/(1 + 25.1) = 3.6398 → R 89.560, MOS 4.328
    q = score("g711A", 1.0, 1.0)
    assert round(q.ie_eff, 3) == 3.640 and round(q.r_factor, 2) == 89.56 and round(q.mos, 3) == 4.328
    # 5 % loss in runs of 5: BurstR = 5·0.95 = 4.75; Ie_eff = 475/(5/4.75 + 25.1) = 18.163 → R 75.04
    assert burst_ratio(50, 10, 5.0) == pytest.approx(4.75)
    assert round(score("g711U", 5.0, 4.75).r_factor, 2) == 75.04
    # G.729 (Ie 11), no loss, 200 ms one way: Id = 4.8 + 0.11·22.7 = 7.297 → R 74.903
    q = score("g729", 0.0, 1.0, EModelConfig(one_way_delay_ms=200))
    assert round(delay_impairment(200), 3) == 7.297 and round(q.r_factor, 3) == 74.903
    # An unknown codec is scored as G.711 and says so.
    assert score("RTPType-111", 0.0, 1.0).codec_assumed and not q.codec_assumed
    assert mos_from_r(0) == 1.0 and mos_from_r(120) == 4.5


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="jitter_buffer_ms must be positive"):
        EModelConfig(jitter_buffer_ms=0)
    with pytest.raises(ValueError, match="one_way_delay_ms must not be negative"):
        EModelConfig(one_way_delay_ms=-1)


def _impaired(tmp_path: Path, generated, **kw) -> tuple:
    folder = generated("inbound-proxy")
    src = folder / load_truth(folder)["media"][0]
    media = read_media(src)
    ssrc = max(compute_stats(media.rtp, media.first_ts_ns), key=lambda s: s.packets).ssrc
    truth = impair(src, tmp_path / "x.pcap", ssrc, seed=5, **kw)
    media = read_media(tmp_path / "x.pcap")
    return next(s for s in compute_stats(media.rtp, media.first_ts_ns) if s.ssrc == ssrc), truth


def test_stream_quality_follows_the_injected_loss(tmp_path: Path, generated) -> None:
    stats, truth = _impaired(tmp_path, generated, drop_runs=4, run_len=4)
    expected = stats.packets + truth.dropped
    p = 100.0 * truth.dropped / expected
    hand = 95 * p / (p / (4 * (1 - p / 100)) + 25.1)
    q = stream_quality(stats)
    assert q.late_packets == 0
    assert q.loss_pct == pytest.approx(p)
    assert q.r_factor == pytest.approx(93.2 - hand)
    assert q.mos < score("g711U", p, 1.0).mos      # the same loss in bursts sounds worse than random


def test_jitter_beyond_the_buffer_becomes_loss(tmp_path: Path, generated) -> None:
    stats, _truth = _impaired(tmp_path, generated, jitter_ns=80_000_000)
    small, large = stream_quality(stats, EModelConfig(jitter_buffer_ms=20)), stream_quality(stats, EModelConfig(jitter_buffer_ms=200))
    assert small.late_packets > 0 and large.late_packets == 0
    assert small.mos < large.mos == pytest.approx(4.41, abs=0.005)
