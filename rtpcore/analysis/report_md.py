"""The call report's tables (verdicts, legs, streams, RTCP, DTMF) built once, and `combined/report.md` from them.

The tables are plain strings so report.html and report.md show the same figures; every free text that could
carry SDP (warnings, verdict text and evidence) goes through `redact`, so no SDES key reaches a report.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtpcore.analysis.call import CallAnalysis
from rtpcore.analysis.timeline import UNKNOWN_LEG, stream_legs
from rtpcore.plan import LegPlan
from rtpcore.sip.crypto import redact

SEVERITIES = ("error", "warning", "info")
VERDICT_KEYS = ("leg", "direction", "kind", "severity", "text", "evidence")
NONE_TEXT = "–"
LADDER_SVG = "ladder.svg"
TIMELINE_SVG = "timeline.svg"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
AUDIO_DIR = "audio"


@dataclass(frozen=True, slots=True)
class Table:
    """A titled table of strings: what both renderers draw."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str            # what to say when there is no row


@dataclass(frozen=True, slots=True)
class ReportContent:
    """Everything a report shows, independent of HTML or markdown; links are relative to combined/."""

    title: str
    facts: tuple[tuple[str, str], ...]          # (name, value) lines under the title
    tables: tuple[Table, ...]
    notes: tuple[str, ...]                      # plan warnings and findings, redacted
    audio: tuple[tuple[str, str], ...]          # (label, relative WAV path)
    pcaps: tuple[str, ...]                      # relative names of the pcaps present
    has_ladder: bool


def _evidence_text(evidence: Any) -> str:
    """Evidence dict as 'key=value, …' in one line (values as compact JSON), redacted."""
    if isinstance(evidence, Mapping):
        return redact(", ".join(f"{k}={json.dumps(v, separators=(',', ':'), default=str)}"
                                for k, v in evidence.items()))
    return NONE_TEXT if evidence in (None, "") else redact(str(evidence))


def verdict_rows(verdicts: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, ...], ...]:
    """One row per verdict, errors first (stable within a severity); an unknown severity is shown as info."""
    rows = []
    for v in verdicts:
        severity = str(v.get("severity", "info"))
        severity = severity if severity in SEVERITIES else "info"
        rows.append((severity, str(v.get("leg", UNKNOWN_LEG)), str(v.get("direction", UNKNOWN_LEG)),
                     str(v.get("kind", "")), redact(str(v.get("text", ""))), _evidence_text(v.get("evidence"))))
    return tuple(sorted(rows, key=lambda r: SEVERITIES.index(r[0])))


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def stream_table(analysis: CallAnalysis, plan: LegPlan | None) -> Table:
    """Every stream of the analysis with the figures tshark shows, our loss bookkeeping, MOS and DTMF."""
    legs = stream_legs(analysis, plan)
    rows = []
    for s in analysis.streams:
        st = s.stats
        digits = "".join(e.digit for e in s.dtmf) or NONE_TEXT
        rows.append((legs.get(st.key, UNKNOWN_LEG), f"{st.src}:{st.sport} → {st.dst}:{st.dport}", f"0x{st.ssrc:08X}",
                     st.codec, f"{st.first_s:.3f}–{st.last_s:.3f}", str(st.packets), str(st.expected),
                     f"{st.lost} ({st.loss_pct:.1f}%)", str(st.duplicates), str(st.out_of_order),
                     _num(st.max_delta_ms), _num(st.max_jitter_ms), _num(st.mean_jitter_ms),
                     NONE_TEXT if s.quality is None else f"{s.quality.mos:.2f}",
                     digits, "yes" if s.decodable else "no"))
    return Table("Streams", ("leg", "stream", "SSRC", "codec", "time in capture (s)", "packets", "expected", "lost",
                             "dup", "out of order", "max Δ (ms)", "max jitter (ms)", "mean jitter (ms)", "MOS",
                             "DTMF", "audio"), tuple(rows), "no RTP stream in the capture")


def leg_table(plan: LegPlan | None) -> Table:
    """The legs the SIP resolved: media host, peer, endpoints, SRTP suite and whether the keys decrypt."""
    rows = tuple((leg.name, leg.media_host, leg.peer, " ".join(leg.endpoints), leg.srtp_suite or "none (RTP)",
                  leg.srtp_keys or NONE_TEXT) for leg in (plan.legs if plan else ()))
    return Table("Legs", ("leg", "media host", "peer", "endpoints", "SRTP suite", "keys"), rows,
                 "no leg plan: the SIP pcap was not given")


def rtcp_table(analysis: CallAnalysis) -> Table:
    """The far end's view from RTCP report blocks."""
    rows = tuple((f"{b.time_s:.3f}", b.kind, f"0x{b.reporter_ssrc:08X}", f"0x{b.source_ssrc:08X}",
                  f"{b.fraction_lost_pct:.1f}", str(b.cumulative_lost), f"{b.jitter_ms:.1f}",
                  NONE_TEXT if b.rtt_ms is None else f"{b.rtt_ms:.1f}") for b in analysis.rtcp)
    return Table("RTCP reports", ("time (s)", "kind", "reporter", "about", "fraction lost %", "cumulative lost",
                                  "jitter (ms)", "RTT (ms)"), rows, "no RTCP report block")


def dtmf_table(analysis: CallAnalysis, dtmf_relay: Sequence[Mapping[str, Any]] = ()) -> Table:
    """RFC 4733 key presses per stream (and whether each one a peer pressed crossed the media host), then SIP INFO."""
    crossing = {(c.get("stream"), round(float(c.get("start_s", 0)), 3)): c for c in dtmf_relay}

    def relayed(stream: str, start_s: float) -> str:
        c = crossing.get((stream, round(start_s, 3)))
        if c is None:
            return NONE_TEXT
        if not c.get("crossed"):
            return "NOT relayed to " + " / ".join(c.get("to_legs") or [])
        delay = c.get("delay_ms")
        return f"relayed ({c.get('via')}" + ("" if delay is None else f", +{delay} ms") + ")"

    rows = [(e.digit, "RFC 4733", e.stream, f"{e.start_s:.3f}", f"{e.duration_ms:.0f}",
             f"-{e.volume_dbm0} dBm0" + ("" if e.ended else ", no end packet"), relayed(e.stream, e.start_s))
            for s in analysis.streams for e in s.dtmf]
    rows += [(d.digit, "SIP INFO", f"{d.src} → {d.dst}", f"{d.time_s:.3f} (from first SIP)",
              NONE_TEXT if d.duration_ms is None else str(d.duration_ms), d.content_type, NONE_TEXT)
             for d in analysis.sip_dtmf]
    return Table("DTMF", ("digit", "how", "stream", "time (s)", "duration (ms)", "detail", "across the media host"),
                 tuple(rows), "no DTMF")


def report_content(analysis: CallAnalysis, verdicts: Sequence[Mapping[str, Any]], plan: LegPlan | None,
                   audio: Sequence[tuple[str, str]], pcaps: Sequence[str], has_ladder: bool,
                   dtmf_relay: Sequence[Mapping[str, Any]] = ()) -> ReportContent:
    """The report's content, shared by report.html and report.md."""
    facts = [("capture", analysis.capture.name), ("streams", str(len(analysis.streams)))]
    notes: list[str] = []
    if plan is not None:
        facts = [("Call-ID", plan.call_id), ("dialogs", ", ".join(plan.call_ids)), ("direction", plan.direction),
                 *facts]
        notes = [redact(n) for n in (*plan.findings, *plan.warnings)]
    if analysis.undecodable_codecs:
        notes.append("not decodable to WAV: " + ", ".join(analysis.undecodable_codecs))
    verdict_table = Table("Verdicts", ("severity", "leg", "direction", "kind", "what", "evidence"),
                          verdict_rows(verdicts), "no verdicts")
    tables = (verdict_table, leg_table(plan), stream_table(analysis, plan), dtmf_table(analysis, dtmf_relay),
              rtcp_table(analysis))
    title = f"Call {plan.call_id}" if plan is not None else f"Media of {analysis.capture.name}"
    return ReportContent(title, tuple(facts), tables, tuple(notes), tuple(audio), tuple(pcaps), has_ladder)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(content: ReportContent) -> str:
    """report.md: the same facts and tables, the SVGs as images, links to the WAVs and pcaps."""
    out = [f"# {_md_cell(content.title)}", ""]
    out += [f"- **{name}**: {_md_cell(value)}" for name, value in content.facts]
    if content.notes:
        out += ["", "## Notes", ""] + [f"- {_md_cell(n)}" for n in content.notes]
    for table in content.tables:
        out += ["", f"## {table.title}", ""]
        if not table.rows:
            out.append(f"_{table.empty}_")
            continue
        out.append("| " + " | ".join(table.headers) + " |")
        out.append("|" + "---|" * len(table.headers))
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    out += ["", "## Pictures", ""]
    if content.has_ladder:
        out.append(f"![SIP ladder]({LADDER_SVG})")
    out.append(f"![Media timeline]({TIMELINE_SVG})")
    out += ["", "## Audio", ""]
    out += [f"- [{_md_cell(label)}]({Path(rel).as_posix()})" for label, rel in content.audio] or ["_no decodable audio_"]
    out += ["", "## Files", ""] + [f"- [{name}]({name})" for name in content.pcaps]
    return "\n".join(out) + "\n"
