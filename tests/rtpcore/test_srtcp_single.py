"""Single-report SRTCP (an RR or SR alone, no SDES): authenticated before anything judges it clear RTCP.

Packets come from libsrtp's own protect (indices 1-5; libsrtp numbers SRTCP from 1) and from an RFC 3711 /
RFC 6188 / RFC 7714 oracle written here on `cryptography` (index 0 too), checked byte for byte against libsrtp.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from pathlib import Path

import pytest

from rtpcore.callgen.media import REPORT_RR, REPORT_SR, rtcp_single_report
from rtpcore.media.decrypt import decrypt_capture
from rtpcore.media.rtp import looks_like_clear_rtcp
from rtpcore.pcap.build import build_udp, frame
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET
from rtpcore.pcap.reader import open_capture
from rtpcore.pcap.writer import PcapWriter
from rtpcore.pipeline import correlate
from rtpcore.sip.crypto import SRTP_SUITES, CryptoAttribute
from tests.conftest import load_truth
from tests.rtpcore.test_srtp import ALL_SUITES, _key, _sender

SSRC = 0x5EED0001
INDICES = range(6)
SRTCP_E_FLAG = 0x80000000
GCM_TAG_LEN = 16
SRC, DST = ("198.51.100.7", 30001), ("10.77.1.1", 40001)
T0 = 1_768_471_200 * 10**9


class _SrtcpOracle:
    """SRTCP protect from the RFCs at any index: AES-CM + HMAC-SHA1 (RFC 3711, 6188) and AES-GCM (RFC 7714)."""

    def __init__(self, suite: str, key: bytes, salt: bytes) -> None:
        self._c = pytest.importorskip("cryptography.hazmat.primitives.ciphers")
        self._aead = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead")
        info = SRTP_SUITES[suite]
        self.gcm = info.aead
        self.tag_len = info.srtcp_tag_len
        padded_salt = salt + bytes(14 - len(salt))       # a 96-bit GCM salt sits left-aligned in the KDF's IV
        self.enc = self._derive(key, padded_salt, 3, len(key))
        self.auth = self._derive(key, padded_salt, 4, 20)
        self.salt = self._derive(key, padded_salt, 5, len(salt))

    def _ctr(self, key: bytes, iv: int, data: bytes) -> bytes:
        c = self._c
        encryptor = c.Cipher(c.algorithms.AES(key), c.modes.CTR(iv.to_bytes(16, "big"))).encryptor()
        return encryptor.update(data) + encryptor.finalize()

    def _derive(self, key: bytes, salt: bytes, label: int, size: int) -> bytes:
        return self._ctr(key, (int.from_bytes(salt, "big") ^ (label << 48)) << 16, bytes(size))

    def protect(self, packet: bytes, index: int) -> bytes:
        ssrc = int.from_bytes(packet[4:8], "big")
        trailer = struct.pack("!I", SRTCP_E_FLAG | index)
        if self.gcm:
            iv = bytes(x ^ y for x, y in zip(struct.pack("!HIHI", 0, ssrc, 0, index), self.salt))
            sealed = self._aead.AESGCM(self.enc).encrypt(iv, packet[8:], packet[:8] + trailer)
            return packet[:8] + sealed + trailer                  # ciphertext, 16-byte tag, then E||index
        iv = (int.from_bytes(self.salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
        body = packet[:8] + self._ctr(self.enc, iv, packet[8:]) + trailer
        return body + hmac.new(self.auth, body, hashlib.sha1).digest()[: self.tag_len]


def _report(kind: str, n: int) -> bytes:
    return rtcp_single_report(kind, SSRC, T0 + n * 5 * 10**9, n * 40000, n * 250, n * 40000)


def _capture(path: Path, packets: list[bytes]) -> None:
    with PcapWriter(path, LINKTYPE_ETHERNET, nanosecond=True) as w:
        for n, payload in enumerate(packets):
            w.write(T0 + n * 5 * 10**9, frame(LINKTYPE_ETHERNET, build_udp(*SRC, *DST, payload, ip_id=n)))


def _payloads(path: Path) -> list[bytes]:
    out = []
    with open_capture(path) as reader:
        for f in reader:
            udp = parse_udp(parse_ip(link_payload(f.linktype, f.data)))
            out.append(udp.payload)
    return out


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_oracle_is_libsrtp_for_indices_1_to_5(suite: str) -> None:
    key, salt = _key(suite)
    sender, oracle = _sender(suite, key, salt, ssrc=SSRC), _SrtcpOracle(suite, key, salt)
    for n in range(1, 6):
        report = _report(REPORT_RR, n)
        assert sender.protect_rtcp(report) == oracle.protect(report, n), (suite, n)


@pytest.mark.parametrize("kind", [REPORT_RR, REPORT_SR])
@pytest.mark.parametrize("suite", ALL_SUITES)
def test_single_report_srtcp_at_indices_0_to_5_decrypts_to_the_exact_report(suite: str, kind: str, tmp_path: Path) -> None:
    key, salt = _key(suite)
    oracle = _SrtcpOracle(suite, key, salt)
    plain = [_report(kind, n) for n in INDICES]
    protected = [oracle.protect(p, n) for n, p in zip(INDICES, plain)]
    # The trap: several of these parse as clear RTCP (the E||index word reads as a header, the tag as stray bytes).
    assert any(looks_like_clear_rtcp(p) for p in protected) or SRTP_SUITES[suite].aead
    _capture(tmp_path / "in.pcap", protected)
    inline = base64.b64encode(key + salt).decode()
    result = decrypt_capture(tmp_path / "in.pcap", CryptoAttribute.parse(f"1 {suite} inline:{inline}"), tmp_path / "out.pcap")
    assert _payloads(tmp_path / "out.pcap") == plain
    (stream,) = result.streams
    assert (stream.packets, stream.decrypted, stream.clear, stream.auth_failed, stream.key) == (6, 6, 0, 0, "authenticated")


def test_clear_report_on_an_srtp_stream_is_still_kept_as_clear(tmp_path: Path) -> None:
    """srtcp-clear-first behaviour: a plain RR no key authenticates is clear RTCP, the SRTCP after it decrypts."""
    suite = "AES_CM_128_HMAC_SHA1_80"
    key, salt = _key(suite)
    oracle = _SrtcpOracle(suite, key, salt)
    plain = [_report(REPORT_RR, n) for n in INDICES]
    packets = [plain[0]] + [oracle.protect(p, n) for n, p in enumerate(plain[1:])]
    _capture(tmp_path / "in.pcap", packets)
    inline = base64.b64encode(key + salt).decode()
    result = decrypt_capture(tmp_path / "in.pcap", CryptoAttribute.parse(f"1 {suite} inline:{inline}"), tmp_path / "out.pcap")
    assert _payloads(tmp_path / "out.pcap") == plain
    (stream,) = result.streams
    assert (stream.decrypted, stream.clear, stream.auth_failed, stream.key) == (5, 1, 0, "authenticated")


def test_generated_single_report_call_decrypts_every_report(generated, tmp_path: Path) -> None:
    folder = generated("srtcp-single-report")
    truth = load_truth(folder)
    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "out")
    rtcp: dict[tuple[str, str], list[bytes]] = {}
    with open_capture(report.outputs[1]) as reader:
        for f in reader:
            udp = parse_udp(parse_ip(link_payload(f.linktype, f.data)))
            if 192 <= udp.payload[1] <= 223:
                rtcp.setdefault((f"{udp.src}:{udp.sport}", f"{udp.dst}:{udp.dport}"), []).append(udp.payload)
    streams = [s for s in truth["streams"] if s["kind"] == "rtcp"]
    assert len(streams) == 4 and all(s["packets"] >= 3 for s in streams)
    for s in streams:
        got = rtcp[(s["src"], s["dst"])]
        digest = hashlib.sha256(b"".join(len(p).to_bytes(2, "big") + p for p in got)).hexdigest()
        assert digest == s["plain_sha256"], s
    by_key = {(s.src, s.dst, s.kind): s for s in report.streams}
    for s in truth["streams"]:
        mine = by_key[(s["src"], s["dst"], s["kind"])]
        assert mine.key == s["key_status"], s
        if s["encrypted"]:
            assert (mine.decrypted, mine.clear, mine.auth_failed) == (s["packets"], 0, 0), s
