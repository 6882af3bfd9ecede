"""The correlation report: what was found for each leg and stream, as JSON, text and markdown."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.plan import KEYS_NONE, SIDE_PEER, LegPlan

if TYPE_CHECKING:
    from rtpcore.analysis.insight import CallInsight
    from rtpcore.media.decrypt import DecryptResult, StreamStats
    from rtpcore.media.demux import FileResult
    from rtpcore.media.select import MediaSelection
    from rtpcore.storage.download import PublishedOutputs

LOSS_WARN_RATIO = 0.01
# The analysis figures each correlate --json stream gains (issue 11): Wireshark-equal, and the E-model MOS.
ANALYSIS_FIELDS = ("expected", "lost", "max_delta_ms", "max_jitter_ms", "mean_jitter_ms", "mos")
GAP_WARN_NS = 500 * 10**6


@dataclass(frozen=True, slots=True)
class CorrelationReport:
    """Everything a support engineer reads after a correlation; keys never appear in it."""

    plan: LegPlan
    files: tuple[FileResult, ...]
    streams: tuple[StreamStats, ...]
    outputs: tuple[Path, Path, Path]  # media_raw, media_decrypted, SIP_plus_media_decrypted
    per_file_outputs: tuple[Path, ...]
    findings: tuple[str, ...]
    warnings: tuple[str, ...]
    insight: CallInsight | None = None      # the analysis step's result (None: it did not run or failed)
    analysis_file: Path | None = None       # combined/analysis.json
    report_file: Path | None = None         # combined/report.html (ladder, timeline, verdicts, audio)
    media_read: MediaSelection | None = None   # which raw files/byte ranges were read and skipped, and why

    def leg_packets(self, leg: str) -> int:
        return sum(lf.packets for r in self.files for lf in r.legs if lf.leg == leg and lf.kept)

    def to_json(self) -> dict[str, Any]:
        doc = self.plan.to_json()
        for leg in doc["legs"]:
            leg["packets"] = self.leg_packets(leg["name"])
            leg["streams"] = [self._stream_json(s) for s in self.streams if s.leg == leg["name"]]
            if self.insight is not None:
                leg["verdicts"] = self.insight.leg_verdicts(leg["name"])
        raw, dec, sip_plus = self.outputs
        doc["outputs"] = {"media_raw": str(raw), "media_decrypted": str(dec), "sip_plus_media_decrypted": str(sip_plus)}
        if self.analysis_file is not None:  # beside outputs, which lists the three pcaps
            doc["analysis_file"] = str(self.analysis_file)
        if self.report_file is not None:
            doc["report_file"] = str(self.report_file)
        doc["files"] = [
            {"source": str(r.source), "matched": r.matched, "error": r.error,
             "legs": {lf.leg: {"packets": lf.packets, "kept": lf.kept} for lf in r.legs}}
            for r in self.files
        ]
        doc["decrypted_files"] = [str(p) for p in self.per_file_outputs]
        doc["findings"] = list(self.findings)
        doc["warnings"] = list(self.warnings) + (self.media_read.warnings if self.media_read else [])
        doc.update(media_read_json(self.media_read))
        return doc

    def _stream_json(self, s: StreamStats) -> dict[str, object]:
        """A decrypt-stage stream, with the analysis's figures (ANALYSIS_FIELDS) for RTP when the analysis ran."""
        doc = s.to_json()
        found = self.insight.stream_of(s.leg, s.src, s.dst, s.ssrc) if self.insight and s.kind == "rtp" else None
        if found is not None:
            figures = found.to_json()
            doc.update({name: figures[name] for name in ANALYSIS_FIELDS})
        return doc

    def verdict_rows(self) -> list[dict[str, object]]:
        """The verdicts as table-artifact rows, errors first."""
        order = {"error": 0, "warning": 1, "info": 2}
        verdicts = sorted(self.insight.verdicts, key=lambda v: order[v.severity]) if self.insight else []
        return [{"severity": v.severity, "leg": v.leg, "direction": v.direction, "kind": v.kind, "verdict": v.text}
                for v in verdicts]

    def quality_rows(self) -> list[dict[str, object]]:
        """Per analysed RTP stream: leg, direction and the Wireshark-equal figures with the MOS."""
        if self.insight is None:
            return []
        rows: list[dict[str, object]] = []
        for p in self.insight.placed:
            doc = p.analysis.to_json()
            rows.append({"leg": p.leg, "direction": p.direction, "ssrc": doc["ssrc"], "codec": doc["codec"],
                         "packets": doc["packets"], **{name: doc[name] for name in ANALYSIS_FIELDS},
                         "srtp": doc["srtp"]["status"]})
        return rows

    def text(self) -> str:
        """The summary table the CLI and `make demo` print."""
        return format_text(self.to_json())

    def stream_rows(self) -> list[dict[str, object]]:
        """The streams as table-artifact rows: leg first, in the summary's order, the columns support reads."""
        return [{"leg": s.leg, "stream": f"{s.kind.upper()} {s.src} → {s.dst}", "ssrc": f"0x{s.ssrc:08x}",
                 "packets": s.packets, "decrypted": s.decrypted, "auth_failed": s.auth_failed, "lost": s.lost,
                 "duplicates": s.duplicates, "max_gap_ms": round(s.max_gap_ns / 1e6, 1), "key": s.key}
                for s in sorted(self.streams, key=lambda s: (s.leg, s.kind, s.src))]

    def markdown(self) -> str:
        """The Prefect artifact: call, legs, per-stream counts, decrypt status, findings."""
        p = self.plan
        out = [f"# Call `{p.call_id}` ({p.direction})", ""]
        if len(p.call_ids) > 1:
            out += [f"Dialogs: {', '.join(f'`{c}`' for c in p.call_ids)}", ""]
        out += [f"SIP from {_utc(p.start_ns)} to {_utc(p.end_ns)}", "", "## Legs", "",
                "| leg | media host | peer | SRTP | packets |", "|---|---|---|---|---|"]
        for leg in p.legs:
            out.append(f"| {leg.name} | {leg.media_host} | {leg.peer} | {leg.srtp_suite or 'none'} | {self.leg_packets(leg.name)} |")
        out += ["", "## Streams"]
        for leg in p.legs:
            rows = sorted((s for s in self.streams if s.leg == leg.name), key=lambda s: (s.kind, s.src))
            # A list, not a table: endpoint pairs are too wide for the UI's artifact pane as table cells.
            out += ["", f"### {leg.name} leg", ""]
            out += [f"- **{s.kind.upper()}** {s.src} → {s.dst} (SSRC 0x{s.ssrc:08x}): {s.packets} packets, "
                    f"{s.decrypted} decrypted, {s.auth_failed} auth failed, {s.lost} lost, {s.duplicates} duplicates, "
                    f"max gap {s.max_gap_ns / 1e6:.1f} ms, key: {s.key or '-'}" for s in rows] or ["- no packets"]
        if self.insight is not None:
            shown = [v for v in self.insight.verdicts if v.severity != "info"]
            out += ["", "## Verdicts", ""] + ([f"- **{v.severity}** {v.leg} {v.direction}: {v.text}" for v in shown]
                                              or ["- audio flowed both ways on every leg, nothing to report"])
        if self.findings:
            out += ["", "## Findings", ""] + [f"- {f}" for f in self.findings]
        bad = [r for r in self.files if r.error]
        if bad:
            out += ["", "## Raw files with errors", ""] + [f"- `{r.source.name}`: {r.error}" for r in bad]
        if self.warnings:
            out += ["", "## Warnings", ""] + [f"- {w}" for w in self.warnings]
        out += media_read_markdown(self.media_read)
        out += ["", "## Outputs", ""] + [f"- `{o}`" for o in self.outputs]
        return "\n".join(out) + "\n"



@dataclass(frozen=True, slots=True)
class CorrelationOutcome:
    """The report plus what output publishing did (S3 URLs, or why not)."""

    report: CorrelationReport
    published: PublishedOutputs | None = None

    @property
    def upload_warning(self) -> str | None:
        return self.published.error if self.published is not None else None

    @property
    def session_url(self) -> str | None:
        return self.published.location if self.published is not None else None

    def to_json(self) -> dict[str, Any]:
        doc = self.report.to_json()
        if self.published is not None:
            doc["urls"] = dict(self.published.urls)
            doc["s3_session"] = self.published.location
            if self.published.error:
                doc["warnings"] = [*doc.get("warnings", []), self.published.error]
        return doc

def format_text(doc: dict[str, Any]) -> str:
    """A correlation's JSON document as the plain-text table a terminal user reads."""
    lines = [f"call {doc['call_id']} ({doc['direction']})"]
    if len(doc["call_ids"]) > 1:
        lines.append(f"dialogs: {', '.join(doc['call_ids'])}")
    lines.append(f"  {'leg':8} {'kind':4} {'src':>26} -> {'dst':<26} {'ssrc':10} {'pkts':>6} {'decr':>6} "
                 f"{'authf':>5} {'lost':>5} {'dup':>4} {'gap ms':>7}  key")
    for leg in doc["legs"]:
        for s in sorted(leg.get("streams", []), key=lambda s: (s["kind"], s["src"])):
            lines.append(
                f"  {leg['name']:8} {s['kind']:4} {s['src']:>26} -> {s['dst']:<26} {s['ssrc']:10} {s['packets']:6} "
                f"{s['decrypted']:6} {s['auth_failed']:5} {s['lost']:5} {s['duplicates']:4} {s['max_gap_ms']:7.1f}"
                f"  {s.get('key', '')}"
            )
    lines += [f"verdict: {v['severity']}: {v['leg']} {v['direction']}: {v['text']}"
              for leg in doc["legs"] for v in leg.get("verdicts", []) if v["severity"] != "info"]
    lines += [f"finding: {f}" for f in doc.get("findings", [])]
    lines += [f"bad raw file: {f['source']}: {f['error']}" for f in doc.get("files", []) if f.get("error")]
    lines += [f"warning: {w}" for w in doc.get("warnings", [])]
    lines += media_read_text(doc)
    lines += [f"{name}: {path}" for name, path in doc.get("outputs", {}).items()]
    lines += [f"analysis: {doc['analysis_file']}"] if doc.get("analysis_file") else []
    lines += [f"report: {doc['report_file']}"] if doc.get("report_file") else []
    return "\n".join(lines)


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def findings(plan: LegPlan, streams: Sequence[StreamStats]) -> list[str]:
    """Plain-language observations: one-way audio, loss, gaps, keys that do not fit."""
    found: list[str] = list(plan.findings)
    for leg in plan.legs:
        rtp = [s for s in streams if s.leg == leg.name and s.kind == "rtp"]
        if not rtp:
            found.append(f"{leg.name} leg: no RTP at all in the captures")
            continue
        hosts = {str(n.host.rtp) for n in leg.negotiations}
        to_host = sum(s.packets for s in rtp if s.dst in hosts)
        from_host = sum(s.packets for s in rtp if s.src in hosts)
        if not to_host:
            found.append(f"{leg.name} leg: one-way audio — no RTP from {leg.peer} to the media host {leg.media_host}")
        if not from_host:
            found.append(f"{leg.name} leg: one-way audio — no RTP from the media host {leg.media_host} to {leg.peer}")
    for s in streams:
        if s.kind != "rtp":
            continue
        if s.expected and s.lost / s.expected > LOSS_WARN_RATIO:
            found.append(f"{s.leg} {s.src} → {s.dst}: {s.lost} of {s.expected} packets lost ({100 * s.lost / s.expected:.1f} %)")
        if s.max_gap_ns > GAP_WARN_NS:
            found.append(f"{s.leg} {s.src} → {s.dst}: a gap of {s.max_gap_ns / 1e6:.0f} ms without packets")
    found += key_findings(plan, streams)
    return found


# -- wt-keys: what the keys did, per leg and per stream ------------------------------------------------------------

def key_findings(plan: LegPlan, streams: Sequence[StreamStats]) -> list[str]:
    """Unusable a=crypto lines, legs with no usable key, and streams no key authenticated: never key material."""
    from rtpcore.media.keying import KEY_NONE, KEY_WRONG

    found: list[str] = []
    for leg in plan.legs:
        for p in leg.key_problems:
            who = f"the {leg.name} ({leg.peer})" if p.side == SIDE_PEER else f"the media host ({leg.media_host})"
            found.append(f"{leg.name} leg: the a=crypto in the {p.message} from {who} cannot be used — {p.detail}")
        if leg.srtp_keys == KEYS_NONE:
            found.append(f"{leg.name} leg: SRTP without a usable SDES key — its media will stay encrypted")
    for s in streams:
        if s.key == KEY_WRONG and s.auth_failed:
            found.append(
                f"{s.leg} leg {s.src} → {s.dst} ({s.kind.upper()}): no packet decrypted — the SDES key from the SDP does "
                f"not authenticate any of {s.auth_failed} packets (wrong key, or the SDP of another call); written undecrypted"
            )
        elif s.key == KEY_NONE and s.packets:
            found.append(
                f"{s.leg} leg {s.src} → {s.dst} ({s.kind.upper()}): SRTP but no usable SDES key for this sender; "
                f"{s.packets} packets written undecrypted"
            )
    return found


def build_report(
    plan: LegPlan, files: Sequence[FileResult], decrypted: DecryptResult, outputs: tuple[Path, ...],
    *, insight: CallInsight | None = None, analysis_file: Path | None = None, report_file: Path | None = None,
) -> CorrelationReport:
    raw, dec, sip_plus = outputs
    return CorrelationReport(
        plan=plan,
        files=tuple(files),
        streams=decrypted.streams,
        outputs=(raw, dec, sip_plus),
        per_file_outputs=decrypted.outputs,
        findings=tuple(findings(plan, decrypted.streams)),
        warnings=tuple(dict.fromkeys(plan.warnings + decrypted.warnings)),
        insight=insight,
        analysis_file=analysis_file,
        report_file=report_file,
    )


# -- read/skipped (issue 12): what was read of the raw media and what was skipped, and why -----------------


def media_read_json(selection: MediaSelection | None) -> dict[str, Any]:
    """The "media_read" member: every raw file's decision (index warnings also join "warnings")."""
    if selection is None:
        return {}
    return {"media_read": selection.to_json()}


def media_read_markdown(selection: MediaSelection | None) -> list[str]:
    """The artifact's read/skipped section, so a wrong skip is visible where support looks."""
    if selection is None:
        return []
    head, *rest = selection.lines()
    return ["", "## Raw media read and skipped", "", head, ""] + [f"- {line}" for line in rest]


def media_read_text(doc: dict[str, Any]) -> list[str]:
    """The terminal lines: a one-line total and every skip (index warnings are among the warnings)."""
    media = doc.get("media_read")
    if not media:
        return []
    files = media["files"]
    read = [f for f in files if f["how"] != "skipped"]
    lines = [f"media read: {len(read)} of {len(files)} raw file(s), {media['bytes_read']:,} of "
             f"{media['bytes_total']:,} bytes"]
    lines += [f"media skipped: {f['source']}: {f['why']}" for f in files if f["how"] == "skipped"]
    return lines
