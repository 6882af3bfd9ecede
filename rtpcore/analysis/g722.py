"""ITU-T G.722 decoder, 64 kbit/s mode: sub-band ADPCM code words → 16 kHz 16-bit PCM, for WAV export of wideband calls.

Each octet holds a 6-bit lower-band and a 2-bit higher-band ADPCM code (high bits first); the two reconstructed
sub-band signals are recombined by the receive QMF into two 16 kHz output samples. The decoder is stateful:
feed a stream's payloads in sending order to one `G722Decoder`. RTP carries G.722 with an 8000 Hz clock
(RFC 3551 kept a historical error), so a packet's first sample sits at 2 × its timestamp offset.
"""
from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass, field
from operator import mul

RATE = 16000                 # output samples per second
SAMPLES_PER_OCTET = 2        # one lower-band + one higher-band code → two output samples
SAMPLES_PER_TICK = 2         # RTP clock 8000 Hz for a 16 kHz codec (RFC 3551, section 4.5.2)
INT16_MIN, INT16_MAX = -32768, 32767
BAND_MIN, BAND_MAX = -16384, 16383          # reconstructed sub-band signals are 15-bit
LOW_LOG_MAX, HIGH_LOG_MAX = 18432, 22528    # limits of the log quantizer scale factors (G.722 LOGSCL/LOGSCH)
LOW_SCALE_OFFSET, HIGH_SCALE_OFFSET = 8 << 11, 10 << 11
QMF_OUTPUT_SHIFT = 11
QMF_TAPS = 24
POLE2_LIMIT = 12288
POLE1_LIMIT_BASE = 15360
ZERO_ORDER = 6

# G.722 Table 7 (ILB): 2^(i/32) in Q11, the linear scale factor's mantissa.
_INV_LOG2 = (2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
             2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008)
# Higher band: inverse quantizer (QQ2 × sign) and log scale factor steps (WH) by 2-bit code.
_HIGH_INV_QUANT = (-926, -202, 926, 202)
_HIGH_LOG_STEP = (798, -214)
# Lower band, 4-bit truncated code (the predictor's input) → inverse quantizer QQ4 and log step WL (Table 6).
_LOW_INV_QUANT4 = (0, -2557, -1612, -1121, -786, -530, -323, -150, 2557, 1612, 1121, 786, 530, 323, 150, 0)
_LOW_LOG_STEP = (-60, 3042, 1198, 538, 334, 172, 58, -30, 3042, 1198, 538, 334, 172, 58, -30, -60)
# Lower band, full 6-bit code → inverse quantizer QQ6 (the reconstructed signal at 64 kbit/s).
_LOW_INV_QUANT6 = (
    -17, -17, -17, -17, -3101, -2738, -2376, -2088, -1873, -1689, -1535, -1399, -1279, -1170, -1072, -982,
    -899, -822, -750, -682, -618, -558, -501, -447, -396, -347, -300, -254, -211, -170, -130, -91,
    3101, 2738, 2376, 2088, 1873, 1689, 1535, 1399, 1279, 1170, 1072, 982, 899, 822, 750, 682,
    618, 558, 501, 447, 396, 347, 300, 254, 211, 170, 130, 91, 54, 17, -54, -17)
# Receive QMF coefficients (Table 11), 12 per polyphase branch.
_QMF = (3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11)
_QMF_REVERSED = _QMF[::-1]


def _clip(value: int, low: int, high: int) -> int:
    return low if value < low else high if value > high else value


def _scale(log_factor: int) -> int:
    """Linear scale factor from the log one (G.722 block SCALEL/SCALEH)."""
    mantissa = _INV_LOG2[(log_factor >> 6) & 31]
    shift = log_factor >> 11
    return mantissa >> -shift if shift < 0 else mantissa << shift


@dataclass(slots=True)
class _Band:
    """One sub-band's adaptive predictor and quantizer state (G.722 section 3.6)."""

    log_factor: int = 0
    scale_factor: int = 0
    predicted: int = 0                       # s: signal estimate
    zero_part: int = 0                       # sz: zero-section output
    signs: list[bool] = field(default_factory=lambda: [False, False])   # p(n-1), p(n-2) < 0
    pole: list[int] = field(default_factory=lambda: [0, 0])             # a1, a2
    zero: list[int] = field(default_factory=lambda: [0] * ZERO_ORDER)   # b1..b6
    diffs: list[int] = field(default_factory=lambda: [0] * ZERO_ORDER)  # d(n-1)..d(n-6), doubled
    last_recon: int = 0                      # r(n-1), doubled

    def adapt(self, diff: int) -> None:
        """Update poles, zeros and the signal estimate with this sample's quantized difference."""
        negative = self.zero_part + diff < 0
        sg1 = 1 if negative != self.signs[0] else -1
        sg2 = 1 if negative == self.signs[1] else -1
        self.signs[1], self.signs[0] = self.signs[0], negative
        a1, a2 = self.pole
        a2 = _clip((sg1 * _clip(a1, -8191, 8191) >> 5) + (sg2 << 7) + (a2 * 127 >> 7), -POLE2_LIMIT, POLE2_LIMIT)
        limit = POLE1_LIMIT_BASE - a2
        a1 = _clip(-192 * sg1 + (a1 * 255 >> 8), -limit, limit)
        self.pole[0], self.pole[1] = a1, a2
        diffs = self.diffs
        if diff:
            zero = [(b * 255 >> 8) + (-128 if (d ^ diff) < 0 else 128) for b, d in zip(self.zero, diffs)]
        else:
            zero = [b * 255 >> 8 for b in self.zero]
        self.zero = zero
        diffs.insert(0, _clip(diff << 1, INT16_MIN, INT16_MAX))
        diffs.pop()
        self.zero_part = sum([b * d >> 15 for b, d in zip(zero, diffs)])
        recon = _clip((self.predicted + diff) << 1, INT16_MIN, INT16_MAX)
        self.predicted = _clip(self.zero_part + (a1 * recon >> 15) + (a2 * self.last_recon >> 15), INT16_MIN, INT16_MAX)
        self.last_recon = recon


class G722Decoder:
    """Stateful 64 kbit/s G.722 decoder: `decode(payload)` → little-endian 16-bit PCM at 16 kHz, 2 samples per octet."""

    def __init__(self) -> None:
        self._low = _Band(scale_factor=8)
        self._high = _Band(scale_factor=2)
        self._history = [0] * (QMF_TAPS - 2)    # the QMF's last 22 inputs (sum, difference interleaved)

    def decode(self, payload: bytes) -> bytes:
        """One packet's code words; call in sending order (the ADPCM state carries over)."""
        low, high, history = self._low, self._high, self._history
        out: array[int] = array("h")
        for octet in payload:
            ilow, ihigh = octet & 0x3F, octet >> 6
            rlow = _clip((low.scale_factor * _LOW_INV_QUANT6[ilow] >> 10) + low.predicted, BAND_MIN, BAND_MAX)
            code4 = ilow >> 2
            low.adapt(low.scale_factor * _LOW_INV_QUANT4[code4] >> 10)
            low.log_factor = _clip((low.log_factor * 127 >> 7) + _LOW_LOG_STEP[code4], 0, LOW_LOG_MAX)
            low.scale_factor = _scale(low.log_factor - LOW_SCALE_OFFSET)
            dhigh = high.scale_factor * _HIGH_INV_QUANT[ihigh] >> 10
            rhigh = _clip(dhigh + high.predicted, BAND_MIN, BAND_MAX)
            high.adapt(dhigh)
            high.log_factor = _clip((high.log_factor * 127 >> 7) + _HIGH_LOG_STEP[ihigh & 1], 0, HIGH_LOG_MAX)
            high.scale_factor = _scale(high.log_factor - HIGH_SCALE_OFFSET)
            history.append(rlow + rhigh)
            history.append(rlow - rhigh)
            even = sum(map(mul, history[0::2], _QMF))          # the last 24 inputs: 12 even, 12 odd taps
            odd = sum(map(mul, history[1::2], _QMF_REVERSED))
            out.append(_clip(odd >> QMF_OUTPUT_SHIFT, INT16_MIN, INT16_MAX))
            out.append(_clip(even >> QMF_OUTPUT_SHIFT, INT16_MIN, INT16_MAX))
            del history[:2]
        if sys.byteorder != "little":   # WAV and s16le are little-endian
            out.byteswap()
        return out.tobytes()


def decode_g722(payload: bytes) -> bytes:
    """A whole G.722 bit stream (one call's payloads, in order) → 16 kHz little-endian 16-bit PCM."""
    return G722Decoder().decode(payload)
