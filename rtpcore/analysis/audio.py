"""Audio of a stream as 16-bit PCM WAV: G.711 µ-law/A-law decoded by table, lost packets as silence.

Samples are placed by RTP timestamp (a late packet lands where it belongs, a lost one leaves silence; a duplicate
writes the same samples twice); a stereo WAV puts two streams side by side, aligned by arrival time of their first
packets. G.722 (64 kbit/s) is decoded to 16 kHz by rtpcore.analysis.g722 (checked sample for sample against
ffmpeg); every other codec is listed as not decodable.
"""
from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter, sub
from pathlib import Path
from typing import Any

from rtpcore.analysis import g722
from rtpcore.analysis.codecs import PT_G722, PT_PCMA, PT_PCMU
from rtpcore.analysis.packets import RtpPacket
from rtpcore.pcap.reader import NS_PER_S

G711_RATE = 8000
SAMPLE_BYTES = 2
STEREO = 2
TS_MOD = 1 << 32
TS_HALF = 1 << 31
MAX_SECONDS = 4 * 3600          # a timestamp jump past this is not audio we place (a broken sender)
ULAW_BIAS = 0x84
ALAW_XOR = 0x55
PT_AT, TIMESTAMP_AT, PAYLOAD_AT = 7, 9, 11     # RtpPacket's fields, read by itemgetter at C level


def _ulaw(byte: int) -> int:
    """ITU-T G.711 µ-law expansion of one code word to a 16-bit linear sample."""
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4)
    return ULAW_BIAS - t if u & 0x80 else t - ULAW_BIAS


def _alaw(byte: int) -> int:
    """ITU-T G.711 A-law expansion of one code word to a 16-bit linear sample."""
    a = byte ^ ALAW_XOR
    t = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    if segment == 0:
        t += 8
    else:
        t = (t + 0x108) << (segment - 1)
    return t if a & 0x80 else -t


def _table(expand: Any) -> bytes:
    """256 code words → 512 bytes of little-endian int16, for bytes-level lookup."""
    return b"".join(expand(b).to_bytes(2, "little", signed=True) for b in range(256))


ULAW_TABLE = _table(_ulaw)
ALAW_TABLE = _table(_alaw)
DECODERS: dict[int, tuple[str, bytes]] = {PT_PCMU: ("PCMU", ULAW_TABLE), PT_PCMA: ("PCMA", ALAW_TABLE)}


@lru_cache(maxsize=4)
def _byte_tables(table: bytes) -> tuple[bytes, bytes]:
    """The low and high bytes of each code word's sample, as bytes.translate tables."""
    return table[0::2], table[1::2]


def decode_g711(payload: bytes, table: bytes) -> bytes:
    """Little-endian 16-bit PCM of a G.711 payload (one byte per sample), by two C-level translate passes."""
    low, high = _byte_tables(table)
    pcm = bytearray(2 * len(payload))
    pcm[0::2] = payload.translate(low)
    pcm[1::2] = payload.translate(high)
    return bytes(pcm)


def decodable(pt: int) -> bool:
    """Whether we can turn this payload type into PCM."""
    return pt in DECODERS or pt == PT_G722


def audio_rate(pt: int) -> int:
    """Samples per second of a decodable payload type's track (G.722: 16 kHz, G.711: 8 kHz)."""
    return g722.RATE if pt == PT_G722 else G711_RATE


@dataclass(frozen=True, slots=True)
class StreamAudio:
    """One stream's PCM (mono, 16-bit little-endian) and how it was assembled."""

    key: str
    codec: str
    rate: int
    pcm: bytes = field(repr=False)
    first_arrival_ns: int
    packets_decoded: int
    packets_skipped: int       # other payload types (CN, DTMF) or timestamps outside the placeable range
    silent_samples: int        # samples no packet covered (loss, gaps)

    @property
    def samples(self) -> int:
        """How many samples the track holds."""
        return len(self.pcm) // SAMPLE_BYTES

    def to_json(self) -> dict[str, Any]:
        """JSON form for reports (no audio bytes)."""
        return {"stream": self.key, "codec": self.codec, "rate": self.rate, "seconds": round(self.samples / self.rate, 3),
                "packets_decoded": self.packets_decoded, "packets_skipped": self.packets_skipped,
                "silent_samples": self.silent_samples}


def stream_audio(key: str, packets: Sequence[RtpPacket]) -> StreamAudio | None:
    """Decode one stream's main payload type into a track; None when that codec is not decodable."""
    if not packets:
        return None
    pt = next((p.pt for p in packets if decodable(p.pt)), packets[0].pt)
    if not decodable(pt):
        return None
    pts, stamps, payloads = (list(map(itemgetter(at), packets)) for at in (PT_AT, TIMESTAMP_AT, PAYLOAD_AT))
    if pt != PT_G722 and _back_to_back(pt, pts, stamps, payloads):
        codec, table = DECODERS[pt]
        whole = decode_g711(b"".join(payloads), table)
        return StreamAudio(key, codec, G711_RATE, whole, packets[0].ts_ns, len(packets), 0, 0)
    # Extended timestamps: each packet relative to the previous one, modulo 2³², so wraps are followed.
    placed: list[tuple[int, bytes]] = []
    ext = prev = stamps[0]
    for ppt, stamp, payload in zip(pts, stamps, payloads):
        step = (stamp - prev) % TS_MOD
        ext += step - TS_MOD if step >= TS_HALF else step
        prev = stamp
        if ppt == pt:
            placed.append((ext, payload))
    origin = min(e for e, _payload in placed)
    if pt == PT_G722:
        codec, rate, pcm, spans = "G722", audio_rate(pt), *_place_g722(placed, origin)
    else:
        codec, table = DECODERS[pt]
        rate, (pcm, spans) = G711_RATE, _place_g711(placed, origin, table)
    covered = _silence_outside(pcm, spans)
    decoded = len(spans)
    return StreamAudio(key, codec, rate, bytes(pcm), packets[0].ts_ns, decoded, len(packets) - decoded,
                       len(pcm) // SAMPLE_BYTES - covered)


def _back_to_back(pt: int, pts: Sequence[int], stamps: Sequence[int], payloads: Sequence[bytes]) -> bool:
    """The common G.711 case, checked at C level: one payload type, each packet starting where the last one ended
    (no loss, reordering, duplicate or wrap), within MAX_SECONDS; its track is then simply the payloads joined."""
    if pts.count(pt) != len(pts) or sum(map(len, payloads)) > MAX_SECONDS * G711_RATE:
        return False
    return list(map(sub, stamps[1:], stamps[:-1])) == list(map(len, payloads[:-1]))


def _place_g711(placed: list[tuple[int, bytes]], origin: int, table: bytes) -> tuple[bytearray, list[tuple[int, int]]]:
    """G.711: code words placed by timestamp in one buffer (a later packet wins), then expanded in one C-level pass.

    Returns the PCM and each placed packet's sample span; samples outside every span are not silence yet.
    """
    limit = MAX_SECONDS * G711_RATE
    codes = bytearray()
    spans = []
    for ext_ts, payload in placed:
        at = ext_ts - origin
        end = at + len(payload)       # a sample per octet and tick
        if end > limit:
            continue
        if end > len(codes):
            codes.extend(bytes(end - len(codes)))
        codes[at:end] = payload
        spans.append((at, end))
    return bytearray(decode_g711(bytes(codes), table)), spans


def _place_g722(placed: list[tuple[int, bytes]], origin: int) -> tuple[bytearray, list[tuple[int, int]]]:
    """G.722: decoded packet by packet in arrival order (the decoder has state), two samples per octet and tick."""
    decode = g722.G722Decoder().decode
    per_tick = g722.SAMPLES_PER_TICK
    limit = MAX_SECONDS * g722.RATE
    pcm = bytearray()
    spans = []
    for ext_ts, payload in placed:
        at = (ext_ts - origin) * per_tick
        end = at + len(payload) * per_tick
        if end > limit:
            continue
        if end * SAMPLE_BYTES > len(pcm):
            pcm.extend(bytes(end * SAMPLE_BYTES - len(pcm)))
        pcm[at * SAMPLE_BYTES:end * SAMPLE_BYTES] = decode(payload)
        spans.append((at, end))
    return pcm, spans


def _silence_outside(pcm: bytearray, spans: list[tuple[int, int]]) -> int:
    """Zero every sample no span covers (loss, gaps); returns how many samples the spans cover (overlaps once)."""
    total = reach = 0
    for start, end in sorted(spans):
        if end > reach:
            if start > reach:
                pcm[reach * SAMPLE_BYTES:start * SAMPLE_BYTES] = bytes((start - reach) * SAMPLE_BYTES)
            total += end - max(start, reach)
            reach = end
    return total


def write_wav(path: str | Path, audio: StreamAudio) -> Path:
    """A mono 16-bit PCM WAV of the track."""
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_BYTES)
        out.setframerate(audio.rate)
        out.writeframes(audio.pcm)  # the tables are little-endian already
    return path


def stereo_pcm(left: StreamAudio, right: StreamAudio) -> bytes:
    """Interleave two tracks (left, right), each delayed by its first arrival after the earlier one's.

    The tracks are little-endian already, so each sample's two bytes are copied by strided slices (C level).
    """
    if left.rate != right.rate:
        raise ValueError(f"cannot pair {left.key} ({left.rate} Hz) with {right.key} ({right.rate} Hz) in one WAV")
    start = min(left.first_arrival_ns, right.first_arrival_ns)
    leads = [(track.first_arrival_ns - start) * track.rate // NS_PER_S for track in (left, right)]
    length = max(lead + track.samples for lead, track in zip(leads, (left, right)))
    frame = STEREO * SAMPLE_BYTES
    both = bytearray(length * frame)
    for channel, (lead, track) in enumerate(zip(leads, (left, right))):
        at = lead * frame + channel * SAMPLE_BYTES
        stop = (lead + track.samples) * frame
        for byte in range(SAMPLE_BYTES):
            both[at + byte:stop:frame] = track.pcm[byte::SAMPLE_BYTES]
    return bytes(both)


def write_stereo_wav(path: str | Path, left: StreamAudio, right: StreamAudio) -> Path:
    """A stereo WAV: one direction per channel, aligned by arrival time."""
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(SAMPLE_BYTES)
        out.setframerate(left.rate)
        out.writeframes(stereo_pcm(left, right))
    return path
