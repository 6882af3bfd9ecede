"""The call generator: deterministic bytes, truth that tshark and real SRTP decryption agree with."""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pylibsrtp
import pytest

from rtpcore.callgen import VARIANTS, plaintext_payload, render, variant
from rtpcore.callgen.__main__ import main as cli_main

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
SIP_CHECKED = ["inbound-proxy", "inbound-b2bua", "outbound-b2bua", "sip-tcp", "fragmented-invite", "vlan", "pcapng",
               "ipv6", "reinvite-rekey", "background-calls", "late-offer"]
MEDIA_CHECKED = ["inbound-proxy", "vlan", "sll2", "pcapng", "ipv6", "reinvite-rekey", "wrap-across-files", "duplicates",
                 "rtcp-mux", "gcm", "gcm-256", "suite-32", "srtp-both-legs", "srtcp-clear-first"]
SIP_FIELDS = ["frame.time_epoch", "frame.protocols", "ip.src", "ipv6.src", "sip.Call-ID", "sip.from.user", "sip.Method",
              "sip.Status-Code", "sdp.connection_info.address", "sdp.media.port", "ip.fragment.count", "tcp.segment.count"]
MEDIA_FIELDS = ["frame.protocols", "ip.src", "ipv6.src", "udp.srcport", "ip.dst", "ipv6.dst", "udp.dstport", "udp.payload"]
RTCP_SR = 200
STREAM_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+0x([0-9A-F]+)\s+\S+\s+(\d+)\s")


def _ep(ip: str, port: str | int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _count_records(path: Path) -> int:
    """Records in a pcap or pcapng file, walked independently of rtpcore's reader."""
    data = path.read_bytes()
    count = 0
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        pos = 0
        while pos < len(data):
            block_type, length = struct.unpack_from("<II", data, pos)
            count += block_type == 6
            pos += length
        return count
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    pos = 24
    while pos < len(data):
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
        count += 1
    assert pos == len(data)
    return count


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("callgen")
    return {name: (root / name, render(spec, root / name)) for name, spec in VARIANTS.items()}


def test_same_variant_gives_identical_bytes(tmp_path: Path, rendered: dict[str, tuple[Path, dict]]) -> None:
    for name in ("sip-tcp", "reinvite-rekey", "mid-call"):
        assert cli_main(["--variant", name, "--out", str(tmp_path / name)]) == 0
        assert _digest(tmp_path / name) == _digest(rendered[name][0])
    render(variant("inbound-proxy", seed=7), tmp_path / "seed7")
    assert _digest(tmp_path / "seed7")["sip.pcap"] != _digest(rendered["inbound-proxy"][0])["sip.pcap"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_renders_consistent_truth(name: str, rendered: dict[str, tuple[Path, dict]]) -> None:
    folder, truth = rendered[name]
    assert json.loads((folder / "truth.json").read_text()) == truth
    assert truth["variant"] == name and (folder / truth["sip"]).is_file()
    frames = sum(_count_records(folder / m) for m in truth["media"])
    assert frames == truth["media_packets"] + truth["background_packets"]
    assert truth["media_packets"] == sum(s["packets"] + s["duplicates"] for s in truth["streams"])
    legs = truth["legs"]
    assert [leg["name"] for leg in legs["legs"]] == ["carrier", "core"]
    assert legs["call_ids"][0] == legs["call_id"] and set(truth["sip_messages"]) >= set(legs["call_ids"])
    for s in truth["streams"]:
        leg = next(leg for leg in legs["legs"] if leg["name"] == s["leg"])
        real = {x["real"] for x in truth.get("latched", []) if x["leg"] == s["leg"]}
        if s["kind"] == "rtp":
            assert {s["src"], s["dst"]} <= set(leg["endpoints"]) | real, s
            assert not real or {s["src"], s["dst"]} & real, "a latched leg's media flows with the real address"
        assert s["encrypted"] == (s["suite"] is not None)
    assert {s["leg"] for s in truth["streams"] if s["kind"] == "rtp"} == {"carrier", "core"}
    assert ("select" in truth) == (name in ("background-calls", "multi-call"))


def test_variant_knobs_show_in_truth(rendered: dict[str, tuple[Path, dict]]) -> None:
    t = {name: truth for name, (_, truth) in rendered.items()}
    carrier_rtp = {name: next(s for s in truth["streams"] if s["leg"] == "carrier" and s["kind"] == "rtp")
                   for name, truth in t.items()}
    assert carrier_rtp["mid-call"]["first_seq_index"] >= 2 * 65536
    assert carrier_rtp["wrap-across-files"]["first_seq_index"] == 65436 and len(t["wrap-across-files"]["media"]) == 2
    assert carrier_rtp["duplicates"]["duplicates"] == carrier_rtp["duplicates"]["packets"] // 50
    assert [s["clear_rtcp"] for s in t["srtcp-clear-first"]["streams"] if s["kind"] == "rtcp"][0] == 1
    assert len(t["inbound-b2bua"]["legs"]["call_ids"]) == 2 and len(t["inbound-proxy"]["legs"]["call_ids"]) == 1
    assert len(t["reinvite-rekey"]["legs"]["legs"][0]["endpoints"]) == 4
    assert t["rtcp-mux"]["streams"][1]["src"] == t["rtcp-mux"]["streams"][0]["src"]
    assert t["gcm-256"]["legs"]["legs"][0]["srtp_suite"] == "AEAD_AES_256_GCM"
    assert t["srtp-both-legs"]["legs"]["legs"][1]["srtp_suite"] == "AES_CM_128_HMAC_SHA1_80"
    assert t["ipv6"]["legs"]["legs"][0]["endpoints"][0] == "[2001:db8:100::10]:30000"
    assert len(t["rolling"]["media"]) > 2


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def tshark_out(tshark: str, rendered: dict[str, tuple[Path, dict]]) -> dict[tuple[str, str], str]:
    """One tshark pass per checked file, run two at a time: fields, malformed frames and rtp,streams."""
    jobs: dict[tuple[str, str], list[str]] = {}
    for name in SIP_CHECKED:
        folder, truth = rendered[name]
        fields = [a for f in SIP_FIELDS for a in ("-e", f)]
        jobs[(name, truth["sip"])] = [tshark, "-r", str(folder / truth["sip"]), "-T", "fields", "-E", "occurrence=a",
                                      *fields, "-Y", "sip || _ws.malformed"]
    for name in MEDIA_CHECKED:
        folder, truth = rendered[name]
        fields = [a for f in MEDIA_FIELDS for a in ("-e", f)]
        for media in truth["media"]:
            jobs[(name, media)] = [tshark, "-r", str(folder / media), "-o", "rtp.heuristic_rtp:TRUE", "-T", "fields",
                                   "-E", "occurrence=f", *fields, "-Y", "udp || _ws.malformed", "-z", "rtp,streams"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(jobs, pool.map(_run, jobs.values())))


def _sip_rows(out: str) -> list[dict[str, str]]:
    return [dict(zip(SIP_FIELDS, line.split("\t"))) for line in out.splitlines() if line]


def test_tshark_sees_the_call_sip(tshark_out: dict[tuple[str, str], str], rendered: dict[str, tuple[Path, dict]]) -> None:
    for name in SIP_CHECKED:
        truth = rendered[name][1]
        rows = _sip_rows(tshark_out[(name, truth["sip"])])
        assert not [r for r in rows if "_ws.malformed" in r["frame.protocols"]], name
        counts: dict[str, int] = {}
        for r in rows:
            for call_id in r["sip.Call-ID"].split(","):
                counts[call_id] = counts.get(call_id, 0) + 1
        assert counts == truth["sip_messages"], name
        # Every SDP endpoint tshark decodes belongs to exactly the leg the truth puts it on.
        spec = VARIANTS[name]
        leg_of = {spec.carrier_ip: "carrier", spec.host_carrier_ip: "carrier", spec.core_ip: "core", spec.host_core_ip: "core"}
        seen: dict[str, set[str]] = {"carrier": set(), "core": set()}
        for r in rows:
            src = r["ip.src"] or r["ipv6.src"]
            if r["sdp.media.port"] and src in leg_of and r["sip.Call-ID"] in truth["legs"]["call_ids"]:
                address = str(ipaddress.ip_address(r["sdp.connection_info.address"]))
                seen[leg_of[src]].add(_ep(address, r["sdp.media.port"]))
        for leg in truth["legs"]["legs"]:
            assert seen[leg["name"]] == set(leg["endpoints"]), (name, leg["name"])


def test_tshark_b2bua_dialogs_and_transport_shapes(tshark_out: dict[tuple[str, str], str]) -> None:
    rows = _sip_rows(tshark_out[("inbound-b2bua", "sip.pcap")])
    invites = [r for r in rows if r["sip.Method"] == "INVITE"]
    assert len({r["sip.Call-ID"] for r in invites}) == 2
    first, second = invites[0]["sip.from.user"], invites[1]["sip.from.user"]
    assert first != second and first.lstrip("+") == second.removeprefix("00")
    gap_ms = (float(invites[1]["frame.time_epoch"]) - float(invites[0]["frame.time_epoch"])) * 1000
    assert 5 <= gap_ms <= 80
    frag = [r for r in _sip_rows(tshark_out[("fragmented-invite", "sip.pcap")]) if r["sip.Method"] == "INVITE"]
    assert [r["ip.fragment.count"] for r in frag] == ["2", ""]
    tcp = _sip_rows(tshark_out[("sip-tcp", "sip.pcap")])
    assert tcp[0]["sip.Method"] == "INVITE" and tcp[0]["tcp.segment.count"] == "3"
    assert sum(1 for r in tcp if "," in r["sip.Call-ID"]) == 1


def _media_packets(out: str) -> list[tuple[str, str, bytes]]:
    packets = []
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) == len(MEDIA_FIELDS):
            row = dict(zip(MEDIA_FIELDS, cols))
            assert "_ws.malformed" not in row["frame.protocols"]
            src = _ep(row["ip.src"] or row["ipv6.src"], row["udp.srcport"])
            dst = _ep(row["ip.dst"] or row["ipv6.dst"], row["udp.dstport"])
            packets.append((src, dst, bytes.fromhex(row["udp.payload"])))
    return packets


def test_tshark_rtp_streams_match_truth(tshark_out: dict[tuple[str, str], str], rendered: dict[str, tuple[Path, dict]]) -> None:
    for name in MEDIA_CHECKED:
        truth = rendered[name][1]
        listed: dict[tuple[str, str, str], int] = {}
        for media in truth["media"]:
            out = tshark_out[(name, media)]
            _media_packets(out)
            for m in filter(None, map(STREAM_LINE.match, out.splitlines())):
                key = (_ep(m[1], m[2]), _ep(m[3], m[4]), f"0x{m[5].lower()}")
                listed[key] = listed.get(key, 0) + int(m[6])
        for s in truth["streams"]:
            if s["kind"] == "rtp":
                assert listed.get((s["src"], s["dst"], s["ssrc"])) == s["packets"] + s["duplicates"], (name, s)


def _index(previous: int, seq: int) -> int:
    """ROC*65536+seq of seq given the previous index (the receiver's usual guess)."""
    roc = previous >> 16
    if seq < 0x8000 and (previous & 0xFFFF) > 0xC000:
        roc += 1
    return (roc << 16) | seq


def test_srtp_decrypts_to_the_plaintext_payload(tshark_out: dict[tuple[str, str], str], rendered: dict[str, tuple[Path, dict]]) -> None:
    decrypted = 0
    for name in MEDIA_CHECKED:
        truth = rendered[name][1]
        packets = [p for media in truth["media"] for p in _media_packets(tshark_out[(name, media)])]
        for s in truth["streams"]:
            if not s["encrypted"]:
                continue
            key = base64.b64decode(s["key"])
            session = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                                         srtp_profile=PROFILES[s["suite"]]))
            ssrc = bytes.fromhex(s["ssrc"][2:])
            # The 5-tuple alone is not enough: a later call reuses it (the trap the generator plants).
            mine = [data for src, dst, data in packets if src == s["src"] and dst == s["dst"] and ssrc in (data[4:8], data[8:12])]
            seen: set[bytes] = set()
            index: int | None = None
            clear = 0
            for data in mine:
                if data in seen:            # a duplicate would fail the replay check
                    continue
                seen.add(data)
                if (data[1] == RTCP_SR) != (s["kind"] == "rtcp"):    # rtcp-mux shares the 5-tuple
                    continue
                if s["kind"] == "rtp":
                    plain = session.unprotect(data)
                    seq = struct.unpack_from("!H", plain, 2)[0]
                    index = s["first_seq_index"] if index is None else _index(index, seq)
                    assert plain[12:] == plaintext_payload(int(s["ssrc"], 16), index, len(plain) - 12), (name, s["src"])
                else:
                    try:
                        plain = session.unprotect_rtcp(data)
                    except pylibsrtp.Error:
                        plain, clear = data, clear + 1
                    assert plain[4:8] == bytes.fromhex(s["ssrc"][2:]) and plain[8 + 20:8 + 22] == b"\x81\xca", (name, s)
                decrypted += 1
            assert s["kind"] != "rtcp" or clear == s["clear_rtcp"], (name, s)
    assert decrypted > 3000
