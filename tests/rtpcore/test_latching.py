"""Learned peers (NAT, multi-homed phones, latching relays), late RTCP, and the full capture as the SIP pcap."""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import rtpcore.media.candidates as candidates
from rtpcore.callgen import render, variant
from rtpcore.cli import main
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture
from rtpcore.pipeline import correlate
from tests.conftest import load_truth


def _udp(path: Path):
    with open_capture(path) as reader:
        for f in reader:
            l3 = link_payload(f.linktype, f.data)
            udp = parse_udp(parse_ip(l3)) if l3 else None
            if udp is not None:
                yield udp


def _ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _flows(path: Path) -> Counter:
    return Counter((_ep(u.src, u.sport), _ep(u.dst, u.dport)) for u in _udp(path))


def _correlate(folder: Path, out: Path, media: list[Path] | None = None):
    truth = load_truth(folder)
    return truth, correlate(folder / truth["sip"], truth["direction"], [folder / "media"] if media is None else media, out)


@pytest.mark.parametrize("name", ["latching-peer", "nat-carrier"])
def test_legs_json_is_still_the_sdp_truth(name: str, generated, capsys) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    assert main(["legs", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == truth["legs"]
    assert truth["latched"], "the generator says where the media really came from"


@pytest.mark.parametrize("name", ["latching-peer", "nat-carrier"])
def test_learned_peer_is_reported_and_decrypted_with_the_sdp_keys(name: str, generated, tmp_path: Path) -> None:
    folder = generated(name)
    truth, report = _correlate(folder, tmp_path / "out")
    (latched,) = truth["latched"]
    line = f"{latched['leg']} peer sent from {latched['real']}; its SDP said {latched['sdp']} — NAT or multi-homed"
    assert any(f.startswith(line) for f in report.findings), report.findings
    assert not any("no RTP at all" in f or "one-way audio" in f for f in report.findings)
    streams = {(s.src, s.dst, s.kind): s for s in report.streams}
    for s in truth["streams"]:
        got = streams[(s["src"], s["dst"], s["kind"])]
        assert got.packets == s["packets"] and got.auth_failed == 0
        assert got.decrypted == (s["packets"] - s["clear_rtcp"] if s["encrypted"] else 0)


def test_learning_is_decided_across_rolling_files(tmp_path: Path) -> None:
    folder = tmp_path / "call"
    truth = render(variant("nat-carrier", rolling_packets=300), folder)
    assert len(truth["media"]) > 3
    _, report = _correlate(folder, tmp_path / "out")
    want = Counter({(s["src"], s["dst"]): s["packets"] for s in truth["streams"]})
    got = _flows(report.outputs[0])
    assert got == want
    assert sum(1 for f in report.findings if "sent from 203.0.113.77" in f) == 2, "RTP and RTCP, once each"
    assert not list((tmp_path / "out" / "combined" / "filtered").glob(".*candidates*")), "candidates cleaned up"


def test_two_senders_on_one_relay_port_are_never_merged(generated, tmp_path: Path, capsys) -> None:
    folder = generated("two-senders-one-port")
    truth = load_truth(folder)
    code = main(["correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--media",
                 str(folder / "media"), "--out", str(tmp_path / "o"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    ambiguous = [f for f in doc["findings"] if "ambiguous, nothing merged" in f]
    assert len(ambiguous) == 2 and all("203.0.113.77" in f and "203.0.113.99" in f for f in ambiguous)
    assert truth["stray"]["packets"] > 300
    raw = _flows(Path(doc["outputs"]["media_raw"]))
    assert not [f for f in raw if any(a.startswith(("203.0.113.77", "203.0.113.99")) for a in f)]
    core = Counter({(s["src"], s["dst"]): s["packets"] for s in truth["streams"] if s["leg"] == "core"})
    assert raw == core, "the core leg is complete; the carrier leg has nothing rather than a mix"


def test_a_second_sender_while_the_sdp_peer_talks_is_only_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "call"
    truth = render(variant("inbound-proxy", stray_sender=("203.0.113.99", 5004)), folder)
    _, report = _correlate(folder, tmp_path / "out")
    assert _flows(report.outputs[0]) == Counter({(s["src"], s["dst"]): s["packets"] for s in truth["streams"]})
    assert any("also received RTP from 203.0.113.99:5004" in w and "not merged" in w for w in report.warnings)


def test_rtcp_after_the_bye_is_attributed(generated, tmp_path: Path) -> None:
    folder = generated("rtcp-after-bye")
    truth, report = _correlate(folder, tmp_path / "out")
    finals = [s for s in truth["streams"] if s["kind"] == "rtcp" and s["src"] in ("198.51.100.10:30001", "10.77.2.10:16385")]
    got = {(s.src, s.kind): s for s in report.streams}
    for s in finals:
        assert got[(s["src"], "rtcp")].packets == s["packets"]
    last_sip = report.plan.end_ns
    late = [u for u in _udp(report.outputs[0])]
    with open_capture(report.outputs[0]) as reader:
        stamps = [f.ts_ns for f in reader]
    assert max(stamps) - last_sip > 2 * 10**9, "a report later than the 2 s margin made it in"
    assert len(late) == truth["media_packets"]


def test_without_the_rtcp_tail_the_final_report_is_lost(generated, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(candidates, "RTCP_TAIL_NS", 0)
    folder = generated("rtcp-after-bye")
    truth, report = _correlate(folder, tmp_path / "out")
    assert sum(_flows(report.outputs[0]).values()) == truth["media_packets"] - 2, "both final reports missing"


def test_full_capture_as_sip_pcap_each_media_packet_once(generated, tmp_path: Path, capsys, tshark: str) -> None:
    folder = generated("full-capture-sip")
    truth = load_truth(folder)
    assert truth["sip_holds_media"]
    sip_messages = sum(truth["sip_messages"].values())
    media = sum(s["packets"] for s in truth["streams"])
    for args, out in (([], "no-media"), (["--media", str(folder / "media")], "with-media")):
        code = main(["correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", *args,
                     "--out", str(tmp_path / out), "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert code == 0
        combined = Path(doc["outputs"]["sip_plus_media_decrypted"])
        flows = _flows(combined)
        assert sum(flows.values()) == sip_messages + media
        assert sum(n for f, n in flows.items() if f[0].endswith(":5060") or f[1].endswith(":5060")) == sip_messages
        told = any("media was taken from the SIP capture" in f for f in doc["findings"])
        assert told == (not args)
        listed = subprocess.run([tshark, "-r", str(combined), "-q", "-z", "rtp,streams"], capture_output=True,
                                text=True, timeout=60).stdout
        rows = [line.split() for line in listed.splitlines() if "0x" in line]
        assert sorted(int(r[8]) for r in rows) == sorted(s["packets"] for s in truth["streams"] if s["kind"] == "rtp")
        assert all(r[9] == "0" for r in rows), "no stream shows loss or duplicates"


@pytest.mark.parametrize("knobs", [
    {"core_media_from": "2001:db8:77:3::10"},
    {"carrier_media_from": ("2001:db8:200::77", 61000), "media_vlans": (200,)},
], ids=["ipv6-multi-homed-core", "ipv6-nat-carrier-vlan"])
def test_learning_on_ipv6_and_vlan(knobs: dict, tmp_path: Path) -> None:
    folder = tmp_path / "call"
    truth = render(variant("ipv6-srtp-both-legs", **knobs), folder)
    _, report = _correlate(folder, tmp_path / "out")
    assert _flows(report.outputs[0]) == Counter({(s["src"], s["dst"]): s["packets"] for s in truth["streams"]})
    (latched,) = truth["latched"]
    assert any(f.startswith(f"{latched['leg']} peer sent from {latched['real']}; its SDP said {latched['sdp']}")
               for f in report.findings)
    assert all(s.decrypted + s.clear == s.packets and s.auth_failed == 0 for s in report.streams)


@pytest.mark.parametrize("knobs", [{"sip_transport": "tcp"}, {"invite_padding": 1800}, {"invite_padding": 1800, **{
    "carrier_ip": "2001:db8:100::10", "host_carrier_ip": "2001:db8:77:1::1", "host_core_ip": "2001:db8:77:2::1",
    "core_ip": "2001:db8:77:2::10", "core_background_ip": "2001:db8:77:2::11", "noise_server_ip": "2001:db8:77::53"}}],
    ids=["tcp-segments-and-handshakes", "ipv4-fragments", "ipv6-fragments"])
def test_signalling_copy_keeps_every_sip_frame_and_no_media(knobs: dict, tmp_path: Path) -> None:
    from rtpcore.sip.signalling import write_signalling

    only_sip = tmp_path / "only-sip"
    render(variant("inbound-proxy", **knobs), only_sip)
    full = tmp_path / "full"
    truth = render(variant("full-capture-sip", **knobs), full)
    copy = write_signalling(full / "sip.pcap", tmp_path / "signalling.pcap")
    with open_capture(only_sip / "sip.pcap") as a, open_capture(tmp_path / "signalling.pcap") as b:
        want = [(f.ts_ns // 1000, f.data) for f in a]
        got = [(f.ts_ns // 1000, f.data) for f in b]
    assert got == want, "exactly the SIP capture's own frames: segments, handshakes, fragments"
    assert copy.dropped == truth["media_packets"] + truth["background_packets"]


def _file(name: str, *, exact=(), candidates=()) -> "FileResult":
    from rtpcore.media.demux import FileResult

    return FileResult(Path(name), 0, (), None, None, None, tuple(exact), tuple(candidates), None)


def _sent(leg: str, src: str, relay: str, packets: int) -> "CandidateFlow":
    from rtpcore.media.candidates import CANDIDATE_LATCH, CandidateFlow

    return CandidateFlow(CANDIDATE_LATCH, leg, src, relay, relay, packets, 0, 1, (7,))


def test_the_decision_is_taken_over_all_files_not_per_file(generated) -> None:
    """Each file alone would learn a peer; together they say "ambiguous" or "the SDP peer talks"."""
    from rtpcore.media.latch import adopt
    from rtpcore.sip.legs import resolve_legs

    plan = resolve_legs(generated("inbound-proxy") / "sip.pcap", "inbound")
    relay, sdp_peer = "10.77.1.1:40000", "198.51.100.10:30000"
    one = _file("a.pcap", candidates=[_sent("carrier", "203.0.113.77:61000", relay, 150)])
    two = _file("b.pcap", candidates=[_sent("carrier", "203.0.113.99:5004", relay, 150)])
    alone = adopt(plan, [one])
    assert [lp.peer for lp in alone.learned] == ["203.0.113.77:61000"], "a single file would learn it"
    both = adopt(plan, [one, two])
    assert not both.learned and any("ambiguous, nothing merged" in f for f in both.findings)
    assert both.plan.legs[0].negotiations[0].peer.rtp == plan.legs[0].negotiations[0].peer.rtp
    talking = _file("c.pcap", exact=[("carrier", sdp_peer, relay, 300)])
    with_sdp_peer = adopt(plan, [talking, one])
    assert not with_sdp_peer.learned and any("also received RTP from 203.0.113.77:61000" in w
                                             for w in with_sdp_peer.warnings)
