"""R-factor and MOS per stream: the ITU-T G.107 E-model, simplified the way VoIPmonitor does it.

Formula (all inputs per stream)::

    R     = R0s − Id − Ie_eff                         R0s = Ro − Is = 93.2 (G.107 defaults: no echo, quiet room)
    Id    = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)  d = configured one-way delay in ms (Cole & Rosenbluth)
    Ie_eff= Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)
    Ppl   = 100 · (lost + late) / expected            lost from the sequence numbers (duplicates do not hide loss),
                                                      late = packets a fixed jitter buffer of `jitter_buffer_ms`
                                                      would have thrown away; it re-anchors at each talkspurt
                                                      (marker bit, or 500 ms without packets) on its fastest packet
    BurstR= mean loss-run length · (1 − Ppl/100)      observed runs / runs expected from random loss; ≥ 1;
                                                      each late packet counts as a run of its own
    MOS   = 1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶  for 0 < R < 100 (1 below, 4.5 above)

Ie and Bpl come from ITU-T G.113 Appendix I (G.711 with packet-loss concealment: Bpl 25.1). G.711 with no loss and
no delay gives R 93.2, MOS 4.41 — the ceiling of a narrowband call.

Limits: the buffer follows clock drift only at talkspurt starts (a sender whose clock runs fast all through a
talkspurt is scored as late); a listening-quality estimate from the network figures only — no echo, no signal levels, no talker
overlap; delay is what you configure (a capture at the relay does not see mouth-to-ear delay; add the jitter
buffer's depth if you want it counted); wideband codecs (G.722) are scored on the narrowband scale like G.711;
codecs without G.113 values are scored as G.711 and flagged `codec_assumed`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotation only: `rtphelper --help` reads this module's defaults without the stats code
    from rtpcore.analysis.stats import StreamStats

R0S = 93.2
DELAY_SLOPE = 0.024
DELAY_KNEE_MS = 177.3
DELAY_KNEE_SLOPE = 0.11
IE_MAX = 95.0
MOS_MIN = 1.0
MOS_MAX = 4.5
DEFAULT_JITTER_BUFFER_MS = 50.0
DEFAULT_ONE_WAY_DELAY_MS = 0.0


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """G.113 Appendix I equipment impairment (Ie) and packet-loss robustness (Bpl) of a codec."""

    ie: float
    bpl: float


G711 = CodecImpairment(0.0, 25.1)
CODEC_IMPAIRMENTS: dict[str, CodecImpairment] = {
    "g711u": G711, "g711a": G711, "pcmu": G711, "pcma": G711,
    "g722": G711,                                    # narrowband scale: see the module's limits
    "g729": CodecImpairment(11.0, 19.0),
    "g723": CodecImpairment(15.0, 16.1),
    "gsm": CodecImpairment(20.0, 10.0),              # GSM full rate
    "ilbc": CodecImpairment(11.0, 32.0),
}


@dataclass(frozen=True, slots=True)
class EModelConfig:
    """What the capture cannot tell: the jitter buffer's depth and the one-way delay to score."""

    jitter_buffer_ms: float = DEFAULT_JITTER_BUFFER_MS
    one_way_delay_ms: float = DEFAULT_ONE_WAY_DELAY_MS

    def __post_init__(self) -> None:
        if self.jitter_buffer_ms <= 0:
            raise ValueError(f"jitter_buffer_ms must be positive, got {self.jitter_buffer_ms}")
        if self.one_way_delay_ms < 0:
            raise ValueError(f"one_way_delay_ms must not be negative, got {self.one_way_delay_ms}")


@dataclass(frozen=True, slots=True)
class Quality:
    """The E-model's inputs and verdict for one stream."""

    r_factor: float
    mos: float
    loss_pct: float          # Ppl: lost + late
    late_packets: int
    burst_ratio: float
    ie_eff: float
    delay_impairment: float
    codec_assumed: bool

    def to_json(self) -> dict[str, Any]:
        """JSON form for reports."""
        return {"r_factor": round(self.r_factor, 2), "mos": round(self.mos, 2), "loss_pct": round(self.loss_pct, 3),
                "late_packets": self.late_packets, "burst_ratio": round(self.burst_ratio, 3),
                "ie_eff": round(self.ie_eff, 3), "delay_impairment": round(self.delay_impairment, 3),
                "codec_assumed": self.codec_assumed}


def delay_impairment(delay_ms: float) -> float:
    """Id from the one-way delay (G.107 simplified by Cole & Rosenbluth)."""
    excess = max(0.0, delay_ms - DELAY_KNEE_MS)
    return DELAY_SLOPE * delay_ms + DELAY_KNEE_SLOPE * excess


def effective_ie(codec: CodecImpairment, loss_pct: float, burst_ratio: float) -> float:
    """Ie_eff (G.107 §7.2): the codec's impairment grown by packet loss and its burstiness."""
    if loss_pct <= 0:
        return codec.ie
    return codec.ie + (IE_MAX - codec.ie) * loss_pct / (loss_pct / burst_ratio + codec.bpl)


def mos_from_r(r: float) -> float:
    """G.107 Annex B: R to the MOS a listener would give."""
    if r <= 0:
        return MOS_MIN
    if r >= 100:
        return MOS_MAX
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def burst_ratio(lost: int, runs: int, loss_pct: float) -> float:
    """BurstR = observed mean run length over the random-loss one, 1/(1 − p); 1 without loss."""
    if lost <= 0 or runs <= 0:
        return 1.0
    return max(1.0, lost / runs * (1 - loss_pct / 100))


def codec_impairment(codec: str) -> tuple[CodecImpairment, bool]:
    """(Ie/Bpl, assumed?) for a codec name as tshark prints it (g711U, g729, …)."""
    key = codec.lower().replace("-", "").replace(".", "")
    for name, value in CODEC_IMPAIRMENTS.items():
        if key.startswith(name):
            return value, False
    return G711, True


def score(codec: str, loss_pct: float, burst: float, config: EModelConfig = EModelConfig(),
          late_packets: int = 0) -> Quality:
    """R and MOS from the E-model inputs directly."""
    impairment, assumed = codec_impairment(codec)
    ie_eff = effective_ie(impairment, loss_pct, burst)
    i_d = delay_impairment(config.one_way_delay_ms)
    r = max(0.0, min(100.0, R0S - i_d - ie_eff))
    return Quality(r, mos_from_r(r), loss_pct, late_packets, burst, ie_eff, i_d, assumed)


def stream_quality(stats: StreamStats, config: EModelConfig = EModelConfig()) -> Quality:
    """The E-model for one stream: loss from its sequence gaps, late packets from its delay histogram."""
    late = stats.late_packets(config.jitter_buffer_ms)
    received = stats.packets - stats.duplicates
    expected = received + stats.unique_lost
    lost = stats.unique_lost + late
    loss_pct = 100.0 * lost / expected if expected else 0.0
    return score(stats.codec, loss_pct, burst_ratio(lost, stats.loss_bursts + late, loss_pct), config, late)
