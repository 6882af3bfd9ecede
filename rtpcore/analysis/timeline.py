"""SVG timeline of every stream: packets per 100 ms as bars, sequence gaps marked, SIP events on the same time axis.

Why: "where did the audio stop, and what did the signalling do right then" is one glance when the bars of every
stream and the SIP messages share one axis. Bars are the analysis' own per-100-ms counts (bin 0 starts at the
media capture's first frame), shifted to the report's origin; very long calls merge whole bins so a stream never
draws more than MAX_BARS bars (the bin width used is printed and carried in `data-bin-ms`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rtpcore.analysis.call import CallAnalysis, StreamAnalysis
from rtpcore.analysis.ladder import LadderMessage, escape
from rtpcore.analysis.stats import BIN_MS, StreamStats
from rtpcore.pcap.reader import NS_PER_S
from rtpcore.plan import Endpoint, LegPlan

MS_PER_S = 1000
MAX_BARS = 3000           # per stream; longer calls merge k whole 100-ms bins per bar
PLOT_WIDTH = 900          # px of the time axis
LABEL_WIDTH = 300         # px left of the axis for the stream names
ROW_HEIGHT = 44
BAR_HEIGHT = 32           # px of a full bar (the stream's busiest bin)
EVENTS_HEIGHT = 80        # band on top for the SIP event labels (short, rotated)
LABEL_SPACING_PX = 9.0    # an event closer than this to the last labelled one keeps its line but not its text
AXIS_HEIGHT = 30
MARGIN = 16
MIN_MARK_PX = 2.0         # a gap shorter than a pixel still shows
TICK_CHOICES_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
TARGET_TICKS = 12
FONT = "font-family:ui-monospace,Menlo,Consolas,monospace"
UNKNOWN_LEG = "?"
# One rule instead of a fill per bar (a 108 s call draws ~4,300 bars); scoped so it holds inline in the report too.
SVG_STYLE = "svg.timeline rect.bin{fill:#3f7fbf} svg.timeline rect.gap{fill:#d62728;opacity:.45}"


def stream_legs(analysis: CallAnalysis, plan: LegPlan | None) -> dict[str, str]:
    """Leg name of each stream (by stats.key): the leg one of whose SDP endpoints is the stream's source or target."""
    found: dict[str, str] = {}
    if plan is None:
        return found
    ends = {str(Endpoint(ep.ip, ep.port)): leg.name for leg in plan.legs for n in leg.negotiations
            for ep in (n.peer.rtp, n.host.rtp, n.peer.rtcp, n.host.rtcp)}
    for s in analysis.streams:
        st = s.stats
        # The media host's own endpoint is one end of every stream of a leg, even when the peer is latched.
        leg = ends.get(str(Endpoint(st.src, st.sport))) or ends.get(str(Endpoint(st.dst, st.dport)))
        if leg:
            found[st.key] = leg
    return found


def bins_per_bar(stats: StreamStats) -> int:
    """How many 100-ms bins one bar holds (1 unless the stream would need more than MAX_BARS bars)."""
    return max(1, math.ceil(len(stats.per_100ms) / MAX_BARS))


def _tick_step(span_s: float) -> float:
    """A round tick spacing giving about TARGET_TICKS ticks over the span."""
    return next((t for t in TICK_CHOICES_S if span_s / t <= TARGET_TICKS), TICK_CHOICES_S[-1])


def _span(analysis: CallAnalysis, events: Sequence[LadderMessage], origin_ns: int) -> float:
    """Seconds from the origin to the last bin end or SIP event, at least one bin."""
    media_offset = (analysis.first_ts_ns - origin_ns) / NS_PER_S
    ends = [media_offset + len(s.stats.per_100ms) * BIN_MS / MS_PER_S for s in analysis.streams]
    ends += [(e.ts_ns - origin_ns) / NS_PER_S for e in events]
    return max([BIN_MS / MS_PER_S, *ends])


def timeline_svg(analysis: CallAnalysis, events: Sequence[LadderMessage], origin_ns: int,
                 legs: Mapping[str, str] | None = None) -> str:
    """The timeline as a standalone SVG: a row per stream, SIP messages as vertical lines, seconds from origin_ns."""
    legs = legs or {}
    span = _span(analysis, events, origin_ns)
    scale = PLOT_WIDTH / span
    x0 = MARGIN + LABEL_WIDTH
    top = MARGIN + EVENTS_HEIGHT
    width = int(x0 + PLOT_WIDTH + MARGIN)
    rows_bottom = top + max(1, len(analysis.streams)) * ROW_HEIGHT
    height = int(rows_bottom + AXIS_HEIGHT + MARGIN)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="media timeline of the call">',
           f"<style>{SVG_STYLE}</style>",
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    out += _axis(x0, rows_bottom, top, span, scale)
    media_offset = (analysis.first_ts_ns - origin_ns) / NS_PER_S
    for row, s in enumerate(analysis.streams):
        out.append(_stream_row(s, legs.get(s.stats.key, UNKNOWN_LEG), x0, top + row * ROW_HEIGHT, media_offset,
                               scale))
    if not analysis.streams:
        out.append(f'<text x="{x0}" y="{top + ROW_HEIGHT / 2}" font-size="12" style="{FONT}">'
                   f'no RTP stream in {escape(analysis.capture.name)}</text>')
    last_label = -math.inf
    for e in events:
        x = x0 + (e.ts_ns - origin_ns) / NS_PER_S * scale
        text = ""
        if x - last_label >= LABEL_SPACING_PX:
            last_label = x
            text = (f'<text x="{x:.1f}" y="{top - 8}" font-size="10" fill="#4b2f94" style="{FONT}" '
                    f'transform="rotate(-60 {x:.1f} {top - 8})">{escape(e.short)}</text>')
        out.append(f'<g class="sip-event" data-frame="{e.frame}"><title>{escape(e.label)} at '
                   f'{(e.ts_ns - origin_ns) / NS_PER_S:.3f} s ({escape(e.src)} → {escape(e.dst)})</title>'
                   f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{rows_bottom}" stroke="#7a5cc2" '
                   f'stroke-width="1" stroke-dasharray="3 3" opacity="0.7"/>{text}</g>')
    out.append("</svg>")
    return "\n".join(out)


def _axis(x0: float, bottom: float, top: float, span: float, scale: float) -> list[str]:
    """Ticks and grid lines every round number of seconds, labelled below the rows."""
    step = _tick_step(span)
    out = [f'<line x1="{x0}" y1="{bottom}" x2="{x0 + PLOT_WIDTH}" y2="{bottom}" stroke="#333"/>']
    for i in range(int(span / step) + 1):
        t = i * step
        x = x0 + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#e3e6ec"/>'
                   f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle" font-size="10" style="{FONT}">'
                   f'{t:g} s</text>')
    return out


def _stream_row(s: StreamAnalysis, leg: str, x0: float, y: float, media_offset: float, scale: float) -> str:
    """One stream: its name, a bar per bin (height ∝ packets), red marks over its sequence gaps."""
    st = s.stats
    k = bins_per_bar(st)
    bin_s = k * BIN_MS / MS_PER_S
    bins = st.per_100ms
    counts = [sum(bins[i:i + k]) for i in range(0, len(bins), k)]
    peak = max(counts, default=0) or 1
    base = y + ROW_HEIGHT - 6
    name = f"{leg} {st.src}:{st.sport} → {st.dst}:{st.dport}"
    out = [f'<g class="stream" data-stream="{escape(st.key)}" data-leg="{escape(leg)}" data-bin-ms="{k * BIN_MS}" '
           f'data-packets="{st.packets}" data-lost="{st.unique_lost}">',
           f'<text x="{MARGIN}" y="{y + 16}" font-size="11" style="{FONT}">{escape(name)}</text>',
           f'<text x="{MARGIN}" y="{y + 30}" font-size="10" fill="#555" style="{FONT}">'
           f'0x{st.ssrc:08X} {escape(st.codec)} · {st.packets} pkts · lost {st.unique_lost}</text>',
           f'<line x1="{x0}" y1="{base}" x2="{x0 + PLOT_WIDTH}" y2="{base}" stroke="#c9ced8"/>']
    bar_w = max(bin_s * scale - 0.5, 0.5)
    for i, n in enumerate(counts):
        if not n:
            continue
        h = BAR_HEIGHT * n / peak
        x = x0 + (media_offset + i * bin_s) * scale
        out.append(f'<rect class="bin" data-bin="{i}" data-count="{n}" x="{x:.1f}" y="{base - h:.1f}" '
                   f'width="{bar_w:.2f}" height="{h:.1f}"/>')
    for g in st.gaps:
        x = x0 + (media_offset + g.after_s) * scale
        w = max((g.before_s - g.after_s) * scale, MIN_MARK_PX)
        out.append(f'<rect class="gap" data-missing="{g.missing}" x="{x:.2f}" y="{base - BAR_HEIGHT - 2:.2f}" '
                   f'width="{w:.2f}" height="{BAR_HEIGHT + 4}">'
                   f'<title>{g.missing} packet(s) lost between {g.after_s + media_offset:.3f} s and '
                   f'{g.before_s + media_offset:.3f} s</title></rect>')
    out.append("</g>")
    return "".join(out)
