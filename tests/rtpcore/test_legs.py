"""Leg resolution: the generator's truth for every variant, real captures, and each bad input's message."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from rtpcore.callgen import VARIANTS
from rtpcore.cli import main
from rtpcore.errors import CallSelectionError, DirectionMismatchError, SipError
from rtpcore.pcap.build import build_udp, frame
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.writer import PcapWriter
from rtpcore.sip.legs import resolve_legs
from tests.conftest import load_truth


def _legs_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["legs", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_legs_json_equals_generator_truth(name: str, generated, capsys) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    args = ["--sip", str(folder / truth["sip"]), "--direction", truth["direction"], "--json"]
    if truth.get("select"):
        args += ["--call-id", truth["select"]["call_id"]]
    code, out, _ = _legs_cli(capsys, *args)
    assert code == 0
    assert out.count("\n") == 1, "exactly one JSON object on one line"
    assert json.loads(out) == truth["legs"]


def test_console_script_prints_one_json_object(generated) -> None:
    folder = generated("inbound-b2bua")
    truth = load_truth(folder)
    exe = Path(sys.executable).with_name("rtphelper")
    # The console script of a shared venv imports the checkout it was installed from: point it at this one.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([str(exe), "legs", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--json"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == truth["legs"]
    assert len(truth["legs"]["call_ids"]) == 2, "a B2BUA call has two dialogs"


def test_keys_never_printed(generated, capsys) -> None:
    folder = generated("srtp-both-legs")
    truth = load_truth(folder)
    for extra in ([], ["--json"]):
        code, out, err = _legs_cli(capsys, "--sip", str(folder / "sip.pcap"), "--direction", "inbound", *extra)
        assert code == 0
        for stream in truth["streams"]:
            if stream.get("key"):
                assert stream["key"][:12] not in out + err
        assert "inline:" not in out + err


def test_plan_carries_each_senders_key_and_windows(generated) -> None:
    folder = generated("reinvite-rekey")
    truth = load_truth(folder)
    plan = resolve_legs(folder / "sip.pcap", "inbound")
    carrier = plan.leg("carrier")
    assert carrier is not None and len(carrier.negotiations) == 2
    first, second = carrier.negotiations
    assert first.peer.rtp != second.peer.rtp, "the re-INVITE moved the carrier's port"
    assert first.end_ns >= second.answer_ns and second.start_ns <= second.offer_ns
    keys = {s["key"] for s in truth["streams"] if s["leg"] == "carrier" and s.get("key") and s["kind"] == "rtp"}
    import base64
    plan_keys = set()
    for n in carrier.negotiations:
        for side in (n.peer, n.host):
            assert side.crypto is not None
            k = side.crypto.keys[0]
            plan_keys.add(base64.b64encode(k.master_key + k.master_salt).decode())
    assert plan_keys == keys, "each side's a=crypto is the key of the media it sends, both before and after the rekey"


def test_number_selects_among_background_calls(generated, capsys) -> None:
    folder = generated("background-calls")
    truth = load_truth(folder)
    code, out, err = _legs_cli(capsys, "--sip", str(folder / "sip.pcap"), "--direction", "inbound")
    assert code == 2
    assert "3 calls match; choose one with --call-id or --number" in err
    assert truth["select"]["call_id"] in err
    assert "Traceback" not in err
    # the called number of the selected call, written differently (+44… vs 0044…)
    plan = resolve_legs(folder / "sip.pcap", "inbound", call_id=truth["select"]["call_id"])
    code, out, _ = _legs_cli(capsys, "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--json",
                             "--call-id", plan.call_id)
    assert code == 0 and json.loads(out) == truth["legs"]


def test_unknown_call_id_lists_calls(generated) -> None:
    folder = generated("background-calls")
    with pytest.raises(CallSelectionError, match=r"no call matches Call-ID 'nope'; calls in the capture:\n  "):
        resolve_legs(folder / "sip.pcap", "inbound", call_id="nope")


def test_direction_that_does_not_fit(generated, capsys) -> None:
    folder = generated("inbound-proxy")
    code, _, err = _legs_cli(capsys, "--sip", str(folder / "sip.pcap"), "--direction", "outbound")
    assert code == 2
    assert "direction 'outbound' does not fit the signalling" in err
    assert "198.51.100.10" in err and "10.77.2.10" in err and "Try --direction inbound" in err
    assert err.count("\n") == 1


def test_internal_only_cannot_be_judged_so_both_directions_resolve(generated) -> None:
    folder = generated("internal-only")
    inbound = resolve_legs(folder / "sip.pcap", "inbound")
    outbound = resolve_legs(folder / "sip.pcap", "outbound")
    assert inbound.leg("carrier").peer == outbound.leg("core").peer


# --- bad input ---------------------------------------------------------------------------------


def test_not_a_pcap(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "call.pcap"
    bad.write_text("INVITE sip:bob@example.com SIP/2.0\r\n")
    code, out, err = _legs_cli(capsys, "--sip", str(bad), "--direction", "inbound")
    assert code == 2 and out == ""
    assert err.startswith(f"rtphelper legs: error: {bad}: not a pcap or pcapng file")
    assert "Traceback" not in err and err.count("\n") == 1


def test_missing_file(tmp_path: Path, capsys) -> None:
    code, _, err = _legs_cli(capsys, "--sip", str(tmp_path / "nope.pcap"), "--direction", "inbound")
    assert code == 2 and "nope.pcap" in err and "Traceback" not in err


def test_truncated_pcap_says_where(generated, tmp_path: Path, capsys) -> None:
    src = (generated("inbound-proxy") / "sip.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    # keep the header and the first 3 records whole, then half of the 4th
    pos, n = 24, 0
    while n < 3:
        pos += 16 + struct.unpack_from("<I", src, pos + 8)[0]
        n += 1
    cut.write_bytes(src[: pos + 20])
    code, _, err = _legs_cli(capsys, "--sip", str(cut), "--direction", "inbound")
    assert code == 2
    assert f"{cut}: truncated after 3 packets" in err and f"byte offset {pos}" in err


def test_unsupported_link_type(tmp_path: Path, capsys) -> None:
    path = tmp_path / "usb.pcap"
    with PcapWriter(path, 189) as w:  # LINKTYPE_USB_LINUX_MMAPPED
        w.write(1_700_000_000 * 10**9, b"\x00" * 64)
    code, _, err = _legs_cli(capsys, "--sip", str(path), "--direction", "inbound")
    assert code == 2 and str(path) in err and "189" in err and "not supported" in err


def _sip_pcap(path: Path, messages: list[tuple[str, str, bytes]]) -> None:
    with PcapWriter(path, LINKTYPE_ETHERNET) as w:
        for i, (src, dst, payload) in enumerate(messages):
            w.write(1_768_471_200 * 10**9 + i * 10**7, frame(LINKTYPE_ETHERNET, build_udp(src, 5060, dst, 5060, payload)))


def _msg(start: str, call_id: str, cseq: str, body: str = "", to_tag: str = "") -> bytes:
    headers = [start, "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", "From: <sip:100@192.0.2.1>;tag=a",
               f"To: <sip:200@192.0.2.2>{to_tag}", f"Call-ID: {call_id}", f"CSeq: {cseq}",
               f"Content-Length: {len(body)}"]
    if body:
        headers.insert(-1, "Content-Type: application/sdp")
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def test_no_invite(shared_pcaps: Path, capsys) -> None:
    path = shared_pcaps / "heplify_sip_ipv4_tcp_retrans.pcap"  # REGISTER only, Linux SLL
    code, _, err = _legs_cli(capsys, "--sip", str(path), "--direction", "inbound")
    assert code == 2
    assert "no INVITE found (REGISTER ×4, 401 ×2, 200 ×2); give the SIP capture of the call" in err


def test_invite_without_sdp(tmp_path: Path, capsys) -> None:
    path = tmp_path / "nosdp.pcap"
    _sip_pcap(path, [
        ("192.0.2.1", "192.0.2.2", _msg("INVITE sip:200@192.0.2.2 SIP/2.0", "c1", "1 INVITE")),
        ("192.0.2.2", "192.0.2.1", _msg("SIP/2.0 486 Busy Here", "c1", "1 INVITE", to_tag=";tag=b")),
    ])
    code, _, err = _legs_cli(capsys, "--sip", str(path), "--direction", "inbound")
    assert code == 2
    assert "the INVITE at frame 1 (Call-ID c1) cannot give media endpoints: it has no SDP" in err
    assert "486 Busy Here" in err


def test_debug_shows_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"garbage!" * 8)
    code = main(["--debug", "legs", "--sip", str(bad), "--direction", "inbound"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "PcapFormatError" in err


# --- real captures -----------------------------------------------------------------------------


def _tshark_rtp_endpoints(tshark: str, path: Path) -> set[str]:
    out = subprocess.run([tshark, "-r", str(path), "-o", "rtp.heuristic_rtp:TRUE", "-q", "-z", "rtp,streams"],
                         capture_output=True, text=True, timeout=60).stdout
    eps = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[2].count(".") == 3 and parts[3].isdigit():
            eps.add(f"{parts[2]}:{parts[3]}")
            eps.add(f"{parts[4]}:{parts[5]}")
    return eps


@pytest.mark.tshark
def test_real_b2bua_fax_call(shared_pcaps: Path, tshark: str) -> None:
    path = shared_pcaps / "heplify_FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"
    plan = resolve_legs(path, "inbound")
    assert len(plan.call_ids) == 2, "two Call-IDs through a B2BUA are one call"
    rtp = _tshark_rtp_endpoints(tshark, path)
    carrier = plan.leg("carrier")
    assert carrier is not None and rtp <= set(carrier.endpoints), (rtp, carrier.endpoints)
    assert plan.leg("core") is not None


def test_real_webrtc_call_is_dtls_and_direction_checked(shared_pcaps: Path) -> None:
    path = shared_pcaps / "heplify_sip_tcp_websocket.pcap"
    plan = resolve_legs(path, "outbound")
    assert len(plan.call_ids) == 2
    core, carrier = plan.leg("core"), plan.leg("carrier")
    assert core.peer == "10.243.17.55" and carrier.peer == "206.147.76.23"
    assert any("DTLS-SRTP" in w for w in plan.warnings)
    assert all(n.dtls for n in core.negotiations)
    with pytest.raises(DirectionMismatchError, match=r"first INVITE came from 10.243.0.157 and its media from 10.243.17.55 \(internal address\)"):
        resolve_legs(path, "inbound")


def test_real_ipv6_fragmented_call_has_two_legs(shared_pcaps: Path) -> None:
    plan = resolve_legs(shared_pcaps / "sngrep_ipv6frag.pcap", "inbound")
    assert [leg.name for leg in plan.legs] == ["carrier", "core"]
    assert plan.leg("carrier").endpoints[0].startswith("[fd17:")


def test_real_rejected_call(shared_pcaps: Path) -> None:
    with pytest.raises(SipError, match=r"offer was never answered \(the call ended with 403"):
        resolve_legs(shared_pcaps / "heplify_sip_sctp.pcap", "inbound")


def test_real_single_hop_call_warns_about_missing_leg(shared_pcaps: Path) -> None:
    plan = resolve_legs(shared_pcaps / "heplify_sip_ipv4_tcp.pcap", "inbound")
    assert [leg.name for leg in plan.legs] == ["carrier"]
    assert plan.leg("carrier").endpoints == ["10.33.6.100:6000", "10.33.6.101:6050"]
    assert any("only one hop" in w for w in plan.warnings)


def test_sip_over_tls_is_named(shared_pcaps: Path, capsys) -> None:
    code, _, err = _legs_cli(capsys, "--sip", str(shared_pcaps / "sngrep_tlssaved.pcap"), "--direction", "inbound")
    assert code == 2 and err.count("\n") == 1
    assert "no INVITE found (no SIP messages at all)" in err
    assert "5313 bytes of TCP that are not plain SIP — SIP over TLS (port 5061)" in err
