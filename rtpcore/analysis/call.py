"""One call for the analysis entry point: `analyze_capture(path) -> CallAnalysis`, the one call a report integrates."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.analysis.audio import StreamAudio, audio_rate, decodable, stream_audio, write_stereo_wav, write_wav
from rtpcore.analysis.dtmf import DtmfEvent, SipInfoDigit, event_payload_types, rtp_events, sip_info_digits
from rtpcore.analysis.emodel import EModelConfig, Quality, stream_quality
from rtpcore.analysis.packets import CaptureMedia, RtpPacket, read_media
from rtpcore.analysis.rtcp import ReportBlock, parse_reports
from rtpcore.analysis.stats import (
    PT_FIELD, StreamId, StreamStats, dynamic_payloads_from_sdp, group_streams, stream_stats,
)

if TYPE_CHECKING:
    from rtpcore.sip.capture import SipPacket

SCHEMA_VERSION = 2           # 2: streams carry `srtp`; the correlation adds `leg`, `direction` and `verdicts`
SRTP_UNKNOWN = "unknown"     # analysed without the correlation's decryption (a capture given by hand)


@dataclass(frozen=True, slots=True)
class SrtpResult:
    """What decryption said of one stream: authenticated / wrong key / no key / not SRTP, and its counts."""

    status: str
    decrypted: int = 0
    auth_failed: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON form: status and counts (never key material)."""
        return {"status": self.status, "decrypted": self.decrypted, "auth_failed": self.auth_failed}


@dataclass(frozen=True, slots=True)
class StreamAnalysis:
    """One stream: Wireshark-equal statistics, the E-model score, its key presses, whether it can be heard."""

    stats: StreamStats
    quality: Quality | None       # None for streams without audio (only telephone-events)
    dtmf: tuple[DtmfEvent, ...]
    decodable: bool
    srtp: SrtpResult | None = None   # set by the correlation, which decrypted the stream

    def to_json(self) -> dict[str, Any]:
        """JSON form: the stats, plus `mos`/`quality`, `dtmf` and `audio` ('decodable' / 'not decodable')."""
        doc = self.stats.to_json()
        doc["mos"] = None if self.quality is None else round(self.quality.mos, 2)
        doc["quality"] = None if self.quality is None else self.quality.to_json()
        doc["dtmf"] = [e.to_json() for e in self.dtmf]
        doc["audio"] = "decodable" if self.decodable else "not decodable"
        doc["srtp"] = (self.srtp or SrtpResult(SRTP_UNKNOWN)).to_json()
        return doc


@dataclass(frozen=True, slots=True)
class CallAnalysis:
    """Everything the analysis found in one capture (and its SIP pcap, when given)."""

    capture: Path
    first_ts_ns: int
    streams: tuple[StreamAnalysis, ...]
    rtcp: tuple[ReportBlock, ...]
    sip_dtmf: tuple[SipInfoDigit, ...] = ()
    emodel: EModelConfig = field(default_factory=EModelConfig)
    # The packets of each stream from the correlation's collected RTP (analyze_capture's media=), kept so the
    # report's WAVs need no second read (nor grouping) of the capture; None when the analysis read the file itself.
    packets: Mapping[StreamId, Sequence[RtpPacket]] | None = field(default=None, repr=False, compare=False)

    @property
    def undecodable_codecs(self) -> tuple[str, ...]:
        """Codecs of streams we cannot turn into WAV, each once."""
        return tuple(dict.fromkeys(s.stats.codec for s in self.streams if not s.decodable and s.quality is not None))

    def to_json(self) -> dict[str, Any]:
        """The `rtphelper analyze --json` document."""
        return {
            "schema": SCHEMA_VERSION,
            "capture": str(self.capture),
            "first_frame_epoch_s": self.first_ts_ns / 1e9,
            "emodel": {"jitter_buffer_ms": self.emodel.jitter_buffer_ms,
                       "one_way_delay_ms": self.emodel.one_way_delay_ms},
            "streams": [s.to_json() for s in self.streams],
            "rtcp": [b.to_json() for b in self.rtcp],
            "sip_info_dtmf": [d.to_json() for d in self.sip_dtmf],
            "undecodable_codecs": list(self.undecodable_codecs),
        }


def payload_map_from_sip(sip_pcap: Path | Sequence[SipPacket]) -> dict[int, tuple[str, int]]:
    """Dynamic payload types named by any SDP in a SIP capture (its path, or its messages), first naming wins."""
    from rtpcore.sip.capture import read_sip

    found: dict[int, tuple[str, int]] = {}
    for pkt in read_sip(sip_pcap) if isinstance(sip_pcap, Path) else sip_pcap:
        body = pkt.message.body
        if b"a=rtpmap:" in body:
            for pt, value in dynamic_payloads_from_sdp(body.decode("utf-8", "replace").splitlines()).items():
                found.setdefault(pt, value)
    return found


def analyze_capture(path: str | Path, *, sip: Path | Sequence[SipPacket] | None = None,
                    payloads: Mapping[int, tuple[str, int]] | None = None,
                    emodel: EModelConfig | None = None, media: CaptureMedia | None = None,
                    groups: Mapping[StreamId, Sequence[RtpPacket]] | None = None) -> CallAnalysis:
    """Statistics, MOS, DTMF and RTCP of every stream in a capture; `sip` adds SDP payload names and SIP INFO DTMF.

    media: the capture's RTP/RTCP already collected (the correlation's decrypt pass), instead of reading it again;
    groups: its RTP already grouped per stream (group_streams(media.rtp)), when the caller needed them too.
    """
    path = Path(path)
    emodel = emodel or EModelConfig()
    if isinstance(sip, Path):
        from rtpcore.sip.capture import read_sip

        sip = read_sip(sip)   # once, for the payload names and the SIP INFO digits
    dynamic = dict(payload_map_from_sip(sip)) if sip is not None else {}
    dynamic.update(payloads or {})
    collected = media
    media = media if media is not None else read_media(path)
    event_pts = event_payload_types(dynamic or None)
    streams = []
    stats = []
    groups = groups if groups is not None and collected is not None else group_streams(media.rtp)
    for packets in groups.values():
        s = stream_stats(packets, media.first_ts_ns, dynamic or None)
        stats.append(s)
        pts = set(s.payload_types)
        events = rtp_events(s.key, packets, media.first_ts_ns, event_pts) if pts & event_pts else ()
        quality = None if pts <= event_pts else stream_quality(s, emodel)
        streams.append(StreamAnalysis(s, quality, events, any(decodable(pt) for pt in pts)))
    clocks = {s.ssrc: s.clock_rate for s in stats if s.clock_rate}
    rtcp = parse_reports(media.rtcp, media.first_ts_ns, clocks)
    sip_dtmf = sip_info_digits(sip) if sip is not None else ()
    return CallAnalysis(path, media.first_ts_ns, tuple(streams), rtcp, sip_dtmf, emodel,
                        groups if collected is not None else None)


def _file_part(text: str) -> str:
    """An address/port/SSRC label turned into a safe file name part."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


@dataclass(frozen=True, slots=True)
class AudioFile:
    """One WAV write_audio makes: its file name and its streams (one: mono; two: stereo, one per channel)."""

    name: str
    streams: tuple[StreamId, ...]


def audio_files(packets_by_stream: Mapping[StreamId, Sequence[RtpPacket]]) -> list[AudioFile]:
    """The WAVs write_audio writes for these streams, in its order, without decoding any (the report can name them
    while another process writes them). A pair of opposite streams of different sample rates is a ValueError."""
    rates = {}
    for key, packets in packets_by_stream.items():
        pts = set(map(itemgetter(PT_FIELD), packets))
        main = next((p.pt for p in packets if decodable(p.pt)), None) if any(map(decodable, pts)) else None
        if main is not None:
            rates[key] = audio_rate(main)
    files = [AudioFile(_file_part(f"{src}_{sport}-{dst}_{dport}-{ssrc:08x}") + ".wav", ((src, sport, dst, dport, ssrc),))
             for src, sport, dst, dport, ssrc in rates]
    paired: set[StreamId] = set()
    for key in rates:
        if key in paired:
            continue
        back = next((k for k in rates if k[:4] == (key[2], key[3], key[0], key[1]) and k not in paired), None)
        if back is not None:
            paired.update((key, back))
            if rates[key] != rates[back]:
                raise ValueError(f"cannot pair {_label(key)} ({rates[key]} Hz) with {_label(back)} ({rates[back]} Hz) "
                                 "in one WAV")
            files.append(AudioFile(_file_part(f"{key[0]}_{key[1]}-{key[2]}_{key[3]}") + "-stereo.wav", (key, back)))
    return files


def _label(key: StreamId) -> str:
    """A stream's key as stream_audio labels it."""
    src, sport, dst, dport, ssrc = key
    return _file_part(f"{src}_{sport}-{dst}_{dport}-{ssrc:08x}")


def write_audio(path: str | Path, out_dir: Path,
                packets_by_stream: Mapping[StreamId, Sequence[RtpPacket]] | None = None) -> list[Path]:
    """A WAV per decodable stream, and a stereo WAV per pair of opposite streams (one direction per channel).

    packets_by_stream: path's RTP already collected and grouped (CallAnalysis.packets), so it is not read again.
    Writes exactly the files audio_files names, in its order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = packets_by_stream if packets_by_stream is not None else group_streams(read_media(path).rtp)
    tracks: dict[StreamId, StreamAudio] = {}
    written: list[Path] = []
    for planned in audio_files(groups):
        if len(planned.streams) == 1:
            key = planned.streams[0]
            audio = stream_audio(_label(key), groups[key])
            assert audio is not None, f"{planned.name}: audio_files named a stream stream_audio cannot decode"
            tracks[key] = audio
            written.append(write_wav(out_dir / planned.name, audio))
        else:
            left, right = planned.streams
            written.append(write_stereo_wav(out_dir / planned.name, tracks[left], tracks[right]))
    return written
