"""The BPF filters by port: packets handed to Python are the call's, however much else the media host carried.

A media host's capture holds many other calls on the same addresses (other ports); a filter that stopped
testing ports would still give correct outputs (Python routes exactly) but hand every packet to Python —
hours on a real capture. Counted here: FileResult.matched, the packets the BPF let through.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from rtpcore.media import demux
from rtpcore.media.bpf import relay_endpoints
from rtpcore.pcap import libpcap
from rtpcore.pcap.build import build_udp, frame
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.sip.legs import resolve_legs
from tests.conftest import load_truth

BACKGROUND_STREAMS = 40        # other calls' RTP on the media host's and the peers' own addresses
BACKGROUND_PACKETS = 150       # per stream
BACKGROUND_PORT_BASE = 50000
RTP_HEADER = struct.Struct("!BBHII")


def _with_background(source: Path, dest: Path, addresses: list[str], hosts: set[str]) -> int:
    """The call's capture plus background RTP between the same addresses on other ports; returns the frames
    added that have a media host address on one side."""
    with open_capture(source) as reader:
        frames = [(f.ts_ns, f.data) for f in reader]
        linktype = reader.linktype
    start = frames[0][0]
    added: list[tuple[int, bytes]] = []
    on_hosts = 0
    for n in range(BACKGROUND_STREAMS):
        src, dst = addresses[n % len(addresses)], addresses[(n + 1) % len(addresses)]
        sport, dport = BACKGROUND_PORT_BASE + 2 * n, BACKGROUND_PORT_BASE + 1000 + 2 * n
        for i in range(BACKGROUND_PACKETS):
            payload = RTP_HEADER.pack(0x80, 0, i, i * 160, 0x1000 + n) + bytes(160)
            added.append((start + i * 20_000_000 + n, frame(linktype, build_udp(src, sport, dst, dport, payload))))
        on_hosts += BACKGROUND_PACKETS if {src, dst} & hosts else 0
    with PcapWriter(dest, linktype, nanosecond=True) as writer:
        for ts, data in sorted(frames + added, key=lambda item: item[0]):
            writer.write(ts, data)
    return on_hosts


def _on_endpoints(path: Path, endpoints: set[tuple[str, int]]) -> int:
    """Frames with a source or destination on one of the endpoints (an oracle independent of libpcap)."""
    from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp

    count = 0
    with open_capture(path) as reader:
        for f in reader:
            l3 = link_payload(f.linktype, f.data)
            ip = parse_ip(l3) if l3 else None
            udp = parse_udp(ip) if ip else None
            if udp is not None and ((udp.src, udp.sport) in endpoints or (udp.dst, udp.dport) in endpoints):
                count += 1
    return count


@pytest.mark.skipif(not libpcap.available(), reason="libpcap not loadable: the BPF path is not used here")
def test_bpf_hands_python_only_the_calls_packets(generated, tmp_path: Path, monkeypatch) -> None:
    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    plan = resolve_legs(folder / truth["sip"], truth["direction"])
    [source] = sorted((folder / "media").glob("*.pcap"))
    peers = {ep.rsplit(":", 1)[0] for s in truth["streams"] for ep in (s["src"], s["dst"])}
    hosts = {host for host, _ in relay_endpoints(plan)}
    busy = tmp_path / "busy.pcap"
    on_hosts = _with_background(source, busy, sorted(hosts | peers), hosts)
    assert on_hosts >= BACKGROUND_STREAMS * BACKGROUND_PACKETS // 2

    result = demux.filter_raw_file(plan, busy, tmp_path / "filtered")
    assert result.error is None
    call_packets = truth["media_packets"] + sum(s["duplicates"] for s in truth["streams"])
    assert sum(lf.packets for lf in result.legs) == call_packets
    # Handed to Python: exactly the frames on one of the media host's own endpoints (the call's, and the
    # generator's earlier/later traffic on those endpoints that the time windows drop) — none of the background.
    on_relay = _on_endpoints(busy, set(relay_endpoints(plan)))
    assert result.matched == on_relay, (result.matched, on_relay)
    assert call_packets <= on_relay <= call_packets + truth["background_packets"]

    # Control: the background is on the call's own addresses, so a port-less filter would let it all through.
    portless = "udp and (" + " or ".join(f"host {h}" for h in sorted(hosts)) + ")"
    monkeypatch.setattr(demux, "filter_for_file", lambda plan, source: portless)
    loose = demux.filter_raw_file(plan, busy, tmp_path / "loose")
    assert loose.matched >= on_relay + on_hosts
    assert sum(lf.packets for lf in loose.legs) == call_packets  # the outputs alone cannot tell the difference
