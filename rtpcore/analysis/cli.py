"""`rtphelper analyze PCAP`: per-stream statistics (as tshark's rtp,streams), MOS, DTMF, RTCP and WAV files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rtpcore.analysis.emodel import DEFAULT_JITTER_BUFFER_MS, DEFAULT_ONE_WAY_DELAY_MS, EModelConfig
from rtpcore.errors import InputError

if TYPE_CHECKING:  # issue 12 start-up: the analysis modules load only when `analyze` runs
    from rtpcore.analysis.call import CallAnalysis

EXIT_OK = 0


class AnalysisOptionError(InputError):
    """An analyze option is out of range; the message names the option and what to give."""


def add_analyze_arguments(p: argparse.ArgumentParser) -> None:
    """The analyze subcommand's options."""
    p.add_argument("pcap", metavar="PCAP", help="capture with the media (media_decrypted.pcap, media_raw.pcap, …)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--sip", metavar="FILE", type=Path,
                   help="SIP pcap of the call: names dynamic payload types from its SDP and lists SIP INFO DTMF")
    p.add_argument("--wav-dir", metavar="DIR", type=Path, help="write a WAV per G.711 or G.722 stream and a stereo WAV per pair")
    p.add_argument("--jitter-buffer-ms", type=float, default=DEFAULT_JITTER_BUFFER_MS,
                   help=f"fixed jitter buffer of the E-model; later packets count as lost (default {DEFAULT_JITTER_BUFFER_MS:g})")
    p.add_argument("--delay-ms", type=float, default=DEFAULT_ONE_WAY_DELAY_MS,
                   help=f"one-way delay the E-model scores (default {DEFAULT_ONE_WAY_DELAY_MS:g})")


def _lines(result: CallAnalysis) -> list[str]:
    """The human table: one line per stream as tshark prints it, then MOS, loss, DTMF and RTCP."""
    out = [f"{'Src':>22} {'Dest':>22} {'SSRC':>10} {'Payload':>12} {'Pkts':>6} {'Lost':>12} {'MaxΔ(ms)':>9} "
           f"{'MaxJ(ms)':>9} {'MeanJ(ms)':>9} {'MOS':>5}"]
    for s in result.streams:
        st = s.stats
        mos = "-" if s.quality is None else f"{s.quality.mos:.2f}"
        out.append(f"{st.src + ':' + str(st.sport):>22} {st.dst + ':' + str(st.dport):>22} 0x{st.ssrc:08X} "
                   f"{st.codec:>12} {st.packets:>6} {f'{st.lost} ({st.loss_pct:.1f}%)':>12} {st.max_delta_ms:>9.3f} "
                   f"{st.max_jitter_ms:>9.3f} {st.mean_jitter_ms:>9.3f} {mos:>5}")
        if st.duplicates or st.out_of_order or st.gaps:
            out.append(f"{'':>22} duplicates {st.duplicates}, out of order {st.out_of_order}, "
                       f"{st.unique_lost} lost in {st.loss_bursts} gap(s)")
        for e in s.dtmf:
            out.append(f"{'':>22} DTMF {e.digit!r} at {e.start_s:.3f} s, {e.duration_ms:.0f} ms, {e.volume_dbm0} dBm0"
                       f"{'' if e.ended else ', no end packet'}")
    for d in result.sip_dtmf:
        out.append(f"SIP INFO DTMF {d.digit!r} at {d.time_s:.3f} s ({d.src} → {d.dst})")
    for b in result.rtcp:
        rtt = "" if b.rtt_ms is None else f", RTT {b.rtt_ms:.1f} ms"
        out.append(f"RTCP {b.kind} at {b.time_s:.3f} s: 0x{b.reporter_ssrc:08X} about 0x{b.source_ssrc:08X}: "
                   f"lost {b.fraction_lost_pct:.1f}% ({b.cumulative_lost} total), jitter {b.jitter_ms:.1f} ms{rtt}")
    if result.undecodable_codecs:
        out.append(f"not decodable to WAV: {', '.join(result.undecodable_codecs)}")
    if not result.streams:
        out.append(f"no RTP streams in {result.capture}")
    return out


def analyze_command(args: argparse.Namespace) -> int:
    """Handler of `rtphelper analyze`."""
    from rtpcore.analysis.call import analyze_capture, write_audio

    try:
        emodel = EModelConfig(jitter_buffer_ms=args.jitter_buffer_ms, one_way_delay_ms=args.delay_ms)
    except ValueError as exc:
        option = "--jitter-buffer-ms" if "jitter" in str(exc) else "--delay-ms"
        raise AnalysisOptionError(f"{option}: {exc}") from None
    result = analyze_capture(Path(args.pcap), sip=args.sip, emodel=emodel)
    wavs = write_audio(Path(args.pcap), args.wav_dir) if args.wav_dir else []
    if args.json:
        doc = result.to_json()
        doc["wav_files"] = [str(p) for p in wavs]
        print(json.dumps(doc))
        return EXIT_OK
    print("\n".join(_lines(result)))
    for path in wavs:
        print(f"wrote {path}")
    return EXIT_OK
