"""One odd message never ends the job or mislabels the legs; our own filter's failures are named as ours."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from rtpcore.callgen import render, variant
from rtpcore.cli import main
from rtpcore.pcap.build import replace_udp_payload
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.sip.message import UNKNOWN_CSEQ, SipFramer, SipMessage
from tests.conftest import load_truth


def _mutated(folder: Path, dest: Path, change: Callable[[bytes], bytes]) -> Path:
    """A copy of the variant's UDP SIP pcap with each SIP payload passed through `change` (lengths fixed)."""
    with open_capture(folder / "sip.pcap") as reader, PcapWriter(dest, reader.linktype) as writer:
        for f in reader:
            udp = parse_udp(parse_ip(link_payload(f.linktype, f.data)))
            payload = change(udp.payload)
            writer.write(f.ts_ns, f.data if payload == udp.payload else replace_udp_payload(f.linktype, f.data, payload))
    return dest


@pytest.fixture
def cli(capsys, caplog):
    """Run rtphelper in-process: (exit code, stdout, stderr + the warnings it logged)."""
    def run(*args: str) -> tuple[int, str, str]:
        caplog.clear()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err + caplog.text
    return run


def _legs_json(cli, sip: Path, direction: str = "inbound") -> tuple[int, dict | None, str]:
    code, out, err = cli("legs", "--sip", str(sip), "--direction", direction, "--json")
    return code, (json.loads(out) if code == 0 else None), err


def _set_content_length(payload: bytes, value: bytes) -> bytes:
    return re.sub(rb"Content-Length: \d+", b"Content-Length: " + value, payload)


# -- CSeq ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cseq", [b"x1", b"1" * 5000], ids=["non-numeric", "5000-digits"])
def test_odd_cseq_is_a_warning_on_that_message_and_the_job_goes_on(cseq: bytes, generated, tmp_path: Path, cli) -> None:
    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    sip = _mutated(folder, tmp_path / "sip.pcap", lambda p: p.replace(b"CSeq: 1 INVITE", b"CSeq: " + cseq + b" INVITE", 1)
                   if p.startswith(b"INVITE") else p)
    code, doc, err = _legs_json(cli, sip)
    assert code == 0 and doc == truth["legs"]
    assert "frame 1 (udp): INVITE sip:" in err and "CSeq number" in err and "Traceback" not in err
    code, out, err = cli("correlate", "--sip", str(sip), "--direction", "inbound", "--media",
                          str(folder / "media"), "--out", str(tmp_path / "o"), "--json")
    report = json.loads(out)
    assert code == 0 and any(w.startswith(f"{sip}: frame 1 (udp)") and "CSeq" in w for w in report["warnings"])
    assert sum(s["packets"] for leg in report["legs"] for s in leg["streams"]) == sum(s["packets"] for s in truth["streams"])


def test_cseq_number_is_bounded_not_a_crash() -> None:
    msg = SipMessage.parse(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: " + b"9" * 5000 + b" OPTIONS\r\n\r\n")
    assert msg.cseq_number == UNKNOWN_CSEQ and "5000 characters" in (msg.cseq_problem or "")
    ok = SipMessage.parse(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 2147483647 OPTIONS\r\n\r\n")
    assert ok.cseq_number == 2**31 - 1 and ok.cseq_problem is None
    with pytest.raises(ValueError, match="Content-Length has 5000 digits"):
        SipMessage.parse(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: " + b"7" * 5000 + b"\r\n\r\n")


# -- c= names, RTCP port 65536, zone ids -----------------------------------------------------------------


def test_media_address_that_is_a_name_is_a_warning_and_the_peer_is_learned(generated, tmp_path: Path, cli) -> None:
    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    sip = _mutated(folder, tmp_path / "sip.pcap", lambda p: p.replace(b"c=IN IP4 198.51.100.10", b"c=IN IP4 carrier.example.com"))
    code, doc, err = _legs_json(cli, sip)
    assert code == 0 and "INVITE at frame 1: media address 'carrier.example.com' (c=) is a name; resolve it" in err
    assert doc["legs"][1] == truth["legs"]["legs"][1], "the core leg is untouched"
    code, out, err = cli("correlate", "--sip", str(sip), "--direction", "inbound", "--media",
                          str(folder / "media"), "--out", str(tmp_path / "o"), "--json")
    report = json.loads(out)
    carrier = next(leg for leg in report["legs"] if leg["name"] == "carrier")
    want = [s for s in truth["streams"] if s["leg"] == "carrier"]
    assert code == 0 and sorted((s["src"], s["packets"], s["decrypted"]) for s in carrier["streams"]) == sorted(
        (s["src"], s["packets"], s["packets"]) for s in want)
    assert "carrier peer sent from 198.51.100.10:30000; its SDP gave a name, not an address" in " ".join(report["findings"])


def test_rtp_port_65535_has_no_rtcp_pair_and_the_job_goes_on(generated, tmp_path: Path, cli) -> None:
    folder = generated("inbound-proxy")
    # The core phone announces RTP on 65535 (so RTCP on 65536) but sends from 16384: learned, and no filter error.
    sip = _mutated(folder, tmp_path / "sip.pcap", lambda p: p.replace(b"m=audio 16384", b"m=audio 65535"))
    code, doc, err = _legs_json(cli, sip)
    assert code == 0 and "RTP port 65535 leaves no port for RTCP (65536)" in err
    assert "10.77.2.10:65535" in doc["legs"][1]["endpoints"], "legs prints what the SDP said"
    code, out, err = cli("correlate", "--sip", str(sip), "--direction", "inbound", "--media",
                          str(folder / "media"), "--out", str(tmp_path / "o"), "--json")
    report = json.loads(out)
    assert code == 0, err
    assert any("RTP port 65535 leaves no port for RTCP (65536); RTCP of the core leg is not followed" in w
               for w in report["warnings"])
    assert all(f["error"] is None for f in report["files"]), "the capture file is not blamed"
    core = next(leg for leg in report["legs"] if leg["name"] == "core")
    assert any(s["src"] == "10.77.2.10:16384" and s["packets"] > 300 for s in core["streams"])
    assert "core peer sent from 10.77.2.10:16384; its SDP said 10.77.2.10:65535" in " ".join(report["findings"])


def test_ipv6_zone_id_is_stripped(generated, tmp_path: Path, cli) -> None:
    folder = generated("ipv6")
    truth = load_truth(folder)
    sip = _mutated(folder, tmp_path / "sip.pcap",
                   lambda p: p.replace(b"c=IN IP6 2001:db8:77:2::10\r\n", b"c=IN IP6 2001:db8:77:2::10%eth0\r\n"))
    assert b"%eth0" in sip.read_bytes()
    code, doc, err = _legs_json(cli, sip)
    assert code == 0 and doc == truth["legs"]
    code, out, err = cli("correlate", "--sip", str(sip), "--direction", "inbound", "--media",
                          str(folder / "media"), "--out", str(tmp_path / "o"), "--json")
    assert code == 0, err
    got = {(s["src"], s["packets"]) for leg in json.loads(out)["legs"] for s in leg["streams"]}
    assert got == {(s["src"], s["packets"]) for s in truth["streams"]}


def test_our_own_filter_failing_is_named_as_ours(generated, tmp_path: Path, cli, monkeypatch) -> None:
    import rtpcore.media.demux as demux

    folder = generated("inbound-proxy")
    monkeypatch.setattr(demux, "filter_for_file", lambda plan, source: "udp and port 65536")
    code, out, err = cli("correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound",
                          "--media", str(folder / "media"), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "rtphelper's own media filter" in err and "not the capture eu-west-1-media-1-0001.pcap" in err
    assert "10.77.1.1:40000" in err, "the endpoints it was built from are named"


# -- the TCP framer giving up ---------------------------------------------------------------------------


def test_framer_survives_a_5000_digit_content_length_and_says_what_it_dropped() -> None:
    framer = SipFramer()
    bad = b"INVITE sip:b@x SIP/2.0\r\nCall-ID: lost-1\r\nCSeq: 1 INVITE\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nv=0\r\n"
    good = b"OPTIONS sip:b@x SIP/2.0\r\nCall-ID: next\r\nCSeq: 2 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    out = framer.feed(bad + good)
    assert out == [good]
    (lost,) = framer.dropped
    assert lost.is_invite and lost.call_id == "lost-1" and "of 5000 digits" in lost.reason


@pytest.mark.parametrize(
    "knobs, why",
    [({"invite_padding": 140_000}, "headers run past 64 KiB"),
     ({"content_length_override": (0, "2147483648")}, "Content-Length 2147483648 is over the 1 MiB"),
     ({"content_length_override": (0, "9" * 5000)}, "Content-Length of 5000 digits")],
    ids=["over-64k", "2GB-content-length", "5000-digit-content-length"],
)
def test_a_dropped_invite_refuses_rather_than_labels_the_core_hop_carrier(knobs, why, tmp_path: Path, cli) -> None:
    folder = tmp_path / "call"
    truth = render(variant("sip-tcp", topology="b2bua", **knobs), folder)
    for command in ("legs", "correlate"):
        extra = ["--media", str(folder / "media"), "--out", str(tmp_path / "o")] if command == "correlate" else []
        code, out, err = cli(command, "--sip", str(folder / "sip.pcap"), "--direction", "inbound", *extra)
        assert code == 2, (command, out)
        assert "was dropped" in err and why in err and truth["legs"]["call_ids"][0] in err
        assert "core hop could be taken for the carrier" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "combined" / "media_raw.pcap").exists()


def test_a_lost_reinvite_is_a_warning_not_a_refusal() -> None:
    framer = SipFramer()
    reinvite = (b"INVITE sip:b@x SIP/2.0\r\nCall-ID: c1\r\nTo: <sip:b@x>;tag=abc\r\nCSeq: 2 INVITE\r\n"
                b"Content-Length: 2147483648\r\n\r\n")
    framer.feed(reinvite)
    (lost,) = framer.dropped
    assert lost.is_invite and not lost.is_initial_invite


def test_no_media_and_a_sip_pcap_without_media_says_what_to_give(generated, tmp_path: Path, cli) -> None:
    folder = generated("inbound-proxy")
    code, out, err = cli("correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound",
                         "--out", str(tmp_path / "o"))
    assert code == 2 and "no --media was given, so only the SIP capture was searched" in err


def test_a_dropped_provisional_response_is_a_warning_and_the_legs_stand(tmp_path: Path, cli) -> None:
    folder = tmp_path / "call"
    # Message 1 is the SBC's 100 Trying to the carrier over TCP, with a 2 GB Content-Length.
    truth = render(variant("sip-tcp", topology="b2bua", content_length_override=(1, "2147483648")), folder)
    code, out, err = cli("legs", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--json")
    assert code == 0 and json.loads(out) == truth["legs"]
    assert re.search(r"frame \d+ \(tcp 10\.77\.1\.1 → 198\.51\.100\.10\): 'SIP/2\.0 100 Trying'.* was dropped: "
                     r"Content-Length 2147483648 is over the 1 MiB", err), err
    code, out, err = cli("correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--media",
                         str(folder / "media"), "--out", str(tmp_path / "o"), "--json")
    doc = json.loads(out)
    assert code == 0 and any("100 Trying" in w and "was dropped" in w for w in doc["warnings"])
    assert sum(s["packets"] for leg in doc["legs"] for s in leg["streams"]) == sum(s["packets"] for s in truth["streams"])
