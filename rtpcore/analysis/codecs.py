"""Payload type → codec name and RTP clock rate, as Wireshark names them (static table + a dynamic map from SDP)."""
from __future__ import annotations

from collections.abc import Mapping

PT_PCMU = 0
PT_PCMA = 8
PT_G722 = 9
PT_CN = 13
PT_CN_OLD = 19
FIRST_DYNAMIC_PT = 96
TELEPHONE_EVENT = "telephone-event"

# (name shown by tshark's rtp,streams, clock rate used for jitter; 0 = jitter not computed) — Wireshark's rtp_pt.h
# and tap-rtp-analysis.c clock_map. G.722's RTP clock is 8000 although it samples at 16 kHz (RFC 3551 §4.5.2).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("g711U", 8000), 1: ("fs-1016", 8000), 2: ("g721", 8000), 3: ("GSM", 8000), 4: ("g723", 8000),
    5: ("DVI4 8k", 8000), 6: ("DVI4 16k", 16000), 7: ("Exp. from Xerox PARC", 8000), 8: ("g711A", 8000),
    9: ("g722", 8000), 10: ("16-bit audio, stereo", 44100), 11: ("16-bit audio, monaural", 44100),
    12: ("Qualcomm", 8000), 13: ("CN", 8000), 14: ("MPEG-I/II Audio", 90000), 15: ("g728", 8000),
    16: ("DVI4 11k", 11025), 17: ("DVI4 22k", 22050), 18: ("g729", 8000), 19: ("CN (old)", 8000),
    25: ("Sun CellB video encoding", 90000), 26: ("JPEG-compressed video", 90000), 28: ("'nv' program", 90000),
    31: ("h261", 90000), 32: ("MPEG-I/II Video", 90000), 33: ("MPEG-II transport streams", 90000),
    34: ("h263", 90000),
}
# Clock rates Wireshark knows for dynamic payloads by encoding name (prefix match, case-insensitive).
DYNAMIC_CLOCKS: dict[str, int] = {
    "amr": 8000, "amr-wb": 16000, "evs": 16000, "g7221": 16000, "g726-16": 8000, "g726-24": 8000,
    "g726-32": 8000, "g726-40": 8000, "g729d": 8000, "g729e": 8000, "gsm-efr": 8000, "h264": 90000,
    "opus": 48000, "red": 1000, "t140": 1000, TELEPHONE_EVENT: 8000,
}

PayloadMap = Mapping[int, tuple[str, int]]


def codec_of(pt: int, dynamic: PayloadMap | None = None) -> tuple[str, int]:
    """(codec name, clock rate for jitter) of a payload type; clock 0 when unknown or telephone-event (no jitter)."""
    if pt < FIRST_DYNAMIC_PT:
        return STATIC_PAYLOAD_TYPES.get(pt, (f"Unknown ({pt})", 0))
    if dynamic is None or pt not in dynamic:
        return f"RTPType-{pt}", 0
    name, clock = dynamic[pt]
    if name.lower().startswith(TELEPHONE_EVENT):
        return name, 0  # RFC 4733 §2.2.1: the timestamp does not advance, so jitter would be meaningless
    if clock <= 0:
        clock = max((c for n, c in DYNAMIC_CLOCKS.items() if name.lower().startswith(n)), default=0)
    return name, clock

