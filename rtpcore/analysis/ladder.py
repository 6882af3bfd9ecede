"""SVG ladder of one call's SIP: carrier ↔ media host/SBC ↔ core columns, every dialog, an arrow per message.

Why our own and not Wireshark's flow graph: the report must show the B2BUA's two dialogs side by side (Wireshark
draws one per Call-ID), aligned with the media timeline, and an SDP summary per message that never shows keys:
only c=/m= addresses and ports, codecs, direction attributes and the a=crypto *suite* names.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import re
from html import escape as _html_escape

from rtpcore.analysis.codecs import codec_of
from rtpcore.pcap.reader import NS_PER_S
from rtpcore.plan import LEG_CARRIER, LEG_CORE, LegPlan
from rtpcore.sip.capture import SipPacket
from rtpcore.sip.dialog import Hop, build_hops
from rtpcore.sip.sdp import SessionDescription

# Characters XML 1.0 forbids (C0 controls but tab, LF, CR): a SIP field holding one would break the SVG file.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
ROLE_SBC = "media host / SBC"
ROLE_OTHER = "other"
SENDRECV = "sendrecv"

# Layout (px).
TIME_GUTTER = 96          # left column with the message times
COLUMN_SPACING = 300
HEADER_HEIGHT = 64
ROW_HEIGHT = 30
SDP_ROW_HEIGHT = 16       # extra height of a message that carries SDP
SELF_LOOP = 28            # width of the loop drawn for a message whose two ends are one column
MARGIN = 24
FONT = "font-family:ui-monospace,Menlo,Consolas,monospace"


@dataclass(frozen=True, slots=True)
class LadderColumn:
    """One signalling box: its role in the call (carrier, media host/SBC, core) and the addresses it used."""

    role: str
    addresses: tuple[str, ...]

    @property
    def label(self) -> str:
        """Header text: role, then the addresses."""
        return f"{self.role}: {', '.join(self.addresses)}"


@dataclass(frozen=True, slots=True)
class LadderMessage:
    """One SIP message of the call as an arrow: when, from which column to which, what, and its SDP summary."""

    ts_ns: int
    frame: int            # 1-based frame number in the SIP pcap, as Wireshark counts
    src_col: int
    dst_col: int
    label: str            # "INVITE", "183 Session Progress (INVITE)"
    short: str            # "INVITE", "183 INVITE": for the timeline's event labels
    call_id: str
    src: str              # ip:port
    dst: str
    sdp: str | None       # one-line SDP summary, key material never included


@dataclass(frozen=True, slots=True)
class Ladder:
    """The call's columns and messages in capture order."""

    columns: tuple[LadderColumn, ...]
    messages: tuple[LadderMessage, ...]

    @property
    def first_ns(self) -> int | None:
        """Time of the first message (the SIP side of the shared time origin)."""
        return self.messages[0].ts_ns if self.messages else None


def escape(text: str) -> str:
    """Text from a capture made safe inside SVG/HTML: markup escaped, XML-forbidden control characters dropped."""
    return _html_escape(_NOT_XML.sub("", text))


def message_label(pkt: SipPacket) -> str:
    """How a support engineer names the message: the method, or status, reason and the CSeq method."""
    msg = pkt.message
    if msg.is_request:
        return msg.method or "?"
    return f"{msg.status} {msg.reason or ''}".rstrip() + f" ({msg.cseq_method})"


def short_label(pkt: SipPacket) -> str:
    """The method, or the status code and the CSeq method: short enough to stand beside a timeline event."""
    msg = pkt.message
    return (msg.method or "?") if msg.is_request else f"{msg.status} {msg.cseq_method}"


def sdp_summary(text: str) -> str:
    """c=/m= address and port, codecs, direction and SRTP suite per m= line; never a key (suites only)."""
    try:
        sdp = SessionDescription.parse(text)
    except ValueError:
        return "SDP (unreadable)"
    parts = []
    for m in sdp.media:
        codecs = []
        for fmt in m.formats:
            name = m.encoding(int(fmt)) if fmt.isdigit() else None
            codecs.append(name or (codec_of(int(fmt))[0] if fmt.isdigit() else fmt))
        bits = [f"{m.media} {sdp.media_address(m) or '?'}:{m.port}", m.proto, " ".join(codecs)]
        if m.direction != SENDRECV:
            bits.append(m.direction)
        if m.rtcp_mux:
            bits.append("rtcp-mux")
        suites = list(dict.fromkeys(c.suite for c in m.crypto))
        if suites:
            bits.append("crypto " + " ".join(suites))
        elif m.fingerprint:
            bits.append("DTLS fingerprint")
        parts.append(" ".join(bits))
    return "; ".join(parts) or "SDP without m= line"


def call_packets(packets: Sequence[SipPacket], plan: LegPlan) -> list[SipPacket]:
    """The SIP messages of the planned call (every dialog of a B2BUA), in capture order."""
    ids = set(plan.call_ids)
    return sorted((p for p in packets if p.message.call_id in ids), key=lambda p: (p.ts_ns, p.frame_index))


def _columns(hops: Sequence[Hop], plan: LegPlan) -> list[list[str]]:
    """Address groups upstream → downstream: the first INVITE's sender, one group per box between hops, the last callee."""
    groups: list[list[str]] = []

    def place(address: str, group: list[str]) -> None:
        if not any(address in g for g in groups) and address not in group:
            group.append(address)

    for i, hop in enumerate(hops):
        if i == 0:
            groups.append([hop.a])
        elif not any(hop.a in g for g in groups):
            place(hop.a, groups[-1])
        if not any(hop.b in g for g in groups):
            groups.append([hop.b])
    if plan.direction != "inbound":
        groups.reverse()  # the core sent the first INVITE: keep the carrier on the left
    return groups


def _role(index: int, count: int, inbound: bool) -> str:
    """Carrier on the left, core on the right, the boxes between are the media host / SBC.

    With one hop only (two columns) the callee of that hop is the media host: the SIP stops there.
    """
    if count == 2:
        return (LEG_CARRIER if index == 0 else ROLE_SBC) if inbound else (ROLE_SBC if index == 0 else LEG_CORE)
    if count > 2 and index == 0:
        return LEG_CARRIER
    if count > 2 and index == count - 1:
        return LEG_CORE
    return ROLE_SBC


def build_ladder(packets: Sequence[SipPacket], plan: LegPlan) -> Ladder:
    """The ladder of the planned call: one column per box, one arrow per SIP message of its dialogs (retransmissions too)."""
    mine = call_packets(packets, plan)
    groups = _columns(build_hops(mine), plan)
    index = {address: i for i, group in enumerate(groups) for address in group}
    planned = len(groups)
    for pkt in mine:  # a message from an address no hop explains still gets its arrow, in a column of its own
        for address in (pkt.src, pkt.dst):
            if address not in index:
                index[address] = len(groups)
                groups.append([address])
    columns = tuple(LadderColumn(_role(i, planned, plan.direction == "inbound") if i < planned else ROLE_OTHER, tuple(g))
                    for i, g in enumerate(groups))
    messages = []
    for pkt in mine:
        body = pkt.message.sdp()
        messages.append(LadderMessage(
            ts_ns=pkt.ts_ns, frame=pkt.frame_index + 1, src_col=index[pkt.src], dst_col=index[pkt.dst],
            label=message_label(pkt), short=short_label(pkt), call_id=pkt.message.call_id, src=pkt.src_endpoint, dst=pkt.dst_endpoint,
            sdp=sdp_summary(body) if body is not None else None))
    return Ladder(columns, tuple(messages))


def _x(col: int) -> float:
    return TIME_GUTTER + MARGIN + COLUMN_SPACING / 2 + col * COLUMN_SPACING


def ladder_svg(ladder: Ladder, origin_ns: int) -> str:
    """The ladder as a standalone SVG document (times in seconds from origin_ns, the report's shared time origin)."""
    width = int(TIME_GUTTER + 2 * MARGIN + max(1, len(ladder.columns)) * COLUMN_SPACING)
    height = HEADER_HEIGHT + MARGIN + sum(ROW_HEIGHT + (SDP_ROW_HEIGHT if m.sdp else 0) for m in ladder.messages)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="SIP ladder of the call">',
           '<defs><marker id="ladder-head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#1f3b73"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    for i, col in enumerate(ladder.columns):
        x = _x(i)
        out.append(f'<g class="ladder-column" data-role="{escape(col.role)}">'
                   f'<text x="{x:.1f}" y="22" text-anchor="middle" font-weight="bold" font-size="13" '
                   f'style="{FONT}">{escape(col.role)}</text>'
                   f'<text x="{x:.1f}" y="40" text-anchor="middle" font-size="11" style="{FONT}">'
                   f'{escape(", ".join(col.addresses))}</text>'
                   f'<line x1="{x:.1f}" y1="{HEADER_HEIGHT - 14}" x2="{x:.1f}" y2="{height - MARGIN / 2}" '
                   'stroke="#9aa5b8" stroke-dasharray="4 4"/></g>')
    if not ladder.messages:
        out.append(f'<text x="{MARGIN}" y="{HEADER_HEIGHT + 10}" font-size="12" style="{FONT}">'
                   'no SIP message of this call was found</text>')
    y = float(HEADER_HEIGHT)
    for m in ladder.messages:
        y += ROW_HEIGHT
        out.append(_arrow(m, y, (m.ts_ns - origin_ns) / NS_PER_S))
        if m.sdp:
            y += SDP_ROW_HEIGHT
    out.append("</svg>")
    return "\n".join(out)


def _arrow(m: LadderMessage, y: float, t_s: float) -> str:
    """One message: time at the left, an arrow (a loop when both ends are one column), label above, SDP below."""
    x1, x2 = _x(m.src_col), _x(m.dst_col)
    title = f"frame {m.frame}: {m.src} → {m.dst}, Call-ID {m.call_id}"
    parts = [f'<g class="sip-msg" data-frame="{m.frame}" data-src="{m.src_col}" data-dst="{m.dst_col}">',
             f"<title>{escape(title)}</title>",
             f'<text x="{MARGIN}" y="{y:.1f}" font-size="11" style="{FONT}">{t_s:.3f} s</text>']
    if x1 == x2:
        parts.append(f'<path class="arrow" d="M{x1:.1f},{y - 8:.1f} h{SELF_LOOP} v8 h-{SELF_LOOP}" fill="none" '
                     'stroke="#1f3b73" stroke-width="1.5" marker-end="url(#ladder-head)"/>')
        mid = x1 + SELF_LOOP + 6
        anchor = "start"
    else:
        parts.append(f'<line class="arrow" x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="#1f3b73" '
                     'stroke-width="1.5" marker-end="url(#ladder-head)"/>')
        mid = (x1 + x2) / 2
        anchor = "middle"
    colour = "#8a1c1c" if m.label[:1] in "456" else "#111111"
    parts.append(f'<text class="label" x="{mid:.1f}" y="{y - 5:.1f}" text-anchor="{anchor}" font-size="12" '
                 f'fill="{colour}" style="{FONT}">{escape(m.label)}</text>')
    if m.sdp:
        parts.append(f'<text class="sdp" x="{mid:.1f}" y="{y + 13:.1f}" text-anchor="{anchor}" font-size="10" '
                     f'fill="#2d6a2d" style="{FONT}">{escape(m.sdp)}</text>')
    parts.append("</g>")
    return "".join(parts)
