"""WAV per stream: G.711 decoded sample for sample as Python's audioop does, silence exactly where packets were lost."""
from __future__ import annotations

import dataclasses
import warnings
import wave
from pathlib import Path

import pytest

from rtpcore.analysis.audio import ALAW_TABLE, ULAW_TABLE, stream_audio, write_stereo_wav, write_wav
from rtpcore.analysis.packets import read_media
from rtpcore.analysis.stats import compute_stats, stream_id
from rtpcore.callgen import VARIANTS, render
from rtpcore.callgen.media import PAYLOAD_SIZE, plaintext_payload
from tests.conftest import load_truth
from tests.rtpcore.test_analysis_helpers import impair

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the independent reference: CPython's C implementation of G.711 (removed in 3.13)

CORE_PEER = "10.77.2.10"  # the core phone: its leg is plain RTP in the generator's default call


def _plain_stream(folder: Path, media_name: str | None = None):
    media = read_media(folder / (media_name or load_truth(folder)["media"][0]))
    packets = [p for p in media.rtp if p.src == CORE_PEER]
    assert packets, "the core leg's RTP should be in the first media file"
    return media, packets


def _reference(packets, expand) -> bytes:
    """The generator's audio: its payload bytes for every sequence index from first to last, decoded by audioop."""
    first = packets[0].seq
    last_index = max((p.seq - first) % 65536 for p in packets) + first
    return b"".join(expand(plaintext_payload(packets[0].ssrc, i, PAYLOAD_SIZE), 2) for i in range(first, last_index + 1))


def test_tables_equal_audioop_for_every_code_word() -> None:
    every = bytes(range(256))
    assert ULAW_TABLE == audioop.ulaw2lin(every, 2)
    assert ALAW_TABLE == audioop.alaw2lin(every, 2)


@pytest.mark.parametrize(("pt", "expand"), [(0, audioop.ulaw2lin), (8, audioop.alaw2lin)])
def test_wav_equals_the_generated_audio_sample_for_sample(tmp_path: Path, pt: int, expand) -> None:
    folder = tmp_path / "call"
    render(dataclasses.replace(VARIANTS["inbound-proxy"], payload_type=pt), folder)
    _media, packets = _plain_stream(folder)
    audio = stream_audio("core", packets)
    assert audio is not None and audio.codec == ("PCMU" if pt == 0 else "PCMA")
    wav = write_wav(tmp_path / "core.wav", audio)
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        frames = w.readframes(w.getnframes())
    assert frames == _reference(packets, expand)
    assert audio.silent_samples == 0 and audio.packets_decoded == len(packets)


def test_lost_packets_are_silence_in_their_place(tmp_path: Path, generated) -> None:
    folder = generated("inbound-proxy")
    media, packets = _plain_stream(folder)
    src = folder / load_truth(folder)["media"][0]
    truth = impair(src, tmp_path / "lossy.pcap", packets[0].ssrc, seed=3, drop_runs=3, run_len=2, swaps=2, duplicates=2)
    lossy = [p for p in read_media(tmp_path / "lossy.pcap").rtp if p.ssrc == packets[0].ssrc]
    audio = stream_audio("core", lossy)
    assert audio is not None
    reference = bytearray(_reference(packets, audioop.ulaw2lin))
    received = {p.seq for p in lossy}
    for offset, p in enumerate(packets):
        if p.seq not in received:
            reference[offset * 320:(offset + 1) * 320] = bytes(320)
    assert audio.pcm == bytes(reference)       # reordered and duplicated packets land where they belong
    assert audio.silent_samples == truth.dropped * PAYLOAD_SIZE


def test_stereo_wav_aligns_the_two_directions_by_arrival(tmp_path: Path, generated) -> None:
    folder = generated("inbound-proxy")
    media = read_media(folder / load_truth(folder)["media"][0])
    streams = {stream_id(p): [] for p in media.rtp}
    for p in media.rtp:
        streams[stream_id(p)].append(p)
    out_ = next(v for k, v in streams.items() if k[0] == CORE_PEER)
    back = next(v for k, v in streams.items() if k[2] == CORE_PEER and k[3] == out_[0].sport)
    left, right = stream_audio("a", out_), stream_audio("b", back)
    assert left is not None and right is not None
    wav = write_stereo_wav(tmp_path / "leg.wav", left, right)
    with wave.open(str(wav)) as w:
        assert w.getnchannels() == 2
        frames = w.readframes(w.getnframes())
    lead = abs(left.first_arrival_ns - right.first_arrival_ns) * 8000 // 1_000_000_000
    late, early = (left, right) if left.first_arrival_ns > right.first_arrival_ns else (right, left)
    late_channel = audioop.tomono(frames, 2, 1, 0) if late is left else audioop.tomono(frames, 2, 0, 1)
    early_channel = audioop.tomono(frames, 2, 0, 1) if late is left else audioop.tomono(frames, 2, 1, 0)
    assert late_channel[:lead * 2] == bytes(lead * 2)
    assert late_channel[lead * 2:lead * 2 + len(late.pcm)] == late.pcm
    assert early_channel[:len(early.pcm)] == early.pcm


def test_undecodable_codecs_are_listed_not_guessed() -> None:
    from rtpcore.analysis.packets import RtpPacket
    g729 = [RtpPacket(1, 0, "a", 1, "b", 2, 7, 18, 1, 0, False, bytes(20))]   # G.722 is decoded now (test_analysis_g722)
    assert stream_audio("g729", g729) is None
    assert compute_stats(g729, 0)[0].codec == "g729"


def test_wav_of_the_decrypted_srtp_leg_equals_the_generated_audio(tmp_path: Path, generated) -> None:
    from rtpcore.pipeline import correlate

    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "out")
    carrier = [p for p in read_media(report.outputs[1]).rtp if p.src == "198.51.100.10"]
    audio = stream_audio("carrier", carrier)
    assert audio is not None and len(carrier) > 250
    assert write_wav(tmp_path / "carrier.wav", audio).stat().st_size == 44 + len(audio.pcm)
    assert audio.pcm == _reference(carrier, audioop.ulaw2lin)


@pytest.mark.parametrize(("pt", "expand"), [(0, audioop.ulaw2lin), (8, audioop.alaw2lin)])
def test_a_timestamp_wrap_takes_the_placing_path_and_gives_the_same_audio(tmp_path: Path, pt: int, expand) -> None:
    """A gap-free stream is decoded in one pass; the same stream with its RTP timestamp wrapping past 2³² after a
    few packets is placed packet by packet: both must be the generator's audio, sample for sample."""
    folder = tmp_path / "call"
    render(dataclasses.replace(VARIANTS["inbound-proxy"], payload_type=pt), folder)
    _media, packets = _plain_stream(folder)
    first = packets[0].timestamp
    shift = (1 << 32) - 5 * PAYLOAD_SIZE - first           # the 6th packet's timestamp wraps to 0
    wrapped = [p._replace(timestamp=(p.timestamp + shift) % (1 << 32)) for p in packets]
    assert any(p.timestamp < wrapped[0].timestamp for p in wrapped)
    straight, placed = stream_audio("core", packets), stream_audio("core", wrapped)
    assert straight is not None and placed is not None
    assert straight.pcm == placed.pcm == _reference(packets, expand)
    assert placed.silent_samples == 0 and placed.packets_decoded == len(packets)
