"""`combined/report.html` (self-contained: inline CSS, both SVGs inline) and the one call that writes every report file.

`write_call_report` is what the pipeline and `rtphelper report` call: ladder.svg, timeline.svg, report.html,
report.md and audio/*.wav in combined/, each written to a temp name and renamed into place, so a reader never
sees half a report. WAVs are linked as relative files (audio/…), not embedded: an hour of G.711 is 115 MB of
PCM, too much for a data: URI.

These files are derived: `rtphelper report SESSION` rebuilds all of them from media_decrypted.pcap and
analysis.json (both forced to disk by the correlation), so they are renamed into place but not forced to disk
themselves (a call's WAVs alone are ~14 MB per 2 minutes; forcing them out is the slowest part of a report).
"""
from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rtpcore.analysis.call import AudioFile, CallAnalysis, write_audio
from rtpcore.analysis.ladder import build_ladder, escape, ladder_svg
from rtpcore.analysis.report_md import (
    AUDIO_DIR,
    LADDER_SVG,
    REPORT_HTML,
    REPORT_MD,
    TIMELINE_SVG,
    ReportContent,
    Table,
    render_markdown,
    report_content,
)
from rtpcore.analysis.packets import RtpPacket
from rtpcore.analysis.stats import StreamId
from rtpcore.analysis.timeline import stream_legs, timeline_svg
from rtpcore.fsutil import new_temp
from rtpcore.plan import LegPlan
from rtpcore.results import COMBINED_DIR, MEDIA_DECRYPTED, MEDIA_RAW, SIP_PLUS_MEDIA
from rtpcore.sip.capture import read_sip

TEMP_TOKEN_BYTES = 8
STEREO_SUFFIX = "-stereo"
PICTURES_AFTER = 3        # verdicts, legs, streams; then the timeline and the ladder; then DTMF and RTCP
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f24;background:#f6f7f9}
h1{font-size:22px;margin:0 0 8px} h2{font-size:17px;margin:28px 0 8px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin-bottom:16px;overflow-x:auto}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #dde1e7;padding:3px 8px;text-align:left;
vertical-align:top} th{background:#eef1f5} td{font-variant-numeric:tabular-nums}
tr.error td:first-child{background:#f8d7da;color:#721c24;font-weight:bold}
tr.warning td:first-child{background:#fff3cd;color:#856404;font-weight:bold}
tr.info td:first-child{background:#d1ecf1;color:#0c5460}
.facts{margin:0;padding-left:18px} .empty{color:#666;font-style:italic} .notes li{color:#6b4e00}
figure{margin:0} figure svg{max-width:100%;height:auto} audio{vertical-align:middle;margin:2px 8px}
"""


def _table_html(table: Table) -> str:
    """A table; verdict-like rows get their severity (first cell) as CSS class."""
    if not table.rows:
        return f'<p class="empty">{escape(table.empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "".join(f'<tr class="{escape(row[0])}">' + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    slug = table.title.lower().replace(" ", "-")
    return f'<table class="{escape(slug)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(content: ReportContent, ladder: str | None, timeline: str) -> str:
    """The whole page: facts, notes, tables, both SVGs inline, audio players, links to the pcaps; no outside resource."""
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">',
           f"<title>{escape(content.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{escape(content.title)}</h1>",
           '<ul class="facts">' + "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in content.facts)
           + "</ul>"]
    if content.notes:
        out.append('<section><h2>Notes</h2><ul class="notes">'
                   + "".join(f"<li>{escape(n)}</li>" for n in content.notes) + "</ul></section>")
    sections = [f"<section><h2>{escape(t.title)}</h2>{_table_html(t)}</section>" for t in content.tables]
    out += sections[:PICTURES_AFTER]
    out.append(f'<section><h2>Media timeline</h2><figure id="timeline">{timeline}</figure></section>')
    out.append('<section><h2>SIP ladder</h2><figure id="ladder">'
               + (ladder or '<p class="empty">no SIP pcap: no ladder</p>') + "</figure></section>")
    out += sections[PICTURES_AFTER:]
    out.append("<section><h2>Audio</h2>")
    if content.audio:
        out.append("<ul>" + "".join(
            f'<li><audio controls preload="none" src="{escape(rel)}"></audio>{escape(label)}</li>'
            for label, rel in content.audio) + "</ul>")
    else:
        out.append('<p class="empty">no decodable audio (G.711 only)</p>')
    out.append("</section><section><h2>Files</h2><ul>"
               + "".join(f'<li><a href="{escape(n)}">{escape(n)}</a></li>' for n in content.pcaps)
               + f'<li><a href="{REPORT_MD}">{REPORT_MD}</a></li></ul></section></body></html>')
    return "\n".join(out)


def combined_dir(out_dir: Path) -> Path:
    """combined/ of an output folder (the folder itself when it already is combined/)."""
    out_dir = Path(out_dir)
    return out_dir if out_dir.name == COMBINED_DIR else out_dir / COMBINED_DIR


def _audio_label(path: Path) -> str:
    """'src:port → dst:port 0xSSRC' (or '… stereo') from write_audio's file name."""
    stem = path.stem
    stereo = stem.endswith(STEREO_SUFFIX)
    parts = stem.removesuffix(STEREO_SUFFIX).split("-")
    ends = [p.replace("_", ":", 1) if p.count("_") == 1 else p for p in parts]
    text = " → ".join(ends[:2]) + (f" 0x{ends[2].upper()}" if len(ends) > 2 else "")
    return text + (" (stereo: one direction per channel)" if stereo else "")


def _swap_dir(staged: Path, final: Path) -> None:
    """Put a complete staged folder in final's place; the old folder is removed only after the rename."""
    old = final.with_name(f".{final.name}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.old")
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _write_text(path: Path, text: str) -> Path:
    """One report file, written beside its final name and renamed over it (derived: not forced to disk)."""
    temp = new_temp(path.parent, path.name)
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def write_call_audio(combined: Path, capture: Path,
                     packets: Mapping[StreamId, Sequence[RtpPacket]] | None) -> tuple[Path, list[Path]]:
    """The WAVs in a hidden folder of combined/ (place_call_audio puts it in place): the folder and the files."""
    staged = combined / f".{AUDIO_DIR}.{secrets.token_hex(TEMP_TOKEN_BYTES)}.part"
    try:
        return staged, write_audio(capture, staged, packets)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def place_call_audio(staged: Path, combined: Path) -> None:
    """The staged WAV folder becomes combined/audio/, replacing the old one whole."""
    _swap_dir(staged, combined / AUDIO_DIR)


def remove_call_report(combined: Path) -> None:
    """The report's text files go (their WAVs could not be written: a report must not link missing audio)."""
    for name in (LADDER_SVG, TIMELINE_SVG, REPORT_MD, REPORT_HTML):
        (combined / name).unlink(missing_ok=True)


def write_call_report(out_dir: Path, *, analysis: CallAnalysis, verdicts: Sequence[Mapping[str, Any]],
                      plan: LegPlan | None, sip_pcap: Path | None,
                      dtmf_relay: Sequence[Mapping[str, Any]] = (), audio: Sequence[AudioFile] | None = None,
                      pcaps: Sequence[str] | None = None) -> list[Path]:
    """ladder.svg, timeline.svg, report.html, report.md and audio/*.wav in out_dir's combined/; returns their paths.

    The ladder and the timeline share one time origin: the earlier of the call's first SIP message and the media
    capture's first frame. Without a SIP pcap (or plan) there is no ladder and no SIP event on the timeline.
    audio: the WAVs the caller writes itself at the same time (write_call_audio, place_call_audio), only named
    here; pcaps: the pcaps to link (default: those already in combined/).
    """
    combined = combined_dir(out_dir)
    combined.mkdir(parents=True, exist_ok=True)
    ladder = build_ladder(read_sip(sip_pcap), plan) if sip_pcap is not None and plan is not None else None
    first_sip = ladder.first_ns if ladder is not None else None
    origin = analysis.first_ts_ns if first_sip is None else min(analysis.first_ts_ns, first_sip)
    ladder_doc = ladder_svg(ladder, origin) if ladder is not None else None
    timeline_doc = timeline_svg(analysis, ladder.messages if ladder is not None else (), origin,
                                stream_legs(analysis, plan))
    staged, wavs = write_call_audio(combined, analysis.capture, analysis.packets) if audio is None else (None, [])
    try:
        names = [f.name for f in audio] if audio is not None else [w.name for w in wavs]
        listed = [(_audio_label(Path(name)), f"{AUDIO_DIR}/{name}") for name in names]
        if pcaps is None:
            pcaps = [name for name in (MEDIA_RAW, MEDIA_DECRYPTED, SIP_PLUS_MEDIA) if (combined / name).is_file()]
        content = report_content(analysis, verdicts, plan, listed, list(pcaps), ladder_doc is not None, dtmf_relay)
        texts = {LADDER_SVG: ladder_doc, TIMELINE_SVG: timeline_doc, REPORT_MD: render_markdown(content),
                 REPORT_HTML: render_html(content, ladder_doc, timeline_doc)}   # all rendered before any is replaced
        written = []
        for name, text in texts.items():
            if text is not None:
                written.append(_write_text(combined / name, text))
            else:
                (combined / name).unlink(missing_ok=True)  # an earlier run's ladder would belong to another SIP
        if staged is not None:
            place_call_audio(staged, combined)
    except BaseException:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    return written + [combined / AUDIO_DIR / name for name in names]
