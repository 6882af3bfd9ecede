"""Flow summaries (issue 12): built lazily by a first correlation from the bytes it reads, cached beside the chunk,
used by a later call to skip hosts with none of its endpoints — outputs byte-identical to a full scan; a stale or
unreadable summary is a warning and rebuilt; a wrong summary shows in the report."""
from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from rtpcore.errors import NoMediaMatchError
from rtpcore.pcap.build import build_udp, frame
from rtpcore.pcap.flows import flows_path, local_identity, summarize
from rtpcore.pcap.linktypes import (
    LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW,
)
from rtpcore.pcap.writer import PcapWriter
from rtpcore.pipeline import correlate
from rtpcore.report import CorrelationReport
from rtpcore.settings import load_settings
from tests.small_session import small_session

SKIP_WHY = "flow summary: no packet of the call's endpoints"


@pytest.fixture
def session(tmp_path: Path):  # noqa: ANN201 - bench.session_gen.Session
    """40 MB on 2 hosts in 4 MB chunks: call 1 on host 1, call 2 (other ports, same time) on host 2."""
    return small_session(tmp_path / "session", second_call=True)


def run(sip: Path, raw: Path, out: Path, **settings: object) -> CorrelationReport:
    """A correlation with RTPHELPER_FLOW_SUMMARY on (its default is off) unless the test says otherwise."""
    update = {"flow_summary": True, **settings}
    return correlate(sip, "inbound", [raw], out, settings=load_settings({}).model_copy(update=update))


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("combined", "decrypted")
            for p in sorted((out / sub).glob("*.pcap"))}


def files(report: CorrelationReport) -> dict[str, dict]:
    return {Path(f["source"]).name: f for f in report.to_json()["media_read"]["files"]}


def host_bytes(report: CorrelationReport, host: str) -> int:
    return sum(f["bytes_read"] for name, f in files(report).items() if name.startswith(host + "-"))


def test_second_call_skips_the_host_without_its_endpoints_and_equals_a_full_scan(session, tmp_path: Path) -> None:
    raw = session.root / "raw"
    full = run(session.sip2, raw, tmp_path / "full", media_select=False)
    by_time = run(session.sip2, raw, tmp_path / "by-time", flow_summary=False)
    assert not list(raw.glob("*.flows.json"))                     # RTPHELPER_FLOW_SUMMARY=false writes none
    first = run(session.sip, raw, tmp_path / "first")             # call 1 reads host 1 and 2 by time, summarizes
    built = {f["flow_summary"] for f in files(first).values() if "flow_summary" in f}
    assert built and built == {str(p) for p in raw.glob("*.flows.json")}   # the report says where each one went
    second = run(session.sip2, raw, tmp_path / "second")

    assert outputs(tmp_path / "second") == outputs(tmp_path / "full") == outputs(tmp_path / "by-time")
    assert outputs(tmp_path / "first") and outputs(tmp_path / "second")
    other, carrier = "eu-west-1-media-1", session.call2_host
    assert host_bytes(by_time, other) > 0 and host_bytes(first, other) > 0
    assert host_bytes(second, other) < host_bytes(by_time, other) / 10   # only bytes not summarized yet
    assert 0 < host_bytes(second, carrier) <= host_bytes(by_time, carrier)   # its own host: the call's ranges
    skipped = [f for name, f in files(second).items() if name.startswith(other) and SKIP_WHY in f["why"]]
    assert skipped and all(f["how"] == "skipped" for f in skipped if "not summarized yet" not in f["why"])
    assert SKIP_WHY in second.text()
    third = run(session.sip2, raw, tmp_path / "third")            # everything summarized now: host 1 costs nothing
    assert host_bytes(third, other) == 0 and outputs(tmp_path / "third") == outputs(tmp_path / "full")
    assert not first.to_json()["warnings"] and not second.to_json()["warnings"]


def test_stale_and_unreadable_summaries_are_warned_about_and_rebuilt(session, tmp_path: Path) -> None:
    raw = session.root / "raw"
    run(session.sip, raw, tmp_path / "first")
    summaries = sorted(raw.glob(f"{session.call2_host}-*.flows.json"))
    assert len(summaries) >= 2
    stale_chunk = Path(str(summaries[0])[: -len(".flows.json")])
    os.utime(stale_chunk, ns=(stale_chunk.stat().st_atime_ns, stale_chunk.stat().st_mtime_ns + 10**9))  # rewritten
    summaries[1].write_bytes(b'{"version": 1, "chunk": ')                                                # torn
    full = run(session.sip2, raw, tmp_path / "full", media_select=False)
    second = run(session.sip2, raw, tmp_path / "second")

    assert outputs(tmp_path / "second") == outputs(tmp_path / "full")
    warnings = second.to_json()["warnings"]
    assert any("stale flow summary" in w and stale_chunk.name in w for w in warnings), warnings
    assert any("corrupt flow summary" in w for w in warnings), warnings
    for path in summaries[:2]:                        # rebuilt: valid for the chunk as it is now
        doc = json.loads(path.read_bytes())
        chunk = Path(str(path)[: -len(".flows.json")])
        assert doc["identity"] == local_identity(chunk) and doc["flows"]


def test_a_wrong_summary_shows_in_the_report(session, tmp_path: Path) -> None:
    raw = session.root / "raw"
    run(session.sip, raw, tmp_path / "first")
    for path in raw.glob(f"{session.call2_host}-*.flows.json"):   # break it: call 2's flows gone from its host
        doc = json.loads(path.read_bytes())
        doc["flows"] = [f for f in doc["flows"] if not ({f[1], f[3]} & {44000, 44001, 46000, 46001})]
        path.write_text(json.dumps(doc))
    with pytest.raises(NoMediaMatchError) as caught:
        run(session.sip2, raw, tmp_path / "second")
    message = str(caught.value)
    assert f"{session.call2_host}-0003.pcap: {SKIP_WHY}" in message
    assert "RTPHELPER_FLOW_SUMMARY=false" in message


LINKS = [
    (LINKTYPE_ETHERNET, ()), (LINKTYPE_ETHERNET, (100,)), (LINKTYPE_ETHERNET, (100, 200)),
    (LINKTYPE_LINUX_SLL, ()), (LINKTYPE_LINUX_SLL2, ()), (LINKTYPE_RAW, ()), (LINKTYPE_IPV4, ()),
]


@pytest.mark.parametrize(("linktype", "vlans"), LINKS)
def test_summary_counts_every_udp_flow_as_tshark_does(linktype: int, vlans: tuple[int, ...], tmp_path: Path,
                                                      tshark: str) -> None:
    rng = random.Random(linktype * 7 + len(vlans))
    hosts = ["10.0.0.1", "10.0.0.2", "192.0.2.9"] + ([] if linktype == LINKTYPE_IPV4 else ["2001:db8::1", "2001:db8::2"])
    path = tmp_path / "c.pcap"
    with PcapWriter(path, linktype, nanosecond=True) as writer:
        for i in range(600):
            v6 = rng.random() < 0.4 and linktype != LINKTYPE_IPV4
            pool = [h for h in hosts if (":" in h) == v6]
            src, dst = rng.sample(pool, 2)
            l3 = build_udp(src, rng.choice([5004, 5005, 40000]), dst, rng.choice([6000, 6001]), rng.randbytes(40),
                           ip_id=i)
            writer.write(1_700_000_000 * 10**9 + i * 20_000_000, frame(linktype, l3, vlans=vlans))
    summary = summarize(path, None, chunk=path.name, identity=local_identity(path))
    fields = ["-e", "ip.src", "-e", "ipv6.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "ipv6.dst",
              "-e", "udp.dstport"]
    lines = subprocess.run([tshark, "-n", "-r", str(path), "-Y", "udp", "-T", "fields", *fields], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    expected = Counter()
    for line in lines:
        s4, s6, sport, d4, d6, dport = line.split("\t")
        expected[(s4 or s6, int(sport), d4 or d6, int(dport))] += 1
    assert {k: v[0] for k, v in summary.flows.items()} == dict(expected)
    assert sum(expected.values()) == 600 and summary.other == 0


@pytest.mark.parametrize(("flow", "skipped"), [
    (("203.0.113.50", 61000, "10.77.1.1", 40000), False),   # an unknown (learned, NAT'd) peer sending to the host
    (("10.77.1.1", 40000, "203.0.113.50", 61000), False),   # the host sending to it: either direction counts
    (("198.51.100.10", 30000, "10.77.1.1", 40002), True),   # the call's SDP peer, but another host port
])
def test_learned_peer_rule_any_peer_of_a_host_endpoint_keeps_the_chunk(
    flow: tuple[str, int, str, int], skipped: bool, tmp_path: Path,
) -> None:
    from rtpcore.media.select import ChunkChoice, flow_choice
    from rtpcore.pcap.flows import FlowSummary

    chunk = tmp_path / "h-0001.pcap"
    identity = {"bytes": 10_000, "mtime_ns": 1}
    summary = FlowSummary(chunk.name, identity, ((24, 10_000),), {flow: (50, 1_000, 2_000)})
    choice = ChunkChoice(chunk, 10_000, ((24, 10_000),), "index", "indexed")
    endpoints = [("10.77.1.1", 40000), ("10.77.1.1", 40001)]   # the media host's own endpoints of the call
    got = flow_choice(choice, summary, None, endpoints, [(0, 5_000)], str(flows_path(chunk)), identity)
    assert (got.how == "skipped") == skipped
    assert (SKIP_WHY in got.why) == skipped
    outside = flow_choice(choice, summary, None, endpoints, [(3_000, 5_000)], str(flows_path(chunk)), identity)
    assert outside.how == "skipped"                              # the endpoint's packets are all outside the windows
