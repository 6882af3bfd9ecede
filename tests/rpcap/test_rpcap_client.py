"""RpcapClient against a real rpcapd on 127.0.0.1, capturing on lo; traffic is made here with plain sockets."""
from __future__ import annotations

import socket
import struct
import sys
import threading
import time

import pytest

from rtpcore.errors import CaptureError, InputError
from rtpcore.rpcap import (
    RpcapAuthError,
    RpcapClient,
    RpcapConnectError,
    RpcapConnectionLostError,
    RpcapError,
    RpcapFilterError,
)
from rtpcore.rpcap import protocol as p

N = 200
TIMEOUT = 5.0


def udp_pair() -> tuple[socket.socket, socket.socket]:
    """A sender and a bound receiver on 127.0.0.1 (a receiver avoids ICMP port-unreachable noise)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    return tx, rx


def payloads(n: int, tag: bytes) -> list[bytes]:
    """Distinct datagrams of varying sizes, so a mix-up or truncation shows."""
    return [tag + b"-%05d-" % i + bytes([i % 251]) * (i % 97) for i in range(n)]


def decode_l4(frame: bytes) -> tuple[int, int, int, bytes]:
    """(proto, sport, dport, payload) of an Ethernet/IPv4 frame as captured on lo (link type EN10MB)."""
    assert struct.unpack_from(">H", frame, 12)[0] == 0x0800, frame[:16].hex()
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    sport, dport = struct.unpack_from(">HH", frame, 14 + ihl)
    if proto == 17:
        return proto, sport, dport, frame[14 + ihl + 8 :]
    offset = (frame[14 + ihl + 12] >> 4) * 4
    return proto, sport, dport, frame[14 + ihl + offset :]


def collect(client: RpcapClient, count: int, seconds: float = TIMEOUT) -> list[p.RemotePacket]:
    """Read until `count` packets or the deadline."""
    got: list[p.RemotePacket] = []
    for pkt in client.iter_packets(until=time.monotonic() + seconds):
        got.append(pkt)
        if len(got) >= count:
            break
    return got


def client_for(server, **kwargs) -> RpcapClient:
    return RpcapClient("127.0.0.1", server.port, timeout=TIMEOUT, **kwargs)


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(RpcapConnectError, match=rf"rpcap://127.0.0.1:{port}: connection refused \(is rpcapd running"):
            RpcapClient("127.0.0.1", port, timeout=2)


def test_null_auth_and_server_byte_order(rpcapd) -> None:
    with client_for(rpcapd) as client:
        reply = client.authenticate()
        assert (reply.min_version, reply.max_version) == (0, 0)
        assert reply.server_big_endian is (sys.byteorder == "big")  # same machine as the server


def test_list_interfaces_matches_the_kernel(rpcapd) -> None:
    with client_for(rpcapd) as client:
        interfaces = {i.name: i for i in client.list_interfaces()}
    kernel = {name for _, name in socket.if_nameindex()}
    assert kernel <= set(interfaces)
    lo = interfaces["lo"]
    assert lo.is_loopback and lo.is_up
    assert p.InterfaceAddress("127.0.0.1", "255.0.0.0") in lo.addresses


def test_open_unknown_interface_names_it(rpcapd) -> None:
    with client_for(rpcapd) as client:
        with pytest.raises(RpcapError, match=r"cannot open interface 'nosuch9'.*nosuch9") as info:
            client.open("nosuch9")
        assert info.value.code == p.PCAP_ERR_OPEN
        assert client.open("lo").linktype == 1  # the connection is still usable


def test_capture_udp_datagrams_byte_for_byte(rpcapd) -> None:
    tx, rx = udp_pair()
    port, tx_port = rx.getsockname()[1], tx.getsockname()[1]
    sent = payloads(N, b"rtp")
    with tx, rx, client_for(rpcapd) as client:
        assert client.open("lo").linktype == 1
        start = client.start_capture(f"udp and port {port}", read_timeout_ms=50)
        assert start.expression.startswith(f"(udp and port {port}) and not (host 127.0.0.1")
        before = time.time_ns()
        for data in sent:
            tx.sendto(data, ("127.0.0.1", port))
        got = collect(client, N)
        stats = client.stats()
        assert client.end_capture() == []  # nothing beyond the N datagrams matched
    assert len(got) == N
    assert [decode_l4(pkt[4]) for pkt in got] == [(17, tx_port, port, data) for data in sent]
    assert [pkt[3] for pkt in got] == list(range(1, N + 1))  # npkt: rpcapd's own ordinal
    assert all(pkt[1] == pkt[2] == len(pkt[4]) == 14 + 20 + 8 + len(d) for pkt, d in zip(got, sent))
    assert before - 10**9 <= got[0][0] <= got[-1][0] <= time.time_ns()
    assert stats.svrcapt >= N and stats.ifdrop == 0 and stats.krnldrop == 0


def test_own_control_and_data_connections_stay_out(rpcapd) -> None:
    """With 'tcp or udp' our own RPCAP traffic would match (and feed back); the test's own flows must appear.

    Other processes on this machine may talk on lo meanwhile, so the check is on the rpcapd ports, not "only ours".
    """
    tx, rx = udp_pair()
    listener = socket.create_server(("127.0.0.1", 0))
    tcp_port = listener.getsockname()[1]
    ours = {tcp_port, tx.getsockname()[1], rx.getsockname()[1]}
    with tx, rx, listener, client_for(rpcapd) as client:
        client.open("lo")
        start = client.start_capture("tcp or udp", read_timeout_ms=50)
        conn = socket.create_connection(("127.0.0.1", tcp_port))
        peer, _ = listener.accept()
        with conn, peer:
            conn.sendall(b"hello over tcp")
            assert peer.recv(100) == b"hello over tcp"
            for data in payloads(20, b"mix"):
                tx.sendto(data, ("127.0.0.1", rx.getsockname()[1]))
                client.stats()  # control-connection traffic while capturing
            ours.add(conn.getsockname()[1])
        got = collect(client, 1000, seconds=1.0)
        got += client.end_capture()
    flows = [decode_l4(pkt[4])[:3] for pkt in got]
    rpcap_ports = {rpcapd.port, start.data_port}  # the server ends of our control and data connections
    assert [f for f in flows if f[1] in rpcap_ports or f[2] in rpcap_ports] == []
    mine = [f for f in flows if f[1] in ours or f[2] in ours]
    assert sum(1 for f in mine if f[0] == 6) >= 6  # handshake, data, ack, fin: TCP is captured at all
    assert sum(1 for f in mine if f[0] == 17) == 20


def test_filter_that_does_not_compile_is_libpcaps_message(rpcapd) -> None:
    with client_for(rpcapd) as client:
        client.open("lo")
        with pytest.raises(RpcapFilterError, match=r"filter 'udp and and' does not compile for 'lo'.*syntax error"):
            client.start_capture("udp and and")
        assert isinstance(RpcapFilterError("x"), (CaptureError, InputError))
        with pytest.raises(RpcapFilterError, match="unknown host 'no-such-host.invalid'"):
            client.start_capture("host no-such-host.invalid")
        assert not client.capturing


def test_end_capture_then_capture_again(rpcapd) -> None:
    tx, rx = udp_pair()
    port, tx_port = rx.getsockname()[1], tx.getsockname()[1]
    with tx, rx, client_for(rpcapd) as client:
        client.open("lo")
        for round_ in range(2):
            client.start_capture(f"udp and port {port}", read_timeout_ms=50)
            tx.sendto(b"round %d" % round_, ("127.0.0.1", port))
            got = collect(client, 1)
            client.end_capture()
            assert [decode_l4(pkt[4])[3] for pkt in got] == [b"round %d" % round_]
            assert got[0][3] == 1  # npkt restarts: a fresh rpcapd session
        with pytest.raises(RpcapError, match="no capture running"):
            client.read_packets(timeout=0)
    client.close()  # twice is fine


def test_udp_data_channel(rpcapd) -> None:
    tx, rx = udp_pair()
    port, tx_port = rx.getsockname()[1], tx.getsockname()[1]
    sent = payloads(50, b"dgram")
    with tx, rx, client_for(rpcapd) as client:
        client.open("lo")
        start = client.start_capture("udp", udp=True, read_timeout_ms=50)  # 'udp' matches our data channel too
        for data in sent:
            tx.sendto(data, ("127.0.0.1", port))
        got = collect(client, 10_000, seconds=0.5)  # long enough for a feedback loop to show
        got += client.end_capture()
    assert start.data_port > 0
    udp = [decode_l4(pkt[4]) for pkt in got]
    assert [f for f in udp if start.data_port in f[1:3]] == []  # our data channel stays out of the capture
    assert [f for f in udp if port in f[1:3]] == [(17, tx_port, port, data) for data in sent]


def test_password_auth_right_and_wrong(rpcapd_pwd, system_user) -> None:
    user, password = system_user
    with client_for(rpcapd_pwd, auth=(user, password)) as client:
        client.authenticate()
        assert "lo" in {i.name for i in client.list_interfaces()}
        # rpcapd setuid()s to the authenticated user: a user without capture rights cannot open lo.
        with pytest.raises(RpcapError, match="cannot open interface 'lo': .*permission") as info:
            client.open("lo")
        assert info.value.code == p.PCAP_ERR_OPEN
    with client_for(rpcapd_pwd, auth=(user, password + "x")) as client:
        started = time.monotonic()
        with pytest.raises(RpcapAuthError, match=rf"authentication as '{user}' refused: Authentication failed") as info:
            client.authenticate()
        assert info.value.code == p.PCAP_ERR_AUTH_FAILED
        assert time.monotonic() - started < 1.0  # rpcapd sleeps 1 s after replying, not before
    with client_for(rpcapd_pwd) as client:
        with pytest.raises(RpcapAuthError, match="NULL authentication not permitted"):
            client.authenticate()


def test_tls_capture_and_plain_client_refused(rpcapd_tls) -> None:
    server, context = rpcapd_tls
    tx, rx = udp_pair()
    port, tx_port = rx.getsockname()[1], tx.getsockname()[1]
    sent = payloads(30, b"tls")
    with tx, rx, client_for(server, tls=context) as client:
        assert client.url.startswith("rpcaps://")
        client.open("lo")
        client.start_capture(f"udp and port {port}", read_timeout_ms=50)
        for data in sent:
            tx.sendto(data, ("127.0.0.1", port))
        got = collect(client, 30)
        assert client.stats().svrcapt >= 30
        client.end_capture()
    assert [decode_l4(pkt[4])[3] for pkt in got] == sent
    with client_for(server) as plain:
        with pytest.raises(RpcapAuthError, match="TLS is required by this server") as info:
            plain.authenticate()
        assert info.value.code == p.PCAP_ERR_TLS_REQUIRED


def test_rpcapd_killed_mid_capture_is_reported_promptly(rpcapd_disposable) -> None:
    tx, rx = udp_pair()
    port, tx_port = rx.getsockname()[1], tx.getsockname()[1]
    stop = threading.Event()

    def keep_sending() -> None:
        while not stop.is_set():
            tx.sendto(b"still here", ("127.0.0.1", port))
            time.sleep(0.005)

    sender = threading.Thread(target=keep_sending)
    with tx, rx, client_for(rpcapd_disposable) as client:
        client.open("lo")
        client.start_capture(f"udp and port {port}", read_timeout_ms=50)
        sender.start()
        try:
            assert len(collect(client, 5)) == 5
            rpcapd_disposable.kill()
            killed = time.monotonic()
            with pytest.raises(RpcapConnectionLostError, match="rpcapd closed the (data channel|control connection)"):
                for _ in client.iter_packets(until=killed + 5):
                    pass
            assert time.monotonic() - killed < 1.0
        finally:
            stop.set()
            sender.join()

