"""TcpReassembler + SipFramer on synthetic segment sequences: the exact SIP messages must come out."""
from __future__ import annotations

from rtpcore.pcap.layers import TcpSegment
from rtpcore.sip.message import SipFramer
from rtpcore.sip.tcp import TCP_FIN, TCP_RST, TCP_SYN, TcpReassembler

ACK = 0x10
A = ("10.0.0.1", 40000, "10.0.0.2", 5060)


def msg(n: int, body: bytes = b"") -> bytes:
    """A distinct SIP request."""
    return (f"INFO sip:b@h SIP/2.0\r\nCall-ID: call-{n}\r\nCSeq: {n} INFO\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def seg(seq: int, payload: bytes = b"", flags: int = ACK, flow: tuple[str, int, str, int] = A) -> TcpSegment:
    src, sport, dst, dport = flow
    return TcpSegment(src, sport, dst, dport, seq % 2**32, 0, flags, payload)


def run(segments: list[TcpSegment], reassembler: TcpReassembler | None = None) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """Feed segments (ts = their position) through a reassembler and one framer."""
    reassembler = reassembler or TcpReassembler()
    framer = SipFramer()
    chunks: list[tuple[int, bytes]] = []
    messages: list[bytes] = []
    for ts, s in enumerate(segments):
        for chunk_ts, data in reassembler.feed(s, ts):
            chunks.append((chunk_ts, data))
            messages += framer.feed(data)
    return messages, chunks


def test_message_split_across_three_segments() -> None:
    m = msg(1, b"x" * 40)
    a, b = len(m) // 3, 2 * len(m) // 3
    isn = 1000
    messages, chunks = run([seg(isn, flags=TCP_SYN), seg(isn + 1, m[:a]), seg(isn + 1 + a, m[a:b]), seg(isn + 1 + b, m[b:])])
    assert messages == [m]
    assert [ts for ts, _ in chunks] == [1, 2, 3]


def test_three_messages_in_one_segment() -> None:
    ms = [msg(1), msg(2, b"body"), msg(3)]
    messages, _ = run([seg(5, flags=TCP_SYN), seg(6, b"".join(ms))])
    assert messages == ms


def test_retransmission_and_partial_overlap_dropped() -> None:
    m1, m2 = msg(1), msg(2)
    stream = m1 + m2
    r = TcpReassembler()
    messages, _ = run([
        seg(100, stream[:50]),
        seg(100, stream[:50]),            # exact retransmission
        seg(120, stream[20:80]),          # overlaps 30 delivered bytes, adds 30 new
        seg(150, stream[50:]),            # overlaps the 30 new bytes
    ], r)
    assert messages == [m1, m2]
    assert r.duplicate_bytes == 50 + 30 + 30


def test_out_of_order_held_until_gap_fills() -> None:
    m1, m2 = msg(1, b"a" * 10), msg(2, b"b" * 10)
    stream = m1 + m2
    cut1, cut2 = 30, 70
    messages, chunks = run([
        seg(0, flags=TCP_SYN),
        seg(1 + cut2, stream[cut2:]),     # third piece first
        seg(1 + cut1, stream[cut1:cut2]), # then the second
        seg(1, stream[:cut1]),            # the first fills the gap
    ])
    assert messages == [m1, m2]
    assert chunks == [(3, stream)]        # released together, stamped by the completing segment


def test_sequence_wraparound() -> None:
    ms = [msg(1, b"w" * 30), msg(2)]
    stream = b"".join(ms)
    isn = 2**32 - 40                      # data crosses 2**32 after 39 bytes
    pieces = [stream[:25], stream[25:60], stream[60:]]
    segments = [seg(isn, flags=TCP_SYN)]
    offset = 0
    for piece in pieces:
        segments.append(seg(isn + 1 + offset, piece))
        offset += len(piece)
    segments[2], segments[3] = segments[3], segments[2]   # out of order across the wrap
    messages, _ = run(segments + [seg(isn + 1 + 10, stream[10:40])])  # late retransmission across the wrap
    assert messages == ms


def test_mid_stream_capture_starts_at_first_seen_seq() -> None:
    tail_of_lost = b"s that we never saw\r\n\r\n"
    m = msg(9)
    messages, _ = run([seg(77_777, tail_of_lost + m[:20]), seg(77_777 + len(tail_of_lost) + 20, m[20:])])
    assert messages == [m]


def test_directions_are_separate_streams() -> None:
    back = ("10.0.0.2", 5060, "10.0.0.1", 40000)
    req, resp = msg(1), b"SIP/2.0 200 OK\r\nCall-ID: call-1\r\nCSeq: 1 INFO\r\nContent-Length: 0\r\n\r\n"
    r = TcpReassembler()
    out_a = r.feed(seg(1, req[:10]), 0) + r.feed(seg(1 + 10, req[10:]), 2)
    out_b = r.feed(seg(500, resp[:5], flow=back), 1) + r.feed(seg(505, resp[5:], flow=back), 3)
    assert b"".join(d for _, d in out_a) == req
    assert b"".join(d for _, d in out_b) == resp


def test_fin_closes_and_late_retransmission_is_ignored() -> None:
    m = msg(1)
    r = TcpReassembler()
    messages, _ = run([seg(0, flags=TCP_SYN), seg(1, m, flags=ACK | TCP_FIN), seg(1, m, flags=ACK | TCP_FIN)], r)
    assert messages == [m]
    # A new connection on the same 4-tuple starts fresh from its SYN.
    assert r.feed(seg(9000, flags=TCP_SYN), 5) == []
    assert r.feed(seg(9001, m), 6) == [(6, m)]


def test_rst_closes_and_drops_held_data() -> None:
    r = TcpReassembler()
    assert r.feed(seg(0, flags=TCP_SYN), 0) == []
    assert r.feed(seg(50, b"ahead"), 1) == []
    assert r.feed(seg(1, flags=TCP_RST), 2) == []
    assert r.feed(seg(1, b"x" * 49), 3) == []


def test_retransmitted_syn_does_not_rewind() -> None:
    m1, m2 = msg(1), msg(2)
    messages, _ = run([seg(10, flags=TCP_SYN), seg(11, m1), seg(10, flags=TCP_SYN), seg(11 + len(m1), m2)])
    assert messages == [m1, m2]


def test_big_hole_is_given_up_and_stream_continues() -> None:
    r = TcpReassembler(max_pending_bytes=300)
    m1, m2, m3 = msg(1), msg(2, b"z" * 100), msg(3, b"y" * 100)
    lost = b"L" * 1000                    # never captured
    start_m2 = 1 + len(m1) + len(lost)
    messages, _ = run([
        seg(0, flags=TCP_SYN),
        seg(1, m1),
        seg(start_m2, m2),                # held: the lost bytes may still come
        seg(start_m2 + len(m2), m3),      # now over the bound: skip the hole
    ], r)
    assert messages == [m1, m2, m3]
    assert (r.gaps, r.gap_bytes) == (1, len(lost))
