"""Write the generated call: sip.pcap, the media host's rolling media pcaps, and truth.json."""
from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from rtpcore.callgen.concurrent import call_truth, concurrent_plans
from rtpcore.callgen.impair import expected_verdicts, impair
from rtpcore.callgen.media import MediaPacket, Segment, Sender, synthesize
from rtpcore.callgen.plan import CallPlan, SipEvent, background_spec, plan_call
from rtpcore.callgen.sbc import apply_sbc
from rtpcore.callgen.scenario import BASE_TIME_NS, CallSpec
from rtpcore.callgen.sip import endpoint
from rtpcore.callgen.truth import Truth
from rtpcore.literals import StreamKind
from rtpcore.pcap.build import build_tcp, build_udp, fragment_ip, frame
from rtpcore.pcap.writer import PcapngWriter, PcapWriter

__all__ = ["render", "Frame"]

MS = 1_000_000
S = 1_000_000_000
TCP_SYN, TCP_ACK, TCP_PSH = 0x02, 0x10, 0x08
TCP_SPLIT_PARTS = 3
TCP_SPLIT_GAP_NS = 50_000
CAPTURE_LEAD_NS = 500 * MS
CAPTURE_TAIL_NS = 300 * MS
MID_CALL_CAPTURE_DELAY_NS = 2 * S          # after the 200 OK
BACKGROUND_1_OFFSET_NS = 700 * MS
BACKGROUND_2_GAP_NS = 3 * S                # the port-reusing call starts this long after the call's media ends
DNS_INTERVAL_NS = 700 * MS
SYSLOG_INTERVAL_NS = 1300 * MS
DNS_PORT, SYSLOG_PORT = 53, 514
SIP_FILE = "sip.pcap"
MEDIA_DIR = "media"
TRUTH_FILE = "truth.json"


_Record = tuple[int, int, bytes, "MediaPacket | None"]   # ts, generation order, L3 bytes, the call's own packet


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured record before link framing: timestamp and IP packet."""

    ts_ns: int
    l3: bytes


class _IpIds:
    """IPv4 identification values: one deterministic counter per source address."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def __call__(self, src: str) -> int:
        value = self._next.get(src, (sum(src.encode()) * 257) & 0xFFFF)
        self._next[src] = (value + 1) & 0xFFFF
        return value


def _sip_frames(events: Iterable[SipEvent], mtu: int, *, tcp: bool) -> list[Frame]:
    """UDP datagrams (fragmented above the MTU) or TCP segments with handshakes, splits and coalescing."""
    ip_id = _IpIds()
    frames: list[Frame] = []
    tcp_state: dict[tuple[str, int, str, int], dict[str, int]] = {}
    pending: dict[tuple[str, int, str, int], SipEvent] = {}
    for ev in sorted(events, key=lambda e: e.ts_ns):
        if not tcp:
            l3 = build_udp(ev.src, ev.sport, ev.dst, ev.dport, ev.data, ip_id=ip_id(ev.src))
            pieces = fragment_ip(l3, mtu, ident=ip_id(ev.src)) if len(l3) > mtu else [l3]
            frames += [Frame(ev.ts_ns + i * 10_000, p) for i, p in enumerate(pieces)]
            continue
        conn = ev.connection
        if conn not in tcp_state:
            tcp_state[conn] = _tcp_handshake(conn, ev.ts_ns, frames, ip_id)
        if conn in pending:
            data = pending.pop(conn).data + ev.data
        elif ev.coalesce_next:
            pending[conn] = ev
            continue
        else:
            data = ev.data
        parts = [data]
        if ev.split:
            third = len(data) // TCP_SPLIT_PARTS
            parts = [data[:third], data[third: 2 * third], data[2 * third:]]
        state = tcp_state[conn]
        from_client = (ev.src, ev.sport) == (conn[0], conn[1])
        mine, theirs = ("c", "s") if from_client else ("s", "c")
        for i, part in enumerate(parts):
            l3 = build_tcp(ev.src, ev.sport, ev.dst, ev.dport, seq=state[mine], ack=state[theirs],
                           flags=TCP_PSH | TCP_ACK, payload=part, ip_id=ip_id(ev.src))
            frames.append(Frame(ev.ts_ns + i * TCP_SPLIT_GAP_NS, l3))
            state[mine] = (state[mine] + len(part)) & 0xFFFFFFFF
    return frames


def _tcp_handshake(conn: tuple[str, int, str, int], ts_ns: int, frames: list[Frame], ip_id: Callable[[str], int]) -> dict[str, int]:
    """SYN, SYN-ACK, ACK just before the connection's first message; returns next seq per side."""
    cip, cport, sip_, sport = conn
    rng = random.Random(f"{cip}:{cport}>{sip_}:{sport}")
    c_isn, s_isn = rng.getrandbits(32), rng.getrandbits(32)
    frames.append(Frame(ts_ns - 3 * MS, build_tcp(cip, cport, sip_, sport, seq=c_isn, ack=0, flags=TCP_SYN, payload=b"", ip_id=ip_id(cip))))
    frames.append(Frame(ts_ns - 2 * MS, build_tcp(sip_, sport, cip, cport, seq=s_isn, ack=c_isn + 1, flags=TCP_SYN | TCP_ACK, payload=b"", ip_id=ip_id(sip_))))
    frames.append(Frame(ts_ns - 1 * MS, build_tcp(cip, cport, sip_, sport, seq=c_isn + 1, ack=s_isn + 1, flags=TCP_ACK, payload=b"", ip_id=ip_id(cip))))
    return {"c": (c_isn + 1) & 0xFFFFFFFF, "s": (s_isn + 1) & 0xFFFFFFFF}


def _noise(spec: CallSpec, start_ns: int, end_ns: int) -> list[tuple[int, str, int, str, int, bytes]]:
    """DNS-like queries/answers and syslog-like lines from the media host: UDP that is not RTP."""
    rng = random.Random(spec.seed ^ 0x5EED)
    out = []
    t = start_ns + 37 * MS
    name = b"".join(bytes([len(p)]) + p.encode() for p in ("s3", spec.region, "amazonaws", "com")) + b"\x00"
    while t < end_ns:
        txid, port = rng.getrandbits(16), rng.randrange(50000, 60000)
        query = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
        answer = struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0) + name + struct.pack("!HH", 1, 1)
        answer += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([52, 95, rng.randrange(256), rng.randrange(256)])
        out.append((t, spec.host_core_ip, port, spec.noise_server_ip, DNS_PORT, query))
        out.append((t + 900_000, spec.noise_server_ip, DNS_PORT, spec.host_core_ip, port, answer))
        t += DNS_INTERVAL_NS + rng.randrange(0, 100) * MS
    t = start_ns + 211 * MS
    n = 0
    while t < end_ns:
        n += 1
        line = f"<134>Jan 15 10:00:{n % 60:02d} {spec.media_host} rtpengine[812]: INFO: [{n}] stats: {rng.randrange(10, 90)} sessions"
        out.append((t, spec.host_core_ip, SYSLOG_PORT, spec.noise_server_ip, SYSLOG_PORT, line.encode("ascii")))
        t += SYSLOG_INTERVAL_NS
    return out


def _write(path: Path, spec: CallSpec, linktype: int, vlans: tuple[int, ...], frames: list[Frame]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.pcapng:
        with PcapngWriter(path) as ng:
            ng.add_interface(linktype, name="any" if "media" in path.parent.name else "eth0")
            for f in frames:
                ng.write(f.ts_ns, frame(linktype, f.l3, vlans=vlans))
    else:
        with PcapWriter(path, linktype) as w:
            for f in frames:
                w.write(f.ts_ns, frame(linktype, f.l3, vlans=vlans))


def render(spec: CallSpec, out: str | Path) -> Truth:
    """Write sip.pcap, media/<region>-<host>-NNNN.pcap and truth.json into out; return the truth."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main = apply_sbc(plan_call(spec, BASE_TIME_NS), spec)
    bg1_spec, bg2_spec = background_spec(spec, 1), background_spec(spec, 2)
    bg1 = apply_sbc(plan_call(bg1_spec, BASE_TIME_NS + BACKGROUND_1_OFFSET_NS), bg1_spec)
    bg2 = apply_sbc(plan_call(bg2_spec, main.end_ns + BACKGROUND_2_GAP_NS), bg2_spec)
    calls = [main, bg1, bg2]
    concurrent = concurrent_plans(spec, BASE_TIME_NS)   # call assembly: SIP only, no media

    sip_events = list(main.sip) + (list(bg1.sip) + list(bg2.sip) if spec.background_calls else [])
    if spec.content_length_override is not None:
        n, value = spec.content_length_override
        sip_events[n] = _with_content_length(sip_events[n], value)
    sip_events += [ev for plan in concurrent for ev in plan.sip]
    sip_frames = _sip_frames(sip_events, spec.mtu, tcp=spec.sip_transport == "tcp")
    sip_frames.sort(key=lambda f: f.ts_ns)
    _write(out / SIP_FILE, spec, spec.sip_linktype, spec.sip_vlans, sip_frames)

    cap_start = main.invite_ns - CAPTURE_LEAD_NS
    if spec.mid_call:
        cap_start = main.answer_ns + MID_CALL_CAPTURE_DELAY_NS
    cap_end = max(c.end_ns for c in calls) + CAPTURE_TAIL_NS
    ip_id = _IpIds()
    records: list[_Record] = []
    order = 0
    for call_no, call in enumerate(calls):
        for s_index, sender in enumerate(call.senders):
            sent = synthesize(sender, s_index)
            for p in impair(spec, s_index, list(sent)) if call_no == 0 else sent:
                if cap_start <= p.ts_ns <= cap_end:
                    l3 = build_udp(p.src, p.sport, p.dst, p.dport, p.payload, ip_id=ip_id(p.src))
                    records.append((p.ts_ns, order, l3, p if call_no == 0 else None))
                order += 1
    for ts, src, sport, dst, dport, payload in _noise(spec, cap_start, cap_end):
        records.append((ts, order, build_udp(src, sport, dst, dport, payload, ip_id=ip_id(src)), None))
        order += 1
    stray = _stray(spec, main)
    for p in stray:
        if cap_start <= p.ts_ns <= cap_end:
            records.append((p.ts_ns, order, build_udp(p.src, p.sport, p.dst, p.dport, p.payload, ip_id=ip_id(p.src)), None))
        order += 1
    records.sort(key=lambda r: (r[0], r[1]))
    if spec.sip_holds_media:
        # The full capture handed in as "the SIP pcap": signalling and every media frame, by time.
        sip_frames = sorted(sip_frames + [Frame(r[0], r[2]) for r in records], key=lambda f: f.ts_ns)
        _write(out / SIP_FILE, spec, spec.sip_linktype, spec.sip_vlans, sip_frames)

    chunks = _roll(spec, records)
    media_names = []
    for n, chunk in enumerate(chunks, start=1):
        name = f"{MEDIA_DIR}/{spec.region}-{spec.media_host}-{n:04d}.pcap"
        _write(out / name, spec, spec.media_linktype, spec.media_vlans, [Frame(r[0], r[2]) for r in chunk])
        media_names.append(name)

    call_packets = [r[3] for r in records if r[3] is not None]
    truth: Truth = {
        "variant": spec.name,
        "direction": spec.direction,
        "sip": SIP_FILE,
        "media": media_names,
    }
    if spec.background_calls or concurrent:
        truth["select"] = {"call_id": main.call_id}
    if concurrent:
        truth["calls"] = [call_truth(plan) for plan in (main, *concurrent)]
    truth["legs"] = {"call_id": main.call_id, "call_ids": list(main.call_ids), "direction": spec.direction,
                     "legs": list(main.legs)}
    truth["streams"] = _streams(main, call_packets)
    truth["media_packets"] = len(call_packets)
    truth["background_packets"] = len(records) - len(call_packets)
    counts: dict[str, int] = {}
    for ev in sip_events:
        counts[ev.call_id] = counts.get(ev.call_id, 0) + 1
    truth["sip_messages"] = counts
    latched = _latched_truth(main)
    if latched:
        truth["latched"] = latched
    if spec.sip_holds_media:
        truth["sip_holds_media"] = True
    if stray:
        truth["stray"] = {"src": endpoint(*spec.stray_sender) if spec.stray_sender else None,
                          "packets": sum(1 for p in stray if cap_start <= p.ts_ns <= cap_end)}
    if spec.dtmf_digits:
        truth["dtmf"] = _dtmf_truth(call_packets)
    lost = sum(int(str(s["lost"])) for s in truth["streams"] if s["kind"] == "rtp")
    truth["verdicts"] = expected_verdicts(spec, lost)
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def _with_content_length(event: SipEvent, value: str) -> SipEvent:
    """The message with its Content-Length header replaced (the body stays as it was)."""
    head, sep, body = event.data.partition(b"\r\n\r\n")
    lines = [b"Content-Length: " + value.encode() if line.lower().startswith(b"content-length:") else line
             for line in head.split(b"\r\n")]
    return replace(event, data=b"\r\n".join(lines) + sep + body)


def _latched_truth(main: CallPlan) -> list[dict[str, str]]:
    """Per leg, where the peer's RTP really came from when that is not what its SDP said."""
    out = []
    for index, leg in ((0, main.legs[0]), (2, main.legs[1])):
        seg = main.senders[index].segments[0]
        sdp_rtp = leg["endpoints"][0]
        real_rtp = endpoint(seg.src, seg.sport)
        if real_rtp != sdp_rtp:
            out.append({"leg": leg["name"], "sdp": sdp_rtp, "real": real_rtp})
    return out


def _stray(spec: CallSpec, main: CallPlan) -> list[MediaPacket]:
    """A second device sending RTP+RTCP to the media host's carrier endpoint during the call (not the call's)."""
    if spec.stray_sender is None:
        return []
    ip, port = spec.stray_sender
    first = main.senders[1].segments[0]   # host → carrier: the host's carrier-side endpoint is its source
    seg = Segment(main.answer_ns, main.end_ns, ip, port, first.src, first.sport, port + 1, first.rtcp_sport)
    rng = random.Random(spec.seed ^ 0x57A7)
    sender = Sender(leg="carrier", ssrc=rng.getrandbits(32), pt=spec.payload_type, initial_seq=rng.randrange(1, 30000),
                    initial_ts=rng.getrandbits(32), cname="stray@device", segments=(seg,),
                    rtcp_offset_ns=900 * MS, jitter_seed=rng.getrandbits(32), background=True)
    return list(synthesize(sender, -1))


def _roll(spec: CallSpec, records: list[_Record]) -> list[list[_Record]]:
    """Split the capture into rolling files: by frame count, and/or just after the carrier's seq wrap."""
    boundaries: set[int] = set()
    if spec.rolling_packets:
        boundaries.update(range(spec.rolling_packets, len(records), spec.rolling_packets))
    if spec.roll_after_wrap:
        for i, r in enumerate(records):
            p = r[3]
            if p is not None and p.sender == 0 and p.kind == "rtp" and p.seq_index % 65536 == 0 and p.seq_index > 0:
                boundaries.add(i + 1)
                break
    edges = [0, *sorted(b for b in boundaries if 0 < b < len(records)), len(records)]
    return [records[lo:hi] for lo, hi in zip(edges, edges[1:])]


def _streams(main: CallPlan, packets: list[MediaPacket]) -> list[dict[str, object]]:
    """Per (sender, segment, kind): what was captured of the call's own media."""
    groups: dict[tuple[int, int, StreamKind, int], list[MediaPacket]] = {}
    for p in packets:
        ssrc = int.from_bytes(p.payload[8:12] if p.kind == "rtp" else p.payload[4:8], "big")  # issue 11: SSRC change
        groups.setdefault((p.sender, p.segment, p.kind, ssrc), []).append(p)
    streams: list[dict[str, object]] = []
    for (s_index, seg_no, kind, ssrc), group in sorted(groups.items(),
                                                       key=lambda g: (g[0][0], g[0][1], g[0][2] != "rtp", g[1][0].ts_ns)):
        sender = main.senders[s_index]
        seg = sender.segments[seg_no]
        rtp = kind == "rtp"
        sport, dport = (seg.sport, seg.dport) if rtp else (seg.rtcp_sport, seg.rtcp_dport)
        unique = [p for p in group if not p.duplicate]
        protected = [p.seq_index for p in unique if p.seq_index >= 0]
        streams.append({
            "leg": sender.leg,
            "src": endpoint(seg.src, sport),
            "dst": endpoint(seg.dst, dport),
            "kind": kind,
            "ssrc": f"0x{ssrc:08x}",
            "pt": sender.pt,
            "packets": len(unique),
            "duplicates": len(group) - len(unique),
            "suite": seg.suite,
            "first_seq_index": unique[0].seq_index if rtp else (protected[0] if protected else None),
            "encrypted": seg.suite is not None,
            "clear_rtcp": sum(1 for p in unique if p.clear_rtcp),
            "key": base64.b64encode(seg.key).decode("ascii") if seg.key else None,
            # wt-keys: the key status decryption must report, and (RTCP) a digest of the plaintext reports.
            "key_status": sender.key_status,
            **({"plain_sha256": _plain_digest(unique)} if not rtp else {}),
            # issue 11: what the analysis must count (RTP: expected from the first to the last captured sequence).
            **(_loss_truth(unique) if rtp else {}),
        })
    return streams


def _loss_truth(unique: list[MediaPacket]) -> dict[str, int]:
    """issue 11: expected, lost and reordered (arrived after a later sequence number) of one captured RTP stream."""
    indices = [p.seq_index for p in sorted(unique, key=lambda p: p.ts_ns)]
    highest = -1
    reordered = 0
    for index in indices:
        reordered += index < highest
        highest = max(highest, index)
    expected = max(indices) - min(indices) + 1
    return {"expected": expected, "lost": expected - len(set(indices)), "reordered": reordered}


def _dtmf_truth(packets: list[MediaPacket]) -> list[dict[str, object]]:
    """issue 11: every key press as sent: first packet's time (ns), RTP timestamp, packets and end-bit copies."""
    events: dict[tuple[str, int], dict[str, object]] = {}
    counts: dict[tuple[str, int], list[int]] = {}
    for p in packets:
        if not p.dtmf:
            continue
        key = (endpoint(p.src, p.sport), p.rtp_ts)
        if key not in events:
            events[key] = {"digit": p.dtmf, "src": key[0], "dst": endpoint(p.dst, p.dport), "first_ns": p.ts_ns,
                           "rtp_timestamp": p.rtp_ts}
            counts[key] = [0, 0, 0]
        counts[key][0] += 1
        counts[key][1] += int(p.dtmf_end)
        counts[key][2] = max(counts[key][2], p.dtmf_duration)
    for key, (sent, ends, duration) in counts.items():
        events[key].update(packets=sent, end_packets=ends, duration_samples=duration)
    return sorted(events.values(), key=lambda e: str(e["first_ns"]).zfill(24))


def _plain_digest(packets: list[MediaPacket]) -> str:
    """sha256 over the stream's plaintext RTCP compounds in capture order, each prefixed by its 2-byte length."""
    digest = hashlib.sha256()
    for p in packets:
        digest.update(len(p.plain).to_bytes(2, "big") + p.plain)
    return digest.hexdigest()
