"""The SIP ladder: one arrow per SIP message of the call (as tshark counts them), columns carrier ↔ SBC ↔ core, no keys."""
from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from rtpcore.analysis.ladder import ROLE_SBC, Ladder, LadderColumn, LadderMessage, build_ladder, ladder_svg
from rtpcore.plan import LEG_CARRIER, LEG_CORE, LegPlan
from rtpcore.sip.capture import read_sip
from rtpcore.sip.legs import resolve_legs
from tests.conftest import load_truth

SVG_NS = "{http://www.w3.org/2000/svg}"
INLINE_KEY = re.compile(rb"inline:([A-Za-z0-9+/=]+)")
KEY_PREFIX = 8     # a run this long of a key in a report would be key material


def plan_of(folder: Path) -> LegPlan:
    """The leg plan of the variant's call (the selected one where the pcap holds several)."""
    truth = load_truth(folder)
    return resolve_legs(folder / truth["sip"], truth["direction"], call_id=truth.get("select", {}).get("call_id"))


def tshark_messages(tshark: str, sip: Path, call_ids: tuple[str, ...]) -> list[int]:
    """Frame number of every SIP message of these Call-IDs (a frame with two messages listed twice), by tshark."""
    out = subprocess.run([tshark, "-r", str(sip), "-Y", "sip", "-T", "fields", "-E", "occurrence=a",
                          "-E", "aggregator=|", "-e", "frame.number", "-e", "sip.Call-ID"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    frames = []
    for line in out.splitlines():
        number, _tab, ids = line.partition("\t")
        frames += [int(number) for cid in ids.split("|") if cid in call_ids]
    return frames


def svg_messages(svg: str) -> list[ET.Element]:
    """The arrow groups of a ladder SVG, parsed as XML (so the SVG must be well-formed)."""
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "sip-msg"]


@pytest.mark.parametrize("name", ["inbound-b2bua", "outbound-b2bua-rewrite", "sip-tcp", "fragmented-invite",
                                  "multi-call"])
def test_arrows_equal_the_calls_sip_messages_by_tshark(name: str, generated, tshark: str) -> None:
    folder = generated(name)
    plan = plan_of(folder)
    sip = folder / load_truth(folder)["sip"]
    ladder = build_ladder(read_sip(sip), plan)
    arrows = svg_messages(ladder_svg(ladder, ladder.first_ns or 0))
    theirs = tshark_messages(tshark, sip, plan.call_ids)
    assert len(theirs) >= 14 and {m.call_id for m in ladder.messages} == set(plan.call_ids)  # every dialog
    assert [int(g.get("data-frame") or 0) for g in arrows] == theirs
    assert Counter(m.call_id for m in ladder.messages) == Counter(
        cid for cid in load_truth(folder)["sip_messages"] if cid in plan.call_ids
        for _ in range(load_truth(folder)["sip_messages"][cid]))


def test_other_calls_in_the_pcap_draw_no_arrow(generated, tshark: str) -> None:
    folder = generated("multi-call")
    sip = folder / load_truth(folder)["sip"]
    ladder = build_ladder(read_sip(sip), plan_of(folder))
    everything = subprocess.run([tshark, "-r", str(sip), "-Y", "sip"], capture_output=True, text=True, check=True,
                                timeout=60).stdout.splitlines()
    assert 0 < len(ladder.messages) < len(everything)
    assert {m.call_id for m in ladder.messages} == set(plan_of(folder).call_ids)


@pytest.mark.parametrize("name, first_from", [("inbound-b2bua", 0), ("outbound-b2bua-rewrite", 2)])
def test_columns_are_carrier_sbc_core_and_the_invite_starts_at_the_caller(name: str, first_from: int,
                                                                             generated) -> None:
    folder = generated(name)
    plan = plan_of(folder)
    ladder = build_ladder(read_sip(folder / load_truth(folder)["sip"]), plan)
    assert [c.role for c in ladder.columns] == [LEG_CARRIER, ROLE_SBC, LEG_CORE]
    carrier, core = plan.leg(LEG_CARRIER), plan.leg(LEG_CORE)
    assert carrier is not None and core is not None
    assert ladder.columns[0].addresses == (carrier.peer,) and ladder.columns[2].addresses == (core.peer,)
    invites = [m for m in ladder.messages if m.label == "INVITE"]
    assert len(invites) == 2 and invites[0].src_col == first_from and invites[1].src_col == 1
    assert {m.dst_col for m in invites} == {1, 2 - first_from}


def test_sdp_summary_has_ports_codecs_and_suites_but_no_key(generated) -> None:
    folder = generated("srtp-both-legs")
    sip = folder / load_truth(folder)["sip"]
    ladder = build_ladder(read_sip(sip), plan_of(folder))
    svg = ladder_svg(ladder, ladder.first_ns or 0)
    keys = {k.decode() for k in INLINE_KEY.findall(sip.read_bytes())}
    keys |= {s["key"] for s in load_truth(folder)["streams"] if s.get("key")}
    assert keys, "the variant's SDP must carry keys for this test to mean anything"
    for key in keys:
        assert key[:KEY_PREFIX] not in svg
    assert "inline" not in svg
    invite = next(m for m in ladder.messages if m.label == "INVITE")
    assert invite.sdp is not None
    assert "198.51.100.10:30000" in invite.sdp and "PCMU/8000" in invite.sdp
    assert "crypto AES_CM_128_HMAC_SHA1_80" in invite.sdp
    answers = [m for m in ladder.messages if m.label.startswith("200 OK (INVITE)")]
    assert len(answers) == 2 and all(m.sdp and "RTP/SAVP" in m.sdp for m in answers)
    assert [m for m in ladder.messages if m.label == "ACK"] and all(m.sdp is None for m in ladder.messages
                                                                    if m.label in ("ACK", "BYE"))


@pytest.mark.parametrize("name, call_id, roles", [
    ("heplify_FAX-Call-t38-CA-TDM-SIP-FB-1.pcap", None, [LEG_CARRIER, ROLE_SBC, ROLE_SBC, LEG_CORE]),
    ("heplify_rtp_rtcp_sip_ipv4_udp.pcap", "12013223@200.57.7.195", [LEG_CARRIER, ROLE_SBC]),
])
def test_real_captures_arrows_equal_tshark(name: str, call_id: str | None, roles: list[str], shared_pcaps: Path,
                                           tshark: str) -> None:
    """A real B2BUA with a proxy in front (3 hops, 2 dialogs), and a capture with one hop only (carrier → SBC)."""
    sip = shared_pcaps / name
    plan = resolve_legs(sip, "inbound", call_id=call_id)
    ladder = build_ladder(read_sip(sip), plan)
    theirs = tshark_messages(tshark, sip, plan.call_ids)
    assert len(theirs) >= 5 and [m.frame for m in ladder.messages] == theirs
    assert [c.role for c in ladder.columns] == roles
    assert len(svg_messages(ladder_svg(ladder, ladder.first_ns or 0))) == len(theirs)


def test_hostile_sip_text_stays_text_and_the_svg_stays_well_formed() -> None:
    """A reason phrase or address from a capture is data: no markup gets through, no control byte breaks the XML."""
    evil = "<script>alert(1)</script>\x01&\x1b"
    ladder = Ladder((LadderColumn(LEG_CARRIER, ("198.51.100.10",)), LadderColumn(ROLE_SBC, ("10.77.1.1",))),
                    (LadderMessage(10**9, 1, 0, 1, f"488 {evil} (INVITE)", "488 INVITE", evil, "a:5060", "b:5060",
                                   f"audio {evil}"),))
    root = ET.fromstring(ladder_svg(ladder, 0))
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    texts = "".join(t.text or "" for t in root.iter(f"{SVG_NS}text"))
    assert "488 <script>alert(1)</script>& (INVITE)" in texts and "\x01" not in texts
