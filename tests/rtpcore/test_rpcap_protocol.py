"""RPCAP wire format against byte strings laid out by hand from libpcap 1.10's rpcap-protocol.h structs."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from rtpcore.rpcap import protocol as p
from rtpcore.rpcap.framing import ControlReader, PacketStreamParser


def frame(ver: int, msg_type: int, value: int, payload: bytes) -> bytes:
    """struct rpcap_header {uint8 ver; uint8 type; uint16 value; uint32 plen;} in network order + payload."""
    return bytes([ver, msg_type]) + value.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload


def sockaddr_in(ip: str) -> bytes:
    """struct rpcap_sockaddr_in {u16 family=2; u16 port; u32 addr; u8 zero[8]} padded to rpcap_sockaddr (128)."""
    raw = (2).to_bytes(2, "big") + b"\0\0" + ipaddress.IPv4Address(ip).packed + bytes(8)
    return raw + bytes(128 - len(raw))


def sockaddr_in6(ip: str) -> bytes:
    """struct rpcap_sockaddr_in6 {u16 family=23; u16 port; u32 flowinfo; u8 addr[16]; u32 scope_id} padded to 128."""
    raw = (23).to_bytes(2, "big") + b"\0\0" + bytes(4) + ipaddress.IPv6Address(ip).packed + bytes(4)
    return raw + bytes(128 - len(raw))


def test_message_type_numbers_follow_the_header() -> None:
    requests = {"ERROR": 1, "FINDALLIF_REQ": 2, "OPEN_REQ": 3, "STARTCAP_REQ": 4, "UPDATEFILTER_REQ": 5, "CLOSE": 6,
                "PACKET": 7, "AUTH_REQ": 8, "STATS_REQ": 9, "ENDCAP_REQ": 10, "SETSAMPLING_REQ": 11}
    for name, number in requests.items():
        assert getattr(p, f"RPCAP_MSG_{name}") == number
        assert p.message_type_name(number) == name
    for name in ("FINDALLIF", "OPEN", "STARTCAP", "UPDATEFILTER", "AUTH", "STATS", "ENDCAP", "SETSAMPLING"):
        assert getattr(p, f"RPCAP_MSG_{name}_REPLY") == getattr(p, f"RPCAP_MSG_{name}_REQ") | 0x80
        assert p.message_type_name(getattr(p, f"RPCAP_MSG_{name}_REPLY")) == f"{name}_REPLY"
    assert p.message_type_name(0x42) == "type 0x42"


def test_header_layout_and_round_trip() -> None:
    raw = bytes.fromhex("00 82 0007 00000aec")
    header = p.Header.decode(raw)
    assert header == p.Header(0, p.RPCAP_MSG_FINDALLIF_REPLY, 7, 2796)
    assert header.encode() == raw
    assert p.Header.decode(b"\xff" * 3 + raw, 3) == header
    with pytest.raises(ValueError, match="needs 8 bytes, got 5"):
        p.Header.decode(raw[:5])


def test_null_auth_request_bytes() -> None:
    wire = p.encode_message(p.RPCAP_MSG_AUTH_REQ, p.AuthRequest().encode())
    # rpcap_auth {u16 type=0; u16 dummy; u16 slen1=0; u16 slen2=0}
    assert wire == frame(0, 8, 0, bytes(8))


def test_password_auth_request_bytes_and_round_trip() -> None:
    req = p.AuthRequest(p.RPCAP_RMTAUTH_PWD, b"alice", b"s3cr\xc3\xa9t")
    payload = struct.pack(">HHHH", 1, 0, 5, 7) + b"alice" + b"s3cr\xc3\xa9t"
    assert req.encode() == payload
    assert p.AuthRequest.decode(payload) == req
    with pytest.raises(ValueError, match="AUTH_REQ with its credentials needs 20 bytes, got 19"):
        p.AuthRequest.decode(payload[:-1])


def test_auth_reply_versions_and_byte_order_magic() -> None:
    # rpcapd writes the magic natively: a little-endian (x86) server puts d4 c3 b2 a1 on the wire.
    little = p.AuthReply.decode(bytes.fromhex("00 00 0000 d4c3b2a1"))
    assert (little.min_version, little.max_version, little.server_big_endian) == (0, 0, False)
    big = p.AuthReply.decode(bytes.fromhex("00 01 0000 a1b2c3d4"))
    assert (big.max_version, big.server_big_endian) == (1, True)
    assert p.AuthReply.decode(big.encode()) == big
    old = p.AuthReply.decode(b"\x00\x00")  # rpcap_authreply_old: libpcap < 1.9.1
    assert old == p.AuthReply(0, 0, None) and old.server_big_endian is None and old.encode() == b"\x00\x00"
    assert p.AuthReply.decode(b"") == p.AuthReply(0, 0, None)


def test_findalldevs_reply_decoded_from_c_layout() -> None:
    def iface(name: bytes, desc: bytes, flags: int, addrs: list[bytes]) -> bytes:
        # rpcap_findalldevs_if {u16 namelen; u16 desclen; u32 flags; u16 naddr; u16 dummy}
        return struct.pack(">HHIHH", len(name), len(desc), flags, len(addrs), 0) + name + desc + b"".join(addrs)

    lo_addrs = [
        sockaddr_in("127.0.0.1") + sockaddr_in("255.0.0.0") + bytes(128) + bytes(128),
        sockaddr_in6("::1") + sockaddr_in6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") + bytes(256),
    ]
    eth_addrs = [sockaddr_in("192.0.2.2") + sockaddr_in("255.255.255.0") + sockaddr_in("192.0.2.255") + bytes(128)]
    payload = iface(b"lo", b"", 0x37, lo_addrs) + iface(b"eth0", b"uplink", 0x16, eth_addrs) + iface(b"any", b"", 0x36, [])

    reply = p.FindAllInterfacesReply.decode(payload, 3)
    lo, eth, any_ = reply.interfaces
    assert (lo.name, lo.is_loopback, lo.is_up) == ("lo", True, True)
    assert lo.addresses == (
        p.InterfaceAddress("127.0.0.1", "255.0.0.0"),
        p.InterfaceAddress("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    )
    assert (eth.name, eth.description, eth.flags, eth.is_loopback) == ("eth0", "uplink", 0x16, False)
    assert eth.addresses == (p.InterfaceAddress("192.0.2.2", "255.255.255.0", "192.0.2.255", None),)
    assert (any_.name, any_.addresses) == ("any", ())
    assert reply.encode() == payload
    with pytest.raises(ValueError, match="FINDALLIF_REPLY interface 1 needs"):
        p.FindAllInterfacesReply.decode(payload[:100], 3)
    with pytest.raises(ValueError, match="ends inside interface 4 of 4"):
        p.FindAllInterfacesReply.decode(payload, 4)


def test_open_request_and_reply() -> None:
    assert p.encode_message(p.RPCAP_MSG_OPEN_REQ, p.OpenRequest("eth0.100").encode()) == frame(0, 3, 0, b"eth0.100")
    assert p.OpenRequest.decode(b"eth0.100") == p.OpenRequest("eth0.100")
    raw = struct.pack(">ii", 113, 0)  # rpcap_openreply {int32 linktype; int32 tzoff}: LINUX_SLL
    assert p.OpenReply.decode(raw) == p.OpenReply(113, 0)
    assert p.OpenReply(-1, -3600).encode() == struct.pack(">ii", -1, -3600)
    with pytest.raises(ValueError, match="OPEN_REPLY needs 8 bytes, got 4"):
        p.OpenReply.decode(raw[:4])


def test_startcap_request_bytes_with_filter() -> None:
    program = p.bpf_program([(0x28, 0, 0, 12), (0x15, 0, 1, 0x800), (0x6, 0, 0, 262144), (0x6, 0, 0, 0)])
    req = p.StartCaptureRequest(262144, 100, p.RPCAP_STARTCAPREQ_FLAG_PROMISC | p.RPCAP_STARTCAPREQ_FLAG_DGRAM,
                                40000, program)
    # rpcap_startcapreq {u32 snaplen; u32 read_timeout; u16 flags; u16 portdata}
    # rpcap_filter {u16 filtertype=1; u16 dummy; u32 nitems}; rpcap_filterbpf_insn {u16 code; u8 jt; u8 jf; i32 k}
    expected = struct.pack(">IIHH", 262144, 100, 3, 40000) + struct.pack(">HHI", 1, 0, 4)
    expected += b"".join(struct.pack(">HBBI", *insn) for insn in [(0x28, 0, 0, 12), (0x15, 0, 1, 0x800),
                                                                    (0x6, 0, 0, 262144), (0x6, 0, 0, 0)])
    assert req.encode() == expected
    assert p.StartCaptureRequest.decode(expected) == req
    assert p.UpdateFilterRequest.decode(expected[12:]) == p.UpdateFilterRequest(program)
    assert p.UpdateFilterRequest(program).encode() == expected[12:]
    with pytest.raises(ValueError, match="rpcap_filter with 4 instructions needs 32 bytes"):
        p.StartCaptureRequest.decode(expected[:-1])
    with pytest.raises(ValueError, match="type 2 is not RPCAP_UPDATEFILTER_BPF"):
        p.UpdateFilterRequest.decode(struct.pack(">HHI", 2, 0, 0))


def test_bpf_k_keeps_all_32_bits() -> None:
    insn = p.BpfInsn(0x54, 0, 0, 0xFFFFFF00)  # and #0xffffff00: above INT32_MAX, sent as the same 32 bits
    assert insn.encode() == bytes.fromhex("0054 00 00 ffffff00")


def test_startcap_reply_stats_sampling_and_packet_header() -> None:
    assert p.StartCaptureReply.decode(struct.pack(">iHH", 2097152, 35429, 0)) == p.StartCaptureReply(2097152, 35429)
    assert p.StartCaptureReply(1, 2).encode() == struct.pack(">iHH", 1, 2, 0)
    stats_raw = struct.pack(">IIII", 400, 1, 2, 200)
    assert p.Stats.decode(stats_raw) == p.Stats(400, 1, 2, 200) and p.Stats(400, 1, 2, 200).encode() == stats_raw
    assert p.SamplingRequest(1, 10).encode() == struct.pack(">BBHI", 1, 0, 0, 10)
    assert p.SamplingRequest.decode(struct.pack(">BBHI", 2, 0, 0, 5)) == p.SamplingRequest(2, 5)
    hdr = struct.pack(">IIIII", 1_700_000_000, 999_999, 60, 1514, 7)
    assert p.PacketHeader.decode(hdr) == p.PacketHeader(1_700_000_000, 999_999, 60, 1514, 7)
    assert p.PacketHeader.decode(hdr).encode() == hdr


def test_error_message_code_in_value() -> None:
    wire = frame(0, 1, 6, b"nosuch0: No such device exists")
    header = p.Header.decode(wire)
    err = p.ErrorMessage.decode(header, wire[8:])
    assert err == p.ErrorMessage(p.PCAP_ERR_OPEN, "nosuch0: No such device exists")
    assert p.encode_message(p.RPCAP_MSG_ERROR, err.encode(), value=err.code) == wire


def test_control_reader_frames_split_messages() -> None:
    stream = frame(0, 0x88, 0, bytes.fromhex("00000000d4c3b2a1")) + frame(0, 0x8A, 0, b"") + frame(0, 1, 18, b"no")
    reader = ControlReader()
    got = []
    for byte in stream:
        reader.feed(bytes([byte]))
        while (msg := reader.next_message()) is not None:
            got.append((msg.header.type, msg.header.value, msg.payload))
    assert got == [(0x88, 0, bytes.fromhex("00000000d4c3b2a1")), (0x8A, 0, b""), (1, 18, b"no")]
    assert reader.buffered == 0
    huge = ControlReader(max_payload=1000)
    huge.feed(frame(0, 0x82, 1, b"")[:4] + (5000).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="FINDALLIF_REPLY announces a 5000-byte payload"):
        huge.next_message()


def packet_message(npkt: int, data: bytes, sec: int = 1_700_000_000, usec: int = 123_456, wire_len: int = 0) -> bytes:
    """RPCAP_MSG_PACKET as daemon_thrdatamain builds it: header with plen = (uint16)(20 + caplen), then pkthdr."""
    pkthdr = struct.pack(">IIIII", sec, usec, len(data), wire_len or len(data), npkt)
    plen = (20 + len(data)) & 0xFFFF
    return bytes([0, 7]) + b"\0\0" + plen.to_bytes(4, "big") + pkthdr + data


def test_packet_stream_parser_at_every_split_point() -> None:
    datas = [b"", bytes(range(60)), b"\xaa" * 1514]
    stream = b"".join(packet_message(i + 1, d, usec=10 * i, wire_len=len(d) + 4) for i, d in enumerate(datas))
    expected = [(1_700_000_000 * 10**9 + 10 * i * 1000, len(d), len(d) + 4, i + 1, d) for i, d in enumerate(datas)]
    for cut in range(len(stream) + 1):
        parser = PacketStreamParser()
        got = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert got == expected, cut
        assert parser.pending == 0 and parser.packets == 3
    parser = PacketStreamParser()
    got = []
    for byte in stream:
        got += parser.feed(bytearray([byte]))
    assert got == expected


def test_packet_stream_parser_uses_caplen_when_rpcapd_wrapped_plen() -> None:
    big = bytes(range(256)) * 300  # 76800 bytes: 20 + caplen does not fit rpcapd's uint16 cast
    stream = packet_message(1, big) + packet_message(2, b"tail")
    assert int.from_bytes(stream[4:8], "big") == (20 + len(big)) - 65536
    parser = PacketStreamParser()
    got = parser.feed(stream[:50000]) + parser.feed(stream[50000:])
    assert [(g[1], g[3], g[4]) for g in got] == [(len(big), 1, big), (4, 2, b"tail")]


def test_packet_stream_parser_rejects_desync() -> None:
    with pytest.raises(ValueError, match="STATS_REPLY message where PACKET expected at byte 0"):
        PacketStreamParser().feed(frame(0, 0x89, 0, bytes(20)))
    good = packet_message(1, b"abcd")
    bad = bytearray(packet_message(2, b"efgh"))
    bad[4:8] = (99).to_bytes(4, "big")
    with pytest.raises(ValueError, match=rf"packet 2: plen 99 does not match caplen 4 \+ 20.*at byte {len(good)}"):
        PacketStreamParser().feed(good + bytes(bad))
    with pytest.raises(ValueError, match="caplen 300000 exceeds 262144"):
        PacketStreamParser().feed(bytes([0, 7, 0, 0]) + bytes(4) + struct.pack(">IIIII", 0, 0, 300000, 0, 1))


def test_packet_stream_parser_keeps_up_with_100k_pps() -> None:
    import time

    one = packet_message(1, b"\x80" * 200)  # a typical RTP-over-Ethernet frame
    chunk = one * 5000
    parser = PacketStreamParser()
    start = time.perf_counter()
    n = 0
    for i in range(20):
        cut = 1000 + i * 37  # misaligned reads, as recv() returns them
        n += len(parser.feed(chunk[:cut])) + len(parser.feed(chunk[cut:]))
    elapsed = time.perf_counter() - start
    assert n == 100_000 and parser.pending == 0
    assert elapsed < 1.0, f"{n} packets took {elapsed:.2f} s"
