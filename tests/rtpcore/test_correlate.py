"""The correlation pipeline end to end on generated calls: exact packets, exact plaintext, clean pcaps."""
from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from rtpcore.callgen import plaintext_payload, render, variant
from rtpcore.cli import main
from rtpcore.errors import InputError, NoMediaMatchError
from rtpcore.media.rtp import looks_like_clear_rtcp
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture
from rtpcore.pipeline import correlate
from tests.conftest import load_truth

MEDIA_VARIANTS = [
    "inbound-proxy", "outbound-proxy", "inbound-b2bua", "outbound-b2bua", "internal-only", "sip-tcp",
    "fragmented-invite", "vlan", "sll2", "pcapng", "ipv6", "reinvite-rekey", "suite-32", "gcm", "gcm-256",
    "srtp-both-legs", "rtcp-mux", "rtcp-attr", "background-calls", "mid-call", "wrap-across-files", "rolling",
    "duplicates", "srtcp-clear-first", "late-offer",
    "latching-peer", "nat-carrier", "ipv6-srtp-both-legs", "rtcp-after-bye", "full-capture-sip",
    "b2bua-rewrite", "b2bua-national", "outbound-b2bua-rewrite", "topology-hiding", "multi-call", "srtcp-single-report",
]


def _run(folder: Path, out: Path, **kw):
    truth = load_truth(folder)
    select = truth.get("select") or {}
    return truth, correlate(folder / truth["sip"], truth["direction"], [folder / "media"], out,
                            call_id=select.get("call_id"), **kw)


def _udp(path: Path):
    with open_capture(path) as reader:
        for f in reader:
            l3 = link_payload(f.linktype, f.data)
            udp = parse_udp(parse_ip(l3)) if l3 else None
            if udp is not None:
                yield f.ts_ns, udp


def _ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _ssrc(payload: bytes, kind: str) -> str:
    return "0x" + (payload[8:12] if kind == "rtp" else payload[4:8]).hex()


def _kind(payload: bytes) -> str:
    return "rtcp" if 192 <= payload[1] <= 223 else "rtp"


@pytest.fixture(scope="module")
def results(generated, tmp_path_factory):
    cache: dict[str, tuple[dict, object]] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = _run(generated(name), tmp_path_factory.mktemp(name) / "out")
        return cache[name]

    return get


@pytest.mark.parametrize("name", MEDIA_VARIANTS)
def test_media_raw_holds_exactly_the_calls_packets(name: str, results) -> None:
    truth, report = results(name)
    seen = Counter()
    for _, udp in _udp(report.outputs[0]):
        kind = _kind(udp.payload)
        seen[(_ep(udp.src, udp.sport), _ep(udp.dst, udp.dport), kind, _ssrc(udp.payload, kind))] += 1
    want = Counter({(s["src"], s["dst"], s["kind"], s["ssrc"]): s["packets"] + s["duplicates"] for s in truth["streams"]})
    assert seen == want
    assert sum(seen.values()) == truth["media_packets"]


@pytest.mark.parametrize("name", MEDIA_VARIANTS)
def test_every_decrypted_payload_is_the_generators_plaintext(name: str, results) -> None:
    truth, report = results(name)
    streams = {(s["src"], s["dst"], s["kind"]): s for s in truth["streams"]}
    checked = Counter()
    last_ext: dict[tuple[str, str, str], int] = {}
    for _, udp in _udp(report.outputs[1]):
        kind = _kind(udp.payload)
        key = (_ep(udp.src, udp.sport), _ep(udp.dst, udp.dport), kind)
        s = streams[key]
        if kind == "rtcp":
            assert looks_like_clear_rtcp(udp.payload), f"{key}: RTCP not in clear after decryption"
            assert _ssrc(udp.payload, kind) == s["ssrc"]
            checked[key] += 1
            continue
        seq = int.from_bytes(udp.payload[2:4], "big")
        prev = last_ext.get(key, s["first_seq_index"] - 1 if s["encrypted"] else None)
        if prev is None:
            ext = s["first_seq_index"]
        else:
            ext = (prev & ~0xFFFF) | seq
            if ext < prev - 32768:
                ext += 65536
        last_ext[key] = max(ext, last_ext.get(key, ext))
        payload = udp.payload[12:]
        assert payload == plaintext_payload(int(s["ssrc"], 16), ext, len(payload)), f"{key} seq {seq}"
        checked[key] += 1
    assert checked == Counter({k: s["packets"] for k, s in streams.items()}), "duplicates dropped, nothing else"


@pytest.mark.parametrize("name", MEDIA_VARIANTS)
def test_stream_counts_in_the_report(name: str, results) -> None:
    truth, report = results(name)
    doc = report.to_json()
    got = {(s["src"], s["dst"], s["kind"]): s for leg in doc["legs"] for s in leg["streams"]}
    for s in truth["streams"]:
        r = got[(s["src"], s["dst"], s["kind"])]
        assert r["ssrc"] == s["ssrc"] and r["packets"] == s["packets"] and r["duplicates"] == s["duplicates"]
        assert r["auth_failed"] == 0
        if s["encrypted"]:
            assert r["decrypted"] + r["clear"] == s["packets"] and r["clear"] == s["clear_rtcp"]
        else:
            assert r["decrypted"] == 0
    for leg in doc["legs"]:
        assert leg["packets"] == sum(s["packets"] + s["duplicates"] for s in truth["streams"] if s["leg"] == leg["name"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in doc["outputs"].values())


@pytest.mark.tshark
@pytest.mark.parametrize("name", ["inbound-b2bua", "ipv6", "vlan", "sll2", "reinvite-rekey", "gcm", "rolling"])
def test_tshark_reads_outputs_cleanly(name: str, results, tshark: str) -> None:
    truth, report = results(name)
    for path in report.outputs:
        bad = subprocess.run([tshark, "-r", str(path), "-Y", "_ws.malformed or _ws.expert.severity >= error"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 0 and bad.stdout.strip() == "", (path, bad.stdout[:500], bad.stderr[:500])
    out = subprocess.run([tshark, "-r", str(report.outputs[1]), "-o", "rtp.heuristic_rtp:TRUE", "-q", "-z", "rtp,streams"],
                         capture_output=True, text=True, timeout=60).stdout
    listed = Counter()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 9 and parts[6].startswith("0x"):
            listed[(parts[6].lower(), int(parts[8]))] += 1
    want = Counter((s["ssrc"], s["packets"]) for s in truth["streams"] if s["kind"] == "rtp")
    assert listed == want


def test_sip_plus_media_has_both(results) -> None:
    truth, report = results("inbound-b2bua")
    stamps = []
    sip = 0
    for ts, udp in _udp(report.outputs[2]):
        stamps.append(ts)
        sip += udp.dport == 5060 or udp.sport == 5060
    assert sip == sum(truth["sip_messages"].values())
    assert len(stamps) == sip + sum(s["packets"] for s in truth["streams"])
    assert stamps == sorted(stamps)


def test_per_file_outputs_use_the_seed_names(results) -> None:
    truth, report = results("rolling")
    names = sorted(p.name for p in report.per_file_outputs)
    contributing = [r.source.stem for r in report.files if any(lf.kept for lf in r.legs)]
    assert 1 < len(contributing) < len(truth["media"]), "the call spans some chunks, background fills the rest"
    assert names == sorted(stem + "-decrypted.pcap" for stem in contributing)


def test_plain_leg_file_is_no_decrypt_need(generated, tmp_path: Path) -> None:
    spec = variant("inbound-proxy", carrier_suite=None)
    folder = tmp_path / "plain"
    render(spec, folder)
    _, report = _run(folder, tmp_path / "out")
    assert [p.name for p in report.per_file_outputs] == ["eu-west-1-media-1-0001-no-decrypt-need.pcap"]


# --- bad input --------------------------------------------------------------------------------


def test_no_media_matched(generated, shared_pcaps: Path, tmp_path: Path, capsys) -> None:
    folder = generated("inbound-proxy")
    out = tmp_path / "out"
    code = main(["correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound",
                 "--media", str(shared_pcaps / "sipp_g711a.pcap"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "sipp_g711a.pcap" in err and "2026-01-15 10:00" in err
    assert not any((out / "combined").glob("*.pcap")), "no outputs under final names"
    with pytest.raises(NoMediaMatchError):
        correlate(folder / "sip.pcap", "inbound", [shared_pcaps / "sipp_g711a.pcap"], tmp_path / "again")


def test_wrong_keys_leave_the_leg_undecrypted_with_a_count(generated, tmp_path: Path) -> None:
    media = generated("inbound-proxy") / "media"
    other = tmp_path / "rekeyed"
    render(variant("inbound-proxy", seed=7), other)  # same endpoints and times, other keys
    report = correlate(other / "sip.pcap", "inbound", [media], tmp_path / "out")
    carrier = [s for s in report.streams if s.leg == "carrier" and s.kind == "rtp"]
    assert carrier and all(s.decrypted == 0 and s.auth_failed == s.packets for s in carrier)
    assert any("failed SRTP authentication" in w for w in report.warnings)
    assert any("no packet decrypted" in f for f in report.findings)


def test_corrupt_raw_chunk_is_named_and_others_processed(generated, tmp_path: Path) -> None:
    src = generated("rolling")
    folder = tmp_path / "call"
    shutil.copytree(src, folder)
    chunks = sorted((folder / "media").glob("*.pcap"))
    victim = chunks[1]
    victim.write_bytes(victim.read_bytes()[:-37])
    report = correlate(folder / "sip.pcap", "inbound", [folder / "media"], tmp_path / "out")
    bad = [f for f in report.files if f.error]
    assert [f.source.name for f in bad] == [victim.name]
    assert "truncated" in bad[0].error
    assert sum(s.decrypted for s in report.streams) > 0
    assert f"bad raw file: {victim}" in report.text() or victim.name in report.text()


def test_existing_outputs_are_not_overwritten(results, generated, tmp_path: Path) -> None:
    folder = generated("inbound-proxy")
    out = tmp_path / "out"
    correlate(folder / "sip.pcap", "inbound", [folder / "media"], out)
    before = (out / "combined" / "media_raw.pcap").stat().st_mtime_ns
    with pytest.raises(InputError, match="already exists; choose another --out or pass --overwrite"):
        correlate(folder / "sip.pcap", "inbound", [folder / "media"], out)
    assert (out / "combined" / "media_raw.pcap").stat().st_mtime_ns == before
    correlate(folder / "sip.pcap", "inbound", [folder / "media"], out, overwrite=True)


def test_cli_json(generated, tmp_path: Path, capsys) -> None:
    folder = generated("inbound-b2bua")
    truth = load_truth(folder)
    code = main(["correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound", "--media",
                 str(folder / "media"), "--out", str(tmp_path / "o"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert {k: doc[k] for k in ("call_id", "call_ids", "direction")} == {k: truth["legs"][k] for k in ("call_id", "call_ids", "direction")}
    for leg, want in zip(doc["legs"], truth["legs"]["legs"]):
        assert {k: leg[k] for k in want} == want
        assert set(leg["streams"][0]) >= {"src", "dst", "kind", "ssrc", "packets", "decrypted", "auth_failed"}
    assert set(doc["outputs"]) == {"media_raw", "media_decrypted", "sip_plus_media_decrypted"}
    assert "inline" not in out and not any(s["key"][:10] in out for s in truth["streams"] if s.get("key"))


def test_decrypt_by_hand(results, tmp_path: Path, capsys) -> None:
    truth, report = results("inbound-proxy")
    carrier = next(p for p in (report.outputs[0].parent / "filtered").glob("*carrier*"))
    s = next(s for s in truth["streams"] if s["leg"] == "carrier" and s["kind"] == "rtp" and s["src"].startswith("198."))
    out = tmp_path / "by-hand.pcap"
    code = main(["decrypt", "--in", str(carrier), "--crypto", f"a=crypto:1 {s['suite']} inline:{s['key']}",
                 "--out", str(out), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and out.is_file()
    by_src = {(x["src"], x["kind"]): x for x in doc["streams"]}
    mine = by_src[(s["src"], "rtp")]
    assert mine["decrypted"] == mine["packets"] == s["packets"]
    other = next(x for (src, kind), x in by_src.items() if kind == "rtp" and src != s["src"])
    assert other["decrypted"] == 0 and other["auth_failed"] == other["packets"]
    code = main(["decrypt", "--in", str(carrier), "--crypto", "AES_CM_128_HMAC_SHA1_80 inline:short", "--out",
                 str(tmp_path / "x.pcap")])
    assert code == 2 and "--crypto" in capsys.readouterr().err
