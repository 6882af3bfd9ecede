"""Call assembly by evidence (issue 8): B2BUA rewriting, topology hiding, concurrent calls, ambiguity, config."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from rtpcore.callgen import VARIANTS
from rtpcore.callgen.plan import plan_call
from rtpcore.callgen.render import _sip_frames, _write
from rtpcore.callgen.sbc import apply_sbc
from rtpcore.callgen.scenario import BASE_TIME_NS
from rtpcore.callgen.sip import Dialog, request
from rtpcore.cli import main
from rtpcore.sip.assembly import assemble
from rtpcore.sip.capture import SipPacket
from rtpcore.sip.dialog import build_hops
from rtpcore.sip.evidence import AssemblyConfig
from rtpcore.sip.legs import resolve_legs
from rtpcore.sip.message import SipMessage
from rtpcore.sip.numbering import NumberPlan, compare_numbers
from tests.conftest import load_truth

SINGLE_CALL = sorted(name for name, spec in VARIANTS.items() if not spec.background_calls and not spec.concurrent_calls)
ASSEMBLY_ENV = ("RTPHELPER_NUMBER_COUNTRY_CODE", "RTPHELPER_NUMBER_NATIONAL_PREFIX", "RTPHELPER_NUMBER_STRIP_PREFIXES",
                "RTPHELPER_NUMBER_INTERNATIONAL_PREFIX", "RTPHELPER_CORRELATION_HEADERS", "RTPHELPER_HOSTS_FILE")


@pytest.fixture(autouse=True)
def _no_site_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Assembly reads runtime.env and hosts.yaml: keep the developer's own out of these tests."""
    for name in ASSEMBLY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RTPHELPER_ENV_FILE", "")
    monkeypatch.chdir(tmp_path)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _calls_json(capsys: pytest.CaptureFixture[str], sip: Path) -> list[dict]:
    code, out, err = _cli(capsys, "calls", "--sip", str(sip), "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("name", SINGLE_CALL)
def test_a_pcap_of_one_call_lists_exactly_that_call(name: str, generated, capsys) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    calls = _calls_json(capsys, folder / "sip.pcap")
    assert [c["call_ids"] for c in calls] == [truth["legs"]["call_ids"]]
    assert not calls[0]["ambiguous"], calls[0]


def test_b2bua_rewrite_assembles_from_timing_and_addresses_alone(generated, capsys) -> None:
    folder = generated("b2bua-rewrite")
    (call,) = _calls_json(capsys, folder / "sip.pcap")
    assert call["to"].startswith("+44") and len(call["links"]) == 1
    assert [call["links"][0]["up_call_id"], call["links"][0]["down_call_id"]] == call["call_ids"]
    evidence = call["links"][0]["evidence"]
    positive = {e["kind"] for e in evidence if e["points"] > 0}
    assert positive <= {"timing", "address", "sdp"}, evidence
    assert not any("number" in e["detail"] or "Call-ID" in e["detail"] for e in evidence)
    assert call["links"][0]["score"] >= 4


def test_multi_call_each_call_id_selects_exactly_that_call(generated, capsys) -> None:
    folder = generated("multi-call")
    truth = load_truth(folder)
    sip = str(folder / "sip.pcap")
    listed = _calls_json(capsys, folder / "sip.pcap")
    assert sorted(c["call_ids"] for c in listed) == sorted(c["call_ids"] for c in truth["calls"])
    assert len(truth["calls"]) == 6 and sum(len(c["call_ids"]) for c in truth["calls"]) == 11
    for call in truth["calls"]:
        for call_id in call["call_ids"]:
            code, out, err = _cli(capsys, "legs", "--sip", sip, "--direction", call["direction"], "--json",
                                  "--call-id", call_id)
            assert code == 0, err
            assert json.loads(out) == call, call_id


def test_non_numeric_user_parts_are_no_evidence(generated, capsys) -> None:
    folder = generated("multi-call")
    listed = _calls_json(capsys, folder / "sip.pcap")
    named = [c for c in listed if c["from"] == "ua"]
    assert len(named) >= 3
    for call in named:
        for link in call["links"]:
            assert not any("ua" in e["detail"].split() for e in link["evidence"]), link
    assert NumberPlan().normalise("ua") is None


def test_legs_explain_names_the_correlation_header(generated, capsys) -> None:
    folder = generated("b2bua-national")
    truth = load_truth(folder)
    sip = str(folder / "sip.pcap")
    code, out, _ = _cli(capsys, "legs", "--sip", sip, "--direction", "inbound", "--explain")
    assert code == 0
    assert f"call {truth['legs']['call_id']}: 2 hop(s)" in out
    assert "X-CID " in out and "carried across" in out and "score " in out
    code, out, _ = _cli(capsys, "legs", "--sip", sip, "--direction", "inbound", "--explain", "--json")
    doc = json.loads(out)
    assembly = doc.pop("assembly")
    assert doc == truth["legs"]
    assert assembly["call_ids"] == truth["legs"]["call_ids"]
    assert any(e["detail"].startswith("X-CID") for e in assembly["links"][0]["evidence"])


def test_configured_number_plan_makes_national_equal_international(generated, capsys, monkeypatch) -> None:
    folder = generated("b2bua-national")
    (call,) = _calls_json(capsys, folder / "sip.pcap")
    details = [e["detail"] for e in call["links"][0]["evidence"]]
    assert any("agree on their last" in d and "called number" in d for d in details), details
    monkeypatch.setenv("RTPHELPER_NUMBER_COUNTRY_CODE", "44")
    (call,) = _calls_json(capsys, folder / "sip.pcap")
    details = [e["detail"] for e in call["links"][0]["evidence"]]
    assert f"called number {call['to']} on both sides" in details, details


@pytest.mark.parametrize(("user", "plan", "expected"), [
    ("+44 20 7946 0000", NumberPlan(), "+442079460000"),
    ("02079460000", NumberPlan(country_code="44"), "+442079460000"),
    ("02079460000", NumberPlan(), "02079460000"),
    ("00442079460000", NumberPlan(), "+442079460000"),
    ("101002079460000", NumberPlan(country_code="44", strip_prefixes=("1010",)), "+442079460000"),
    ("4711", NumberPlan(country_code="44"), "4711"),
    ("anonymous", NumberPlan(), None),
    ("12", NumberPlan(), None),
])
def test_number_normalisation(user: str, plan: NumberPlan, expected: str | None) -> None:
    assert plan.normalise(user) == expected


def test_number_comparison_is_evidence_not_a_gate() -> None:
    assert compare_numbers(("+442079460000",), ("+442079460001",), "called number", 3).points < 0
    assert compare_numbers(("+442079464711",), ("4711",), "called number", 3).points == 1
    assert compare_numbers(("+442079460000",), ("sbc",), "called number", 3) is None
    assert compare_numbers((), ("4711",), "called number", 3) is None


def _twin_calls(tmp: Path) -> Path:
    """Two B2BUA calls whose hops are indistinguishable: same timing 1 ms apart, same SBC, names not numbers."""
    spec = replace(VARIANTS["b2bua-rewrite"], user_names=True)
    one = apply_sbc(plan_call(spec, BASE_TIME_NS), spec)
    events = list(one.sip)
    for ev in one.sip:
        data = ev.data
        for cid in one.call_ids:
            data = data.replace(cid.encode(), f"{cid}-twin".encode())
        events.append(replace(ev, ts_ns=ev.ts_ns + 1_000_000, data=data, call_id=f"{ev.call_id}-twin"))
    frames = sorted(_sip_frames(events, spec.mtu, tcp=False), key=lambda f: f.ts_ns)
    _write(tmp / "sip.pcap", spec, spec.sip_linktype, (), frames)
    return tmp / "sip.pcap"


def test_indistinguishable_calls_are_reported_ambiguous_never_silently_picked(tmp_path: Path, capsys, caplog) -> None:
    sip = _twin_calls(tmp_path)
    listed = _calls_json(capsys, sip)
    assert len(listed) == 2 and all(len(c["call_ids"]) == 2 for c in listed)
    assert all(c["ambiguous"] for c in listed)
    assert any(link["rivals"] for c in listed for link in c["links"])
    code, out, _ = _cli(capsys, "calls", "--sip", str(sip))
    assert code == 0 and out.count("[assembly ambiguous: see --explain]") == 2
    code, out, err = _cli(capsys, "legs", "--sip", str(sip), "--direction", "inbound", "--call-id", listed[0]["call_id"])
    assert code == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("call assembly is ambiguous" in w and "--explain" in w for w in warned), warned
    plan = resolve_legs(sip, "inbound", call_id=listed[1]["call_ids"][1])
    assert any(w.startswith("call assembly is ambiguous") for w in plan.warnings)


def test_config_json_shows_the_sbc_addresses(tmp_path: Path, capsys) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(_HOSTS.format(sip="[10.77.1.1, '2001:db8:0::1']", media="10.77.1.2"))
    code, out, _ = _cli(capsys, "config", "--config", str(hosts), "--json")
    assert code == 0
    (host,) = json.loads(out)["hosts"]
    assert host["sip_addresses"] == ["10.77.1.1", "2001:db8::1"] and host["media_addresses"] == ["10.77.1.2"]


def test_hosts_yaml_addresses_tie_the_two_sides_of_the_sbc(generated, capsys, monkeypatch, tmp_path: Path) -> None:
    folder = generated("b2bua-rewrite")
    (call,) = _calls_json(capsys, folder / "sip.pcap")
    before = call["links"][0]
    assert any(e["points"] < 0 and "nothing ties" in e["detail"] for e in before["evidence"])
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(_HOSTS.format(sip="[10.77.1.1, 10.77.2.1]", media="[10.77.1.1, 10.77.2.1]"))
    monkeypatch.setenv("RTPHELPER_HOSTS_FILE", str(hosts))
    (call,) = _calls_json(capsys, folder / "sip.pcap")
    details = [e["detail"] for e in call["links"][0]["evidence"]]
    assert "10.77.1.1 and 10.77.2.1 are both host sbc-1 (hosts.yaml)" in details
    assert "media addresses 10.77.1.1 and 10.77.2.1 both belong to host sbc-1" in details
    assert call["links"][0]["score"] == before["score"] + 4


_HOSTS = """\
environments:
  PRD:
    regions:
      EU:
        sub-region:
          eu-west-1:
            hosts:
              - id: sbc-1
                address: 192.0.2.10
                interfaces: [pkt0]
                sip_addresses: {sip}
                media_addresses: {media}
"""


@pytest.mark.parametrize(("sip", "media", "message"), [
    ("[10.77.1.1, sbc.example]", "[]", "hosts[0] (sbc-1): sip_addresses[1] 'sbc.example' is not an IP address"),
    ("[]", "10.77.1.300", "hosts[0] (sbc-1): media_addresses[0] '10.77.1.300' is not an IP address"),
])
def test_bad_hosts_addresses_exit_2_with_the_place(sip: str, media: str, message: str, tmp_path: Path, capsys,
                                                   monkeypatch, generated) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(_HOSTS.format(sip=sip, media=media))
    code, _, err = _cli(capsys, "config", "--config", str(hosts))
    assert code == 2 and message in err and f"{hosts}: environments.PRD.regions.EU.sub-region.eu-west-1." in err
    monkeypatch.setenv("RTPHELPER_HOSTS_FILE", str(hosts))
    code, _, err = _cli(capsys, "calls", "--sip", str(generated("b2bua-rewrite") / "sip.pcap"))
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize(("name", "value", "message"), [
    ("RTPHELPER_NUMBER_COUNTRY_CODE", "4x", "RTPHELPER_NUMBER_COUNTRY_CODE='4x' is not a country code (1-3 digits, e.g. 44)"),
    ("RTPHELPER_NUMBER_COUNTRY_CODE", "4444", "RTPHELPER_NUMBER_COUNTRY_CODE='4444' is not a country code"),
    ("RTPHELPER_NUMBER_NATIONAL_PREFIX", "O", "RTPHELPER_NUMBER_NATIONAL_PREFIX='O' must be 1-8 digits"),
    ("RTPHELPER_NUMBER_STRIP_PREFIXES", "1010,9x", "RTPHELPER_NUMBER_STRIP_PREFIXES='1010,9x' item 2 '9x' is not 1-8 digits"),
    ("RTPHELPER_CORRELATION_HEADERS", "X-CID,X Bad", "RTPHELPER_CORRELATION_HEADERS='X-CID,X Bad' item 2 'X Bad' is not a SIP header name"),
])
def test_bad_assembly_settings_exit_2_with_the_place(name: str, value: str, message: str, monkeypatch, capsys,
                                                     generated) -> None:
    monkeypatch.setenv(name, value)
    sip = str(generated("b2bua-rewrite") / "sip.pcap")
    for args in (("calls", "--sip", sip), ("legs", "--sip", sip, "--direction", "inbound")):
        code, out, err = _cli(capsys, *args)
        assert code == 2 and out == ""
        assert f"error: environment: {message}" in err and err.count("\n") == 1


def test_configured_correlation_header_ties_the_hops(generated, capsys, monkeypatch) -> None:
    folder = generated("b2bua-national")
    monkeypatch.setenv("RTPHELPER_CORRELATION_HEADERS", "X-Other")
    (call,) = _calls_json(capsys, folder / "sip.pcap")
    assert not any(e["detail"].startswith("X-CID") for e in call["links"][0]["evidence"])
    monkeypatch.setenv("RTPHELPER_CORRELATION_HEADERS", "X-Other,x-cid")
    (call,) = _calls_json(capsys, folder / "sip.pcap")
    assert any(e["detail"].startswith("x-cid ") and e["points"] == 6 for e in call["links"][0]["evidence"])


def _packet(ts_ns: int, src: str, dst: str, data: bytes, index: int) -> SipPacket:
    return SipPacket(ts_ns, index, "udp", src, 5060, dst, 5060, SipMessage.parse(data))


def test_identity_headers_alone_tie_two_dialogs() -> None:
    """PAI, Diversion and a P-Charging-Vector icid carried across link dialogs even with no timing to speak of."""
    carrier, sbc_in, sbc_out, core = "198.51.100.10", "10.77.1.1", "10.77.2.1", "10.77.2.10"
    up = Dialog("up-call@x", "+442079460001", "+442079460000", carrier, sbc_in, "t1", "t2", "UDP")
    down = Dialog("down-call@y", "trunk", "4711", sbc_out, core, "t3", "t4", "UDP")
    icid = "P-Charging-Vector: icid-value=AyretyU0dm+6O2IrT5tAFrbHLso=;orig-ioi=home1.net"
    up_invite = request(up, "INVITE", 1, from_caller=True, branch="b1", established=False,
                        extra=(icid, "P-Asserted-Identity: <sip:+442079460001@carrier.example>"))
    down_invite = request(down, "INVITE", 77, from_caller=True, branch="b2", established=False,
                          extra=(icid, "P-Asserted-Identity: <tel:+442079460001>",
                                 "Diversion: <sip:+442079460000@sbc.example>;reason=unconditional"))
    t0 = BASE_TIME_NS
    packets = [_packet(t0, carrier, sbc_in, up_invite, 0), _packet(t0 + 3_000_000_000, sbc_out, core, down_invite, 1)]
    calls = assemble(build_hops(packets), AssemblyConfig())
    assert [c.call_ids for c in calls] == [("up-call@x", "down-call@y")]
    details = {e.detail: e.points for e in calls[0].links[0].evidence}
    assert details["P-Charging-Vector icid-value AyretyU0dm+6O2IrT5tAFrbHLso= carried across"] == 6
    assert details["calling number +442079460001 on both sides"] == 2
    assert details["diverted-from number +442079460000 on both sides"] == 2
    assert details["INVITE forwarded 3000 ms after the upstream INVITE"] == 0


def test_session_id_of_rfc_7989_is_evidence(generated, capsys) -> None:
    folder = generated("outbound-b2bua-rewrite")
    (call,) = _calls_json(capsys, folder / "sip.pcap")
    assert any(e["detail"].startswith("Session-ID ") and e["points"] == 6 for e in call["links"][0]["evidence"])
    assert call["from"] == "sbc-trunk" and call["to"].isdigit() and len(call["to"]) == 4


def test_srtp_suite_family_is_weak_sdp_evidence(generated, capsys) -> None:
    (call,) = _calls_json(capsys, generated("srtp-both-legs") / "sip.pcap")
    details = {e["detail"]: e["points"] for e in call["links"][0]["evidence"]}
    assert details["same SRTP suite family offered (AES_CM_128)"] == 0.5
    assert not any("inline" in d or "crypto:" in d for d in details)
    (call,) = _calls_json(capsys, generated("inbound-proxy") / "sip.pcap")
    assert not any("SRTP" in e["detail"] for e in call["links"][0]["evidence"]), "plain RTP on the core side"


def test_a_hop_just_short_of_a_link_is_reported_as_a_near_miss() -> None:
    """Weak but real evidence (same box, slow forward, BYE relayed loosely) is shown, not silently dropped."""
    carrier, sbc, core = "198.51.100.10", "10.77.1.1", "10.77.2.10"
    up = Dialog("slow-up@x", "ua", "ua", carrier, sbc, "t1", "t2", "UDP")
    down = Dialog("slow-down@y", "ua", "ua", sbc, core, "t3", "t4", "UDP")
    t0 = BASE_TIME_NS
    second = 1_000_000_000
    packets = [
        _packet(t0, carrier, sbc, request(up, "INVITE", 1, from_caller=True, branch="b1", established=False), 0),
        _packet(t0 + 3 * second // 2, sbc, core, request(down, "INVITE", 1, from_caller=True, branch="b2",
                                                         established=False), 1),
        _packet(t0 + 20 * second, carrier, sbc, request(up, "BYE", 2, from_caller=True, branch="b3"), 2),
        _packet(t0 + 20 * second + second // 2, sbc, core, request(down, "BYE", 2, from_caller=True, branch="b4"), 3),
    ]
    calls = assemble(build_hops(packets), AssemblyConfig())
    assert [c.call_ids for c in calls] == [("slow-up@x",), ("slow-down@y",)]
    assert [m.score for m in calls[1].near_misses] == [3.5] and calls[1].ambiguous
    assert "  near miss: Call-ID slow-up@x (198.51.100.10 → 10.77.1.1) scored 3.5 (links need 4)" in calls[1].explain()
    assert any("may belong to this call too" in note for note in calls[1].notes())
