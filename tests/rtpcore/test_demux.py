"""Per-leg demultiplexing of raw media captures, checked against the generator's truth, tcpdump, tshark and capinfos."""
from __future__ import annotations

import pickle
import re
import shutil
import struct
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from rtpcore.errors import InputError
from rtpcore.media.bpf import leg_filter, leg_pairs, relay_endpoints
from rtpcore.media.demux import (
    FileResult,
    filter_raw_file,
    filter_raw_files,
    media_files,
    no_match_message,
    time_span,
)
from rtpcore.pcap import libpcap
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.plan import Endpoint, LegPlan
from rtpcore.sip.legs import resolve_legs
from tests.conftest import load_truth

VARIANTS = [
    "inbound-proxy",
    "outbound-b2bua",
    "vlan",
    "sll2",
    "pcapng",
    "ipv6",
    "rtcp-mux",
    "rtcp-attr",
    "reinvite-rekey",
    "wrap-across-files",
    "rolling",
    "duplicates",
]
RTCP_TYPES = range(200, 205)
PCAP_MAGIC_NS_LE = b"\x4d\x3c\xb2\xa1"

pytestmark = pytest.mark.skipif(not libpcap.available(), reason="libpcap not installed")


# -- helpers -------------------------------------------------------------------------------------


def _plan(folder: Path) -> LegPlan:
    truth = load_truth(folder)
    select = truth.get("select") or {}
    return resolve_legs(folder / truth["sip"], truth["direction"], call_id=select.get("call_id"))


def _media(folder: Path) -> list[Path]:
    return [folder / name for name in load_truth(folder)["media"]]


def _stream_key(linktype: int, data: bytes) -> tuple[str, str, str, int] | None:
    """(src, dst, kind, ssrc) decoded here with struct: RTCP when the second byte is 200..204."""
    l3 = link_payload(linktype, data)
    ip = parse_ip(l3) if l3 else None
    udp = parse_udp(ip) if ip else None
    if udp is None or len(udp.payload) < 12:
        return None
    p = udp.payload
    src, dst = str(Endpoint(udp.src, udp.sport)), str(Endpoint(udp.dst, udp.dport))
    if p[1] in RTCP_TYPES:
        return src, dst, "rtcp", struct.unpack_from("!I", p, 4)[0]
    return src, dst, "rtp", struct.unpack_from("!I", p, 8)[0]


def _truth_counts(truth: dict) -> Counter:
    counts: Counter = Counter()
    for s in truth["streams"]:
        counts[(s["leg"], s["src"], s["dst"], s["kind"], int(s["ssrc"], 16))] += s["packets"] + s["duplicates"]
    return counts


def _frames(path: Path) -> list[tuple[int, bytes]]:
    with open_capture(path) as reader:
        return [(f.ts_ns, f.data) for f in reader]


def _leg_of(output: Path) -> str:
    return re.fullmatch(r".*-(\w+)-filtered\.pcap", output.name).group(1)


def _outputs(results: list[FileResult]) -> list[Path]:
    return [leg.output for r in results for leg in r.legs if leg.kept]


# -- against the generator's truth ---------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_outputs_hold_exactly_the_calls_packets(name: str, generated, tmp_path: Path) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    plan = _plan(folder)
    sources = _media(folder)
    results = filter_raw_files(plan, sources, tmp_path)

    assert [r.source for r in results] == sources, "results come back in input order"
    assert all(r.error is None for r in results)
    got: Counter = Counter()
    out_frames: list[tuple[int, bytes]] = []
    for result in results:
        with open_capture(result.source) as raw:
            source_linktype = raw.linktype
        for leg in result.legs:
            if not leg.kept:  # a rolling chunk after the call: background only
                assert (leg.packets, leg.output) == (0, None), f"{result.source.name}: {leg.leg} dropped"
                continue
            assert leg.output.name == f"{result.source.stem}-{leg.leg}-filtered.pcap"
            head = leg.output.read_bytes()[:24]
            assert head[:4] == PCAP_MAGIC_NS_LE, "ns-precision classic pcap"
            assert struct.unpack_from("<I", head, 20)[0] == source_linktype
            with open_capture(leg.output) as reader:
                frames = list(reader)
            assert len(frames) == leg.packets
            for f in frames:
                key = _stream_key(f.linktype, f.data)
                assert key is not None
                got[(leg.leg, *key)] += 1
                out_frames.append((f.ts_ns, f.data))
        assert sum(leg.packets for leg in result.legs) <= result.matched

    assert got == _truth_counts(truth)
    assert sum(got.values()) == truth["media_packets"]

    # Byte- and ns-exact: the outputs are exactly the raw frames of the call's streams.
    wanted = {(s["src"], s["dst"], s["kind"], int(s["ssrc"], 16)) for s in truth["streams"]}
    expected = []
    for source in sources:
        with open_capture(source) as raw:
            expected += [(f.ts_ns, f.data) for f in raw if _stream_key(f.linktype, f.data) in wanted]
    assert sorted(out_frames) == sorted(expected)


@pytest.mark.parametrize("name", ["vlan", "sll2", "ipv6", "pcapng"])
def test_outputs_read_cleanly_by_tshark_and_capinfos(name: str, generated, tmp_path: Path, tshark: str) -> None:
    folder = generated(name)
    results = filter_raw_files(_plan(folder), _media(folder), tmp_path)
    legs = [leg for r in results for leg in r.legs if leg.kept]
    run = subprocess.run(["capinfos", "-T", "-c", "-r", *(str(leg.output) for leg in legs)],
                         capture_output=True, text=True, check=True)
    counts = {Path(line.split("\t")[0]).name: int(line.split("\t")[1]) for line in run.stdout.splitlines()}
    assert counts == {leg.output.name: leg.packets for leg in legs}
    for leg in legs:
        bad = "_ws.malformed || _ws.expert.severity == error"
        run = subprocess.run([tshark, "-n", "-r", str(leg.output), "-Y", bad, "-T", "fields", "-e", "frame.number"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "", f"{leg.output.name}: malformed frames {run.stdout.split()}"


def test_the_call_is_separated_from_its_look_alikes(generated, tmp_path: Path) -> None:
    """Background call 2 reuses the carrier 4-tuple later; call 1 shares the carrier IP with another port."""
    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    plan = _plan(folder)
    (result,) = filter_raw_files(plan, _media(folder), tmp_path)
    call_ssrcs = {int(s["ssrc"], 16) for s in truth["streams"]}
    carrier = next(s for s in truth["streams"] if s["leg"] == "carrier" and s["kind"] == "rtp")
    same_tuple = Counter()
    with open_capture(result.source) as raw:
        for f in raw:
            key = _stream_key(f.linktype, f.data)
            if key and key[:3] == (carrier["src"], carrier["dst"], "rtp") and key[3] not in call_ssrcs:
                same_tuple[key[3]] += 1
    assert same_tuple, "the generator's later call on the same 4-tuple is in the raw file"
    assert result.matched > sum(leg.packets for leg in result.legs), "the BPF lets it through; the window drops it"
    carrier_out = next(leg.output for leg in result.legs if leg.leg == "carrier")
    with open_capture(carrier_out) as reader:
        ssrcs = {_stream_key(f.linktype, f.data)[3] for f in reader}
    assert ssrcs <= call_ssrcs and not ssrcs & set(same_tuple)


# -- the BPF expression --------------------------------------------------------------------------


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW])
@pytest.mark.parametrize("name", ["reinvite-rekey", "ipv6"])
def test_leg_filter_compiles_for_every_capture_link_type(name: str, linktype: int, generated) -> None:
    plan = _plan(generated(name))
    program = libpcap.compile_filter(leg_filter(plan, linktype), linktype=linktype)
    assert len(program) > 10
    assert program[-1][0] == 0x06, "ends in a BPF return"


def test_leg_filter_pairs_are_deduplicated(generated) -> None:
    mux = _plan(generated("rtcp-mux"))
    expr = leg_filter(mux)
    # rtcp-mux: RTCP shares the RTP pair, so 2 pairs per leg and one media host endpoint per leg, whose
    # port and host (any peer) the Ethernet form repeats 3 times.
    assert len(leg_pairs(mux)) == 2 * len(mux.legs)
    assert len(relay_endpoints(mux)) == len(mux.legs)
    assert expr.count("port 40000") == expr.count("port 42000") == 3 and "40001" not in expr
    rekey = _plan(generated("reinvite-rekey"))
    pairs = leg_pairs(rekey)
    assert len(pairs) == len(set(pairs)) == 4 * 3, "carrier: 2 negotiations, core: 1; RTP+RTCP both ways"
    assert ("198.51.100.10", 30003, "10.77.1.1", 40003) in pairs
    assert "host 2001:db8:77:1::1" in leg_filter(_plan(generated("ipv6")))
    assert "198.51.100.10" not in leg_filter(rekey), "the peer side is learned, not filtered on"


@pytest.mark.parametrize("name", ["inbound-proxy", "vlan", "sll2", "ipv6", "pcapng"])
def test_leg_filter_matches_what_tcpdump_matches(name: str, generated, tmp_path: Path) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump not installed")
    folder = generated(name)
    plan = _plan(folder)
    (source,) = _media(folder)
    (result,) = filter_raw_files(plan, [source], tmp_path / "out")
    expr = leg_filter(plan, libpcap.linktype_of(source))
    out = tmp_path / "tcpdump.pcap"
    subprocess.run([tcpdump, "-r", str(source), "-w", str(out), expr], capture_output=True, check=True)
    assert len(_frames(out)) == result.matched
    assert result.matched > sum(leg.packets for leg in result.legs) > 0


def test_filter_refuses_a_plan_without_endpoints(generated) -> None:
    plan = replace(_plan(generated("inbound-proxy")), legs=())
    with pytest.raises(ValueError, match="no media endpoints"):
        leg_filter(plan)


# -- thresholds, damage, bad inputs ----------------------------------------------------------------


def _write_subset(source: Path, dest: Path, take: dict[str, int], plan: LegPlan) -> None:
    """The first `take[leg]` frames of each leg's RTP from the peer, in source order."""
    peers = {leg.name: str(leg.negotiations[0].peer.rtp) for leg in plan.legs}
    left = dict(take)
    with open_capture(source) as raw, PcapWriter(dest, raw.linktype, nanosecond=True) as out:
        for f in raw:
            key = _stream_key(f.linktype, f.data)
            for leg, peer in peers.items():
                if key and key[0] == peer and key[2] == "rtp" and left[leg] > 0:
                    left[leg] -= 1
                    out.write(f.ts_ns, f.data)


def test_min_packets_threshold(generated, tmp_path: Path) -> None:
    folder = generated("inbound-proxy")
    plan = _plan(folder)
    small = tmp_path / "small.pcap"
    _write_subset(_media(folder)[0], small, {"carrier": 10, "core": 11}, plan)
    result = filter_raw_file(plan, small, tmp_path / "out")
    legs = {leg.leg: leg for leg in result.legs}
    assert (legs["carrier"].packets, legs["carrier"].kept, legs["carrier"].output) == (10, False, None)
    assert (legs["core"].packets, legs["core"].kept) == (11, True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small-core-filtered.pcap"]
    assert len(_frames(legs["core"].output)) == 11
    again = filter_raw_file(plan, small, tmp_path / "out2", min_packets=5)
    assert all(leg.kept for leg in again.legs)


def test_truncated_chunk_keeps_what_was_read_and_others_go_on(generated, tmp_path: Path) -> None:
    folder = generated("rolling")
    plan = _plan(folder)
    sources = _media(folder)
    assert len(sources) >= 3
    copies = []
    for src in sources:
        copies.append(tmp_path / "raw" / src.name)
        copies[-1].parent.mkdir(exist_ok=True)
        shutil.copy(src, copies[-1])
    bad = copies[1]
    size = bad.stat().st_size
    with open(bad, "r+b") as f:
        f.truncate(size * 2 // 3 + 5)  # inside a record
    whole = filter_raw_files(plan, sources, tmp_path / "whole")
    damaged = filter_raw_files(plan, copies, tmp_path / "damaged", workers=2)

    for i, (good, got) in enumerate(zip(whole, damaged)):
        if i == 1:
            continue
        assert got.error is None
        assert [(leg.leg, leg.packets) for leg in got.legs] == [(leg.leg, leg.packets) for leg in good.legs]
    got, good = damaged[1], whole[1]
    assert got.error is not None and bad.name in got.error
    assert 0 < got.matched < good.matched
    for g, w in zip(got.legs, good.legs):
        assert 0 < g.packets < w.packets
        assert _frames(g.output) == _frames(w.output)[: g.packets], "a prefix of the undamaged output"


def test_not_a_capture_is_reported_not_raised(generated, tmp_path: Path) -> None:
    folder = generated("wrap-across-files")
    plan = _plan(folder)
    junk = tmp_path / "notes.pcap"
    junk.write_text("this is a text file, not a capture\n" * 10)
    missing = tmp_path / "gone.pcap"
    results = filter_raw_files(plan, [junk, *_media(folder), missing], tmp_path / "out")
    assert results[0].error is not None and str(junk) in results[0].error
    assert (results[0].matched, results[0].first_ns) == (0, None)
    assert all(leg.packets == 0 and not leg.kept for leg in results[0].legs)
    assert results[-1].error is not None and str(missing) in results[-1].error
    assert sum(r.kept_packets for r in results[1:-1]) == load_truth(folder)["media_packets"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")], "no temp files left"


def test_pool_and_in_process_agree_and_the_plan_pickles(generated, tmp_path: Path) -> None:
    folder = generated("rolling")
    plan = _plan(generated("srtp-both-legs"))
    assert pickle.loads(pickle.dumps(plan)) == plan, "SDES crypto attributes cross the process boundary"
    plan = _plan(folder)
    one = filter_raw_files(plan, _media(folder), tmp_path / "a", workers=1)
    many = filter_raw_files(plan, _media(folder), tmp_path / "b", workers=3)
    assert [(r.source, r.matched, r.first_ns, r.last_ns, [(x.leg, x.packets) for x in r.legs]) for r in one] == [
        (r.source, r.matched, r.first_ns, r.last_ns, [(x.leg, x.packets) for x in r.legs]) for r in many
    ]
    for a, b in zip(_outputs(one), _outputs(many)):
        assert a.read_bytes() == b.read_bytes()
    for r in one:
        times = [ts for leg in r.legs if leg.kept for ts, _ in _frames(leg.output)]
        assert (r.first_ns, r.last_ns) == ((min(times), max(times)) if times else (None, None))
    assert sum(1 for r in one if r.first_ns is not None) >= 2


def test_without_libpcap_the_python_reader_gives_the_same_legs(generated, tmp_path: Path, monkeypatch) -> None:
    folder = generated("vlan")
    plan = _plan(folder)
    (source,) = _media(folder)
    fast = filter_raw_file(plan, source, tmp_path / "fast")
    monkeypatch.setattr(libpcap, "available", lambda: False)
    slow = filter_raw_file(plan, source, tmp_path / "slow")
    assert slow.error is None
    assert [(x.leg, x.packets) for x in slow.legs] == [(x.leg, x.packets) for x in fast.legs]
    assert (slow.first_ns, slow.last_ns) == (fast.first_ns, fast.last_ns)
    for a, b in zip(_outputs([fast]), _outputs([slow])):
        assert a.read_bytes() == b.read_bytes()


def test_duplicate_stems_are_refused(generated, tmp_path: Path) -> None:
    (source,) = _media(generated("inbound-proxy"))
    other = tmp_path / source.name
    shutil.copy(source, other)
    with pytest.raises(InputError, match="share the name"):
        filter_raw_files(_plan(generated("inbound-proxy")), [source, other], tmp_path / "out")


def test_media_files_expands_folders(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.pcap", "a.pcapng", "c.cap", "notes.txt", "sub/d.pcap"):
        (folder / name).write_bytes(b"x")
    loose = tmp_path / "0-first.dump"
    loose.write_bytes(b"x")
    assert media_files([folder, loose, folder / "b.pcap"]) == [
        loose, folder / "a.pcapng", folder / "b.pcap", folder / "c.cap"
    ]
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'nope'}: not found")):
        media_files([tmp_path / "nope"])
    assert media_files([folder / "sub" / "d.pcap"]) == [folder / "sub" / "d.pcap"], "a named file is kept"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=re.escape(f"{empty}: no capture files (*.pcap, *.pcapng) in this folder")):
        media_files([empty])
    (empty / "x.pcap.gz").write_bytes(b"x")
    with pytest.raises(InputError, match=r"compressed captures are not supported \(x\.pcap\.gz"):
        media_files([empty])
    with pytest.raises(InputError, match="compressed captures are not supported"):
        media_files([empty / "x.pcap.gz"])


# -- nothing matched --------------------------------------------------------------------------------


def _capinfos_span(path: Path) -> tuple[int, int]:
    run = subprocess.run(["capinfos", "-S", "-a", "-e", "-M", str(path)], capture_output=True, text=True, check=True)
    first, last = re.findall(r"packet time:\s+(\d+)\.(\d+)", run.stdout)

    def ns(sec: str, frac: str) -> int:
        return int(sec) * 10**9 + int(frac.ljust(9, "0"))

    return ns(*first), ns(*last)


def test_time_span_agrees_with_capinfos(generated, tshark: str) -> None:
    for name in ("inbound-proxy", "pcapng"):
        (source,) = _media(generated(name))
        assert time_span(source) == _capinfos_span(source)


def test_no_match_message_names_files_times_and_legs(generated, tmp_path: Path, tshark: str) -> None:
    folder = generated("inbound-proxy")
    plan = _plan(folder)
    (source,) = _media(folder)
    hour = 3600 * 10**9
    shifted = tmp_path / "raw" / "shifted-0001.pcap"
    shifted.parent.mkdir()
    with open_capture(source) as raw, PcapWriter(shifted, raw.linktype, nanosecond=True) as out:
        for f in raw:
            out.write(f.ts_ns + hour, f.data, f.orig_len)
    junk = tmp_path / "raw" / "junk.pcap"
    junk.write_bytes(b"\x00" * 64)
    results = filter_raw_files(plan, [shifted, junk], tmp_path / "out")
    assert results[0].matched > 0 and results[0].error is None, "same endpoints, an hour later"
    assert all(r.kept_packets == 0 for r in results) and not list((tmp_path / "out").glob("*.pcap"))

    text = no_match_message(plan, results)
    first, last = _capinfos_span(shifted)
    from datetime import datetime, timezone

    def utc(ns: int) -> str:
        return datetime.fromtimestamp(ns // 10**9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    assert f"shifted-0001.pcap: {utc(first)}" in text and utc(last) in text
    assert utc(plan.start_ns) in text and utc(plan.end_ns) in text
    assert "junk.pcap" in text and "unreadable" in text
    assert plan.call_id in text
    for leg in plan.legs:
        for ep in leg.endpoints:
            assert ep in text


def test_tags_that_start_late_still_match(generated, tmp_path: Path) -> None:
    """A file whose first frames are untagged gets the short filter; tagged frames later are still the call's."""
    from rtpcore.media.bpf import leg_filter as _leg_filter
    from rtpcore.media.demux import filter_for_file
    from rtpcore.pcap.build import frame
    from rtpcore.pcap.layers import link_payload
    from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
    from rtpcore.pcap.reader import open_capture
    from rtpcore.pcap.writer import PcapWriter

    folder = generated("vlan")
    truth = load_truth(folder)
    plan = _plan(folder)
    source = folder / truth["media"][0]
    mixed = tmp_path / "mixed.pcap"
    with open_capture(source) as reader, PcapWriter(mixed, LINKTYPE_ETHERNET, nanosecond=True) as writer:
        for i, f in enumerate(reader):  # the first 400 frames lose their tags, the rest keep them
            writer.write(f.ts_ns, frame(LINKTYPE_ETHERNET, link_payload(f.linktype, f.data)) if i < 400 else f.data)
    assert filter_for_file(plan, mixed) == _leg_filter(plan, LINKTYPE_ETHERNET, vlan_tags=False)
    assert filter_for_file(plan, source) == _leg_filter(plan, LINKTYPE_ETHERNET)
    result = filter_raw_file(plan, mixed, tmp_path / "filtered")
    assert sum(lf.packets for lf in result.legs) == truth["media_packets"]
