"""G.722 to WAV: our decoder equals ffmpeg's (an independent implementation) sample for sample, placed by timestamp × 2."""
from __future__ import annotations

import shutil
import subprocess
import wave
from array import array
from pathlib import Path

import pytest

from rtpcore.analysis.audio import stream_audio, write_wav
from rtpcore.analysis.codecs import PT_G722
from rtpcore.analysis.g722 import RATE, decode_g722
from rtpcore.analysis.packets import RtpPacket

FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="needs ffmpeg (scripts/system-deps.sh installs it)")
SECONDS = 2
OCTETS_PER_PACKET = 160      # 20 ms: 160 octets, 160 ticks of the 8000 Hz RTP clock, 320 samples at 16 kHz
PACKET_NS = 20_000_000
MIN_RMS = 1000               # the encoded tone is loud: a decoder that outputs near-silence is wrong


def _ffmpeg(*args: str) -> None:
    subprocess.run([str(FFMPEG), "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(G.722 bit stream made by ffmpeg's encoder from a tone + noise, ffmpeg's own decoding of it as s16le)."""
    folder = tmp_path_factory.mktemp("g722")
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={RATE}:duration={SECONDS}",
            "-f", "lavfi", "-i", f"anoisesrc=d={SECONDS}:c=pink:r={RATE}:a=0.3", "-filter_complex", "amix=inputs=2",
            "-ar", str(RATE), "-ac", "1", "-c:a", "g722", "-f", "g722", str(folder / "in.g722"))
    _ffmpeg("-f", "g722", "-i", str(folder / "in.g722"), "-f", "s16le", "-acodec", "pcm_s16le", str(folder / "ref.pcm"))
    return (folder / "in.g722").read_bytes(), (folder / "ref.pcm").read_bytes()


def _rms(pcm: bytes) -> float:
    samples = array("h", pcm)
    return (sum(s * s for s in samples) / len(samples)) ** 0.5


def test_decoder_equals_ffmpeg_sample_for_sample(encoded: tuple[bytes, bytes]) -> None:
    bitstream, reference = encoded
    ours = decode_g722(bitstream)
    assert len(ours) == len(reference) == SECONDS * RATE * 2
    mismatch = next((i for i, (a, b) in enumerate(zip(array("h", ours), array("h", reference))) if a != b), None)
    assert mismatch is None, f"first differing sample: {mismatch}"
    assert _rms(ours) > MIN_RMS


def _packets(bitstream: bytes, lost: set[int]) -> list[RtpPacket]:
    chunks = [bitstream[i:i + OCTETS_PER_PACKET] for i in range(0, len(bitstream), OCTETS_PER_PACKET)]
    base_ts = 0xFFFFF000   # the RTP timestamp wraps inside the stream
    return [RtpPacket(n + 1, n * PACKET_NS, "10.0.0.1", 4000, "10.0.0.2", 5000, 0x1234, PT_G722, n,
                      (base_ts + n * OCTETS_PER_PACKET) % (1 << 32), False, chunk)
            for n, chunk in enumerate(chunks) if n not in lost]


def test_stream_wav_is_16khz_placed_by_timestamp_times_two(encoded: tuple[bytes, bytes], tmp_path: Path) -> None:
    bitstream, reference = encoded
    audio = stream_audio("carrier", _packets(bitstream, set()))
    assert audio is not None and (audio.codec, audio.rate, audio.silent_samples) == ("G722", RATE, 0)
    with wave.open(str(write_wav(tmp_path / "g722.wav", audio))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        assert w.readframes(w.getnframes()) == reference


def test_lost_packet_leaves_its_320_samples_silent(encoded: tuple[bytes, bytes]) -> None:
    bitstream, reference = encoded
    lost = 10
    audio = stream_audio("carrier", _packets(bitstream, {lost}))
    assert audio is not None
    samples_per_packet = OCTETS_PER_PACKET * 2
    assert audio.samples == SECONDS * RATE and audio.silent_samples == samples_per_packet
    gap = slice(lost * samples_per_packet * 2, (lost + 1) * samples_per_packet * 2)
    assert audio.pcm[gap] == bytes(samples_per_packet * 2)
    assert audio.pcm[:gap.start] == reference[:gap.start]   # before the loss: ffmpeg's samples exactly
