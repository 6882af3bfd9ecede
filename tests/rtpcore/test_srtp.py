"""SRTP/SRTCP receive contexts: every suite, ROC handling, MKI, tag quirks, error mapping, generator output.

Packets come from three independent sources: pylibsrtp's own protect (a separate outbound Session,
configured through ctypes where pylibsrtp has no profile), an RFC 3711/6188 AES-CM implementation
written here on top of `cryptography`, and the call generator's media pcaps with their truth keys.
"""
from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import struct
import time
from pathlib import Path

import pylibsrtp
import pytest

from rtpcore.callgen import plaintext_payload
from rtpcore.callgen.media import rtcp_sender_report, rtp_packet
from rtpcore.errors import MediaError, SrtpError
from rtpcore.media.rtp import RtpHeader, classify, looks_like_clear_rtcp, parse_rtcp_compound, rtcp_sender_ssrc, srtcp_index
from rtpcore.media.srtp import SUPPORTED_SUITES, SrtpAuthError, SrtpContext, SrtpReplayError, guess_roc
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture
from rtpcore.sip.crypto import SRTP_SUITES
from tests.conftest import load_truth

SSRC = 0x5EED0001
AES_192 = ("AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32")
ALL_SUITES = sorted(set(SRTP_SUITES) - set(AES_192))
CM_SUITES = [s for s in ALL_SUITES if not SRTP_SUITES[s].aead]
FIRST_SRTCP_INDEX = 1                   # libsrtp increments the SRTCP index before its first use
_NATIVE = ctypes.CDLL(pylibsrtp._binding.__file__)
_NATIVE.srtp_set_stream_roc.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def _key(suite: str, seed: int = 1) -> tuple[bytes, bytes]:
    info = SRTP_SUITES[suite]
    raw = hashlib.shake_256(f"{suite}/{seed}".encode()).digest(info.key_len + info.salt_len)
    return raw[: info.key_len], raw[info.key_len:]


def _address(cdata: object) -> int:
    return int(pylibsrtp.ffi.cast("uintptr_t", cdata))


def _set_policy(policy: pylibsrtp.Policy, part: str, setter: str) -> None:
    fn = getattr(_NATIVE, setter)
    fn.argtypes, fn.restype = [ctypes.c_void_p], None
    fn(_address(pylibsrtp.ffi.addressof(getattr(policy._policy, part))))


def _sender(suite: str, key: bytes, salt: bytes, *, roc: int = 0, ssrc: int = SSRC,
            rtcp_tag32: bool = False) -> pylibsrtp.Session:
    """A libsrtp outbound session, built in the test without rtpcore: profiles, or setters via ctypes."""
    if suite in _PROFILES:
        policy = pylibsrtp.Policy(key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_SPECIFIC, ssrc_value=ssrc,
                                  srtp_profile=_PROFILES[suite])
    else:
        bits, tag = suite.split("_")[1], suite.rsplit("_", 1)[1]
        policy = pylibsrtp.Policy(key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_SPECIFIC, ssrc_value=ssrc)
        _set_policy(policy, "rtp", f"srtp_crypto_policy_set_aes_cm_{bits}_hmac_sha1_{tag}")
        _set_policy(policy, "rtcp", f"srtp_crypto_policy_set_aes_cm_{bits}_hmac_sha1_80")
    if rtcp_tag32:
        bits = "128" if suite.startswith("AES_CM_128") else suite.split("_")[1]
        _set_policy(policy, "rtcp", f"srtp_crypto_policy_set_aes_cm_{bits}_hmac_sha1_32")
    session = pylibsrtp.Session(policy)
    if roc:
        assert _NATIVE.srtp_set_stream_roc(_address(session._srtp[0]), ssrc, roc) == 0
    return session


def _index_behind(suite: str) -> int:
    """Bytes after the SRTCP index: the tag for AES-CM; none for AEAD (RFC 7714 §9.1 puts the index last)."""
    info = SRTP_SUITES[suite]
    return 0 if info.aead else info.srtcp_tag_len


def _rtp(seq: int, *, ssrc: int = SSRC, size: int = 160) -> bytes:
    return rtp_packet(0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc, plaintext_payload(ssrc, seq, size))


def _rtcp(n: int, *, ssrc: int = SSRC) -> bytes:
    return rtcp_sender_report(ssrc, 1_768_471_200 * 10**9 + n, n * 160, n, n * 160, "phone@example.test")


# -- an independent RFC 3711 / RFC 6188 AES-CM + HMAC-SHA1 implementation -------------------------------

class _Oracle:
    """SRTP/SRTCP protect written from the RFCs with `cryptography`: a second opinion on libsrtp."""

    def __init__(self, key: bytes, salt: bytes, *, libsrtp_763: bool = False) -> None:
        ciphers = pytest.importorskip("cryptography.hazmat.primitives.ciphers")
        self._ciphers = ciphers
        size = len(key)
        if libsrtp_763:
            # cisco/libsrtp#763: for AES-192 the KDF runs AES-256 keyed with key+salt[:8], salt[8:]+zeros as salt.
            padded = key + salt + bytes(8)
            key, salt = padded[:32], padded[32:46]
        self.rtp_keys = [self._derive(key, salt, label, n) for label, n in ((0, size), (1, 20), (2, 14))]
        self.rtcp_keys = [self._derive(key, salt, label, n) for label, n in ((3, size), (4, 20), (5, 14))]

    def _ctr(self, key: bytes, iv: int, data: bytes) -> bytes:
        c = self._ciphers
        encryptor = c.Cipher(c.algorithms.AES(key), c.modes.CTR(iv.to_bytes(16, "big"))).encryptor()
        return encryptor.update(data) + encryptor.finalize()

    def _derive(self, key: bytes, salt: bytes, label: int, size: int) -> bytes:
        x = int.from_bytes(salt, "big") ^ (label << 48)          # key_id = label || 48-bit zero index (kdr 0)
        return self._ctr(key, x << 16, bytes(size))

    def _iv(self, session_salt: bytes, ssrc: int, index: int) -> int:
        return (int.from_bytes(session_salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)

    def protect(self, packet: bytes, roc: int, tag_len: int) -> bytes:
        enc_key, auth_key, salt = self.rtp_keys
        header = RtpHeader.parse(packet)
        start = header.header_length
        index = (roc << 16) | header.sequence
        body = packet[:start] + self._ctr(enc_key, self._iv(salt, header.ssrc, index), packet[start:])
        tag = hmac.new(auth_key, body + struct.pack("!I", roc), hashlib.sha1).digest()[:tag_len]
        return body + tag

    def protect_rtcp(self, packet: bytes, index: int, tag_len: int) -> bytes:
        enc_key, auth_key, salt = self.rtcp_keys
        ssrc = rtcp_sender_ssrc(packet)
        body = packet[:8] + self._ctr(enc_key, self._iv(salt, ssrc, index), packet[8:]) + struct.pack("!I", 0x80000000 | index)
        return body + hmac.new(auth_key, body, hashlib.sha1).digest()[:tag_len]


# -- round trips ------------------------------------------------------------------------------------------

def test_supported_suites_are_every_sdes_suite_but_aes_192() -> None:
    assert SUPPORTED_SUITES == frozenset(SRTP_SUITES) - set(AES_192)
    with pytest.raises(SrtpError, match="SRTP suite AES_192_CM_HMAC_SHA1_80 is not supported"):
        SrtpContext("AES_192_CM_HMAC_SHA1_80", bytes(24), bytes(14), SSRC)


def test_oracle_kdf_matches_rfc_6188_vectors() -> None:
    for key, salt, enc, salt_key, auth in (
        ("73edc66c4fa15776fb57f9505c17136550ffda71f3e8e5f1", "c8522f3acd4ce86d5add78edbb11",          # §7.4
         "31874736a8f1143870c26e4857d8a5b2c4a354407faadabb", "2372b82d639b6d8503a47adc0a6c",
         "355b10973cd95b9eacf4061c7e1a7151e7cfbfcb"),
        ("f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6", "3b04803de51ee7c96423ab5b78d2",  # §7.2
         "5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4", "fa31791685ca444a9e07c6c64e93",
         "fd9c32d39ed5fbb5a9dc96b30818454d1313dc05"),
    ):
        oracle = _Oracle(bytes.fromhex(key), bytes.fromhex(salt))
        assert [k.hex() for k in oracle.rtp_keys] == [enc, auth, salt_key]


@pytest.mark.parametrize("suite", AES_192)
def test_libsrtp_aes_192_is_not_rfc_6188(suite: str) -> None:
    """Why AES-192 is unsupported: pylibsrtp's libsrtp derives its keys as in cisco/libsrtp#763, not per RFC."""
    key, salt = _key(suite)
    tag_len = SRTP_SUITES[suite].rtp_tag_len
    protected = _sender(suite, key, salt).protect(_rtp(1))
    assert protected != _Oracle(key, salt).protect(_rtp(1), 0, tag_len)
    assert protected == _Oracle(key, salt, libsrtp_763=True).protect(_rtp(1), 0, tag_len)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_every_suite_round_trips_rtp_and_rtcp(suite: str) -> None:
    key, salt = _key(suite)
    sender = _sender(suite, key, salt)
    context = SrtpContext(suite, key, salt, SSRC)
    info = SRTP_SUITES[suite]
    for seq in range(1000, 1050):
        protected = sender.protect(_rtp(seq))
        assert len(protected) == len(_rtp(seq)) + info.rtp_tag_len
        assert context.unprotect_rtp(protected) == _rtp(seq)
    for n in range(3):
        protected = sender.protect_rtcp(_rtcp(n))
        assert len(protected) == len(_rtcp(n)) + 4 + info.srtcp_tag_len
        assert srtcp_index(protected, _index_behind(suite)) == (True, FIRST_SRTCP_INDEX + n)
        assert context.unprotect_rtcp(protected) == _rtcp(n)
    assert context.suite == suite and context.ssrc == SSRC and context.roc == 0


@pytest.mark.parametrize("suite", CM_SUITES)
def test_libsrtp_sender_matches_the_rfc_oracle(suite: str) -> None:
    """Proves the ctypes-configured AES-192/256 policies really use those ciphers, and the SRTCP tag size."""
    key, salt = _key(suite)
    oracle = _Oracle(key, salt)
    sender = _sender(suite, key, salt, roc=5)
    info = SRTP_SUITES[suite]
    for seq in (7, 8, 9):
        assert sender.protect(_rtp(seq)) == oracle.protect(_rtp(seq), 5, info.rtp_tag_len)
    assert sender.protect_rtcp(_rtcp(0)) == oracle.protect_rtcp(_rtcp(0), FIRST_SRTCP_INDEX, 10)   # 80-bit even for _32


@pytest.mark.parametrize("suite", CM_SUITES)
def test_oracle_packets_at_roc_3_decrypt_across_the_wrap(suite: str) -> None:
    key, salt = _key(suite, seed=2)
    oracle = _Oracle(key, salt)
    tag_len = SRTP_SUITES[suite].rtp_tag_len
    packets = [(3 if seq < 65536 else 4, seq & 0xFFFF) for seq in range(65500, 65600)]
    wire = [oracle.protect(_rtp(seq), roc, tag_len) for roc, seq in packets]
    assert guess_roc(suite, key, salt, SSRC, wire[0]) == 3
    context = SrtpContext(suite, key, salt, SSRC)
    context.set_roc(3)
    assert context.roc == 3
    for (roc, seq), packet in zip(packets, wire):
        assert context.unprotect_rtp(packet) == _rtp(seq)
    assert context.roc == 4


def test_large_packets_grow_the_buffer() -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    key, salt = _key(suite)
    sender = _sender(suite, key, salt)
    context = SrtpContext(suite, key, salt, SSRC)
    small, big = _rtp(1), _rtp(2, size=1300)
    assert context.unprotect_rtp(sender.protect(small)) == small
    big_packet = rtp_packet(0, 3, 480, SSRC, bytes(range(256)) * 12)          # 3084 bytes, more than pylibsrtp's 1500
    oracle = _Oracle(key, salt)
    assert context.unprotect_rtp(oracle.protect(big_packet, 0, 10)) == big_packet
    assert context.unprotect_rtp(sender.protect(big)) == big


# -- failures and their mapping ------------------------------------------------------------------------------

@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM"])
def test_wrong_key_is_an_auth_error_naming_the_ssrc_not_the_key(suite: str) -> None:
    key, salt = _key(suite)
    wrong_key, _ = _key(suite, seed=99)
    packet = _sender(suite, key, salt).protect(_rtp(4711))
    context = SrtpContext(suite, wrong_key, salt, SSRC)
    with pytest.raises(SrtpAuthError) as info:
        context.unprotect_rtp(packet)
    message = str(info.value)
    assert f"SSRC 0x{SSRC:08x}" in message and "seq 4711" in message and "authentication failed" in message
    for secret in (wrong_key, key, salt):
        assert secret.hex() not in message and base64.b64encode(secret).decode()[:8] not in message
    assert isinstance(info.value, SrtpError) and isinstance(info.value, MediaError)


def test_tampered_rtcp_is_an_auth_error() -> None:
    suite = "AEAD_AES_128_GCM"
    key, salt = _key(suite)
    protected = bytearray(_sender(suite, key, salt).protect_rtcp(_rtcp(0)))
    protected[12] ^= 1
    with pytest.raises(SrtpAuthError, match=f"SRTCP SSRC 0x{SSRC:08x} index {FIRST_SRTCP_INDEX} "):
        SrtpContext(suite, key, salt, SSRC).unprotect_rtcp(bytes(protected))


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM"])
def test_replays_are_replay_errors(suite: str) -> None:
    key, salt = _key(suite)
    sender = _sender(suite, key, salt)
    packets = [sender.protect(_rtp(seq)) for seq in range(100, 300)]
    context = SrtpContext(suite, key, salt, SSRC, replay_window=64)
    context.unprotect_rtp(packets[0])
    with pytest.raises(SrtpReplayError, match="already seen"):
        context.unprotect_rtp(packets[0])
    for packet in packets[1:]:
        context.unprotect_rtp(packet)
    with pytest.raises(SrtpReplayError, match="older than the 64-packet window"):
        context.unprotect_rtp(packets[50])
    rtcp = sender.protect_rtcp(_rtcp(0))
    context.unprotect_rtcp(rtcp)
    with pytest.raises(SrtpReplayError, match="SRTCP"):
        context.unprotect_rtcp(rtcp)


def test_other_errors_are_srtp_errors_with_the_reason() -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    key, salt = _key(suite)
    other = _sender(suite, key, salt, ssrc=0x0BADF00D).protect(_rtp(1, ssrc=0x0BADF00D))
    context = SrtpContext(suite, key, salt, SSRC)
    with pytest.raises(SrtpError, match=f"belongs to SSRC 0x0badf00d, not to this context") as info:
        context.unprotect_rtp(other)
    assert type(info.value) is SrtpError
    with pytest.raises(SrtpError, match="6-byte packet") as short:
        context.unprotect_rtp(b"\x80\x00\x00\x01\x00\x00")
    assert type(short.value) is SrtpError
    with pytest.raises(SrtpError, match="SRTP suite NULL_HMAC_SHA1_80 is not supported"):
        SrtpContext("NULL_HMAC_SHA1_80", key, salt, SSRC)
    with pytest.raises(SrtpError, match="needs a 16-byte master key and 14-byte salt, got 32 and 14 bytes") as bad:
        SrtpContext(suite, key * 2, salt, SSRC)
    assert key.hex() not in str(bad.value)
    with pytest.raises(ValueError, match="replay window 10"):
        SrtpContext(suite, key, salt, SSRC, replay_window=10)


# -- ROC ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"])
def test_sequence_wrap_continues_the_roc(suite: str) -> None:
    key, salt = _key(suite)
    sender = _sender(suite, key, salt)
    context = SrtpContext(suite, key, salt, SSRC)
    for seq in range(65000, 66000):
        assert context.unprotect_rtp(sender.protect(_rtp(seq))) == _rtp(seq)
    assert context.roc == 1


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_32", "AES_256_CM_HMAC_SHA1_80", "AEAD_AES_256_GCM"])
def test_set_roc_and_guess_roc_for_a_stream_at_roc_3(suite: str) -> None:
    key, salt = _key(suite, seed=3)
    sender = _sender(suite, key, salt, roc=3)
    wire = {seq: sender.protect(_rtp(seq)) for seq in range(40000, 40050)}
    first = wire[40000]
    assert guess_roc(suite, key, salt, SSRC, first) == 3
    assert guess_roc(suite, key, salt, SSRC, first, hint=3) == 3
    assert guess_roc(suite, key, salt, SSRC, first, max_roc=2) is None
    wrong_key, _ = _key(suite, seed=4)
    assert guess_roc(suite, wrong_key, salt, SSRC, first, max_roc=20) is None
    # One context survives failed tries: its state after them is that of a fresh one.
    context = SrtpContext(suite, key, salt, SSRC)
    for roc in (0, 7, 1, 2):
        context.set_roc(roc)
        with pytest.raises(SrtpAuthError, match=f"at ROC {roc}"):
            context.unprotect_rtp(first)
    context.set_roc(3)
    for seq, packet in wire.items():
        assert context.unprotect_rtp(packet) == _rtp(seq)
    assert context.roc == 3
    with pytest.raises(SrtpReplayError):
        context.unprotect_rtp(wire[40049])


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"])
def test_set_roc_on_a_used_context_still_follows_the_next_wrap(suite: str) -> None:
    """libsrtp keeps a nearby pending ROC forever and then refuses the wrap; the context must not."""
    key, salt = _key(suite)
    sender = _sender(suite, key, salt, roc=2)
    wire = [(seq, sender.protect(_rtp(seq))) for seq in range(65400, 65800)]
    context = SrtpContext(suite, key, salt, SSRC)
    context.set_roc(2)
    context.unprotect_rtp(wire[0][1])
    context.set_roc(2)              # e.g. ROC carried over from the previous file
    for seq, packet in wire[1:]:
        assert context.unprotect_rtp(packet) == _rtp(seq)
    assert context.roc == 3


def test_guess_roc_is_fast() -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    key, salt = _key(suite)
    packet = _sender(suite, key, salt, roc=1000).protect(_rtp(5))
    started = time.perf_counter()
    assert guess_roc(suite, key, salt, SSRC, packet) == 1000
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"1001 ROC tries took {elapsed:.3f} s"


# -- MKI, SRTCP tag length quirks ------------------------------------------------------------------------------

def _insert_mki(packet: bytes, mki: bytes, behind: int) -> bytes:
    return packet[: len(packet) - behind] + mki + packet[len(packet) - behind:]


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_32", "AES_256_CM_HMAC_SHA1_80", "AEAD_AES_128_GCM"])
def test_mki_is_stripped_where_the_rfcs_put_it(suite: str) -> None:
    """AES-CM: MKI before the tag (RFC 3711 §3.1, §3.4); AEAD: MKI last (RFC 7714 §8.1, §9.1)."""
    key, salt = _key(suite)
    info = SRTP_SUITES[suite]
    rtp_behind = 0 if info.aead else info.rtp_tag_len
    rtcp_behind = 0 if info.aead else info.srtcp_tag_len
    sender = _sender(suite, key, salt)
    mki = b"\x00\x00\x00\x02"
    context = SrtpContext(suite, key, salt, SSRC, mki_length=4)
    for seq in (10, 11):
        assert context.unprotect_rtp(_insert_mki(sender.protect(_rtp(seq)), mki, rtp_behind)) == _rtp(seq)
    rtcp = _insert_mki(sender.protect_rtcp(_rtcp(0)), mki, rtcp_behind)
    assert srtcp_index(rtcp, _index_behind(suite), mki_len=4) == (True, FIRST_SRTCP_INDEX)
    assert context.unprotect_rtcp(rtcp) == _rtcp(0)
    with pytest.raises(SrtpAuthError):
        SrtpContext(suite, key, salt, SSRC).unprotect_rtp(_insert_mki(sender.protect(_rtp(12)), mki, rtp_behind))


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_32", "AES_256_CM_HMAC_SHA1_32"])
def test_32_bit_srtcp_tag_is_recovered_and_remembered(suite: str) -> None:
    key, salt = _key(suite)
    oracle = _Oracle(key, salt)
    libsrtp_wrong = _sender(suite, key, salt, rtcp_tag32=True)
    context = SrtpContext(suite, key, salt, SSRC)
    for n in range(4):
        packet = libsrtp_wrong.protect_rtcp(_rtcp(n))
        assert packet == oracle.protect_rtcp(_rtcp(n), FIRST_SRTCP_INDEX + n, 4)
        assert context.unprotect_rtcp(packet) == _rtcp(n)
    # A correct 80-bit packet from the same phone later still decrypts (the primary context is kept).
    assert context.unprotect_rtcp(oracle.protect_rtcp(_rtcp(9), 9, 10)) == _rtcp(9)
    with pytest.raises(SrtpReplayError):
        context.unprotect_rtcp(oracle.protect_rtcp(_rtcp(2), FIRST_SRTCP_INDEX + 2, 4))
    with pytest.raises(SrtpAuthError):
        SrtpContext("AES_CM_128_HMAC_SHA1_80", *_key("AES_CM_128_HMAC_SHA1_80"), SSRC).unprotect_rtcp(
            _sender("AES_CM_128_HMAC_SHA1_80", *_key("AES_CM_128_HMAC_SHA1_80"), rtcp_tag32=True).protect_rtcp(_rtcp(0)))


# -- generator output ----------------------------------------------------------------------------------------

def _streams_in(folder: Path) -> dict[tuple[str, str], list[bytes]]:
    """UDP payloads of the rendered media pcaps keyed by ('ip:port', 'ip:port'), in capture order."""
    out: dict[tuple[str, str], list[bytes]] = {}
    for name in load_truth(folder)["media"]:
        with open_capture(folder / name) as reader:
            for frame in reader:
                l3 = link_payload(frame.linktype, frame.data)
                ip = parse_ip(l3) if l3 is not None else None
                udp = parse_udp(ip) if ip is not None else None
                if udp is not None:
                    out.setdefault((f"{udp.src}:{udp.sport}", f"{udp.dst}:{udp.dport}"), []).append(udp.payload)
    return out


@pytest.mark.parametrize("name", ["inbound-proxy", "gcm", "mid-call"])
def test_generator_streams_decrypt_to_the_plaintext(generated, name: str) -> None:
    folder = generated(name)
    truth = load_truth(folder)
    payloads = _streams_in(folder)
    checked = 0
    encrypted = sum(stream["encrypted"] for stream in truth["streams"])
    assert encrypted >= 3
    for stream in truth["streams"]:
        if not stream["encrypted"]:
            continue
        suite, ssrc = stream["suite"], int(stream["ssrc"], 16)
        info = SRTP_SUITES[suite]
        raw = base64.b64decode(stream["key"])
        key, salt = raw[: info.key_len], raw[info.key_len:]
        context = SrtpContext(suite, key, salt, ssrc)
        candidates = payloads[(stream["src"], stream["dst"])]
        if stream["kind"] == "rtp":
            packets = [p for p in candidates if classify(p) == "rtp" and RtpHeader.parse(p).ssrc == ssrc]
            roc = stream["first_seq_index"] >> 16
            assert guess_roc(suite, key, salt, ssrc, packets[0]) == roc
            context.set_roc(roc)
            last_seq = stream["first_seq_index"] & 0xFFFF
            for packet in packets:
                plain = context.unprotect_rtp(packet)
                header = RtpHeader.parse(plain)
                roc += header.sequence < last_seq and last_seq - header.sequence > 0x8000
                last_seq = header.sequence
                assert plain[header.header_length:] == plaintext_payload(ssrc, (roc << 16) | header.sequence, 160)
            assert context.roc == roc
        else:
            packets = [p for p in candidates if classify(p) == "rtcp" and rtcp_sender_ssrc(p) == ssrc]
            # truth's first_seq_index counts SRTCP from 0, but libsrtp sent 1 first: checked against the wire only.
            first_index = srtcp_index(packets[0], _index_behind(suite))[1]
            assert first_index >= FIRST_SRTCP_INDEX
            for n, packet in enumerate(packets):
                assert srtcp_index(packet, _index_behind(suite)) == (True, first_index + n)
                plain = context.unprotect_rtcp(packet)
                assert looks_like_clear_rtcp(plain) and not looks_like_clear_rtcp(packet)
                assert [p.ssrc for p in parse_rtcp_compound(plain)] == [ssrc, ssrc]
        assert len(packets) == stream["packets"]
        checked += 1
    assert checked == encrypted
