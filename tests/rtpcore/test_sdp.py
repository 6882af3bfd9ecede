"""SessionDescription parsing on hand-written SDPs (the real-capture SDPs are checked in test_sip_capture)."""
from __future__ import annotations

import base64

import pytest

from rtpcore.sip.sdp import SessionDescription

KEY_A = base64.b64encode(bytes(range(30))).decode()
KEY_B = base64.b64encode(bytes(range(100, 146))).decode()


def sdp(*lines: str, sep: str = "\r\n") -> str:
    return sep.join(lines) + sep


def test_session_level_connection_is_the_fallback() -> None:
    s = SessionDescription.parse(sdp(
        "v=0", "o=alice 2890844526 2890844526 IN IP4 198.51.100.1", "s=-", "c=IN IP4 198.51.100.7", "t=0 0",
        "m=audio 49170 RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
        "m=video 51372 RTP/AVP 99", "c=IN IP4 198.51.100.9",
    ))
    assert (s.origin_address, s.connection, s.direction) == ("198.51.100.1", "198.51.100.7", "sendrecv")
    audio, video = s.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 49170, "RTP/AVP", ("0", "8", "101"))
    assert audio.connection is None and s.media_address(audio) == "198.51.100.7"
    assert video.connection == "198.51.100.9" and s.media_address(video) == "198.51.100.9"
    assert s.audio() is audio
    assert audio.encoding(101) == "telephone-event/8000" and audio.encoding(8) is None
    assert (s.rtcp_port(audio), s.rtcp_address(audio)) == (49171, "198.51.100.7")
    assert s.problems == ()


def test_ipv6_lf_endings_blank_and_unknown_lines() -> None:
    s = SessionDescription.parse(sdp(
        "v=0", "", "o=- 1 1 IN IP6 2001:DB8:0:0::1", "garbage line without equals", "x-unknown=1",
        "c=IN IP6 2001:db8:0:0:0:0:0:2", "m=audio 5004/2 RTP/AVP 0", "a=weird-attribute:yes", sep="\n",
    ))
    assert s.origin_address == "2001:db8::1"
    assert s.connection == "2001:db8::2"
    audio = s.audio()
    assert audio is not None and (audio.port, audio.port_count) == (5004, 2)


def test_multicast_ttl_and_count_are_stripped() -> None:
    s = SessionDescription.parse(sdp("v=0", "c=IN IP4 233.252.0.1/127/3", "m=audio 4000 RTP/AVP 0"))
    assert s.connection == "233.252.0.1"


def test_rtcp_attribute_with_address_and_rtcp_mux() -> None:
    s = SessionDescription.parse(sdp(
        "v=0", "c=IN IP4 192.0.2.1",
        "m=audio 4000 RTP/AVP 0", "a=rtcp:53020 IN IP6 2001:db8::7",
        "m=audio 6000 RTP/SAVPF 0", "a=rtcp-mux",
        "m=audio 8000 RTP/AVP 0", "a=rtcp:9001", "a=rtcp-mux",
    ))
    first, muxed, both = s.media
    assert (first.rtcp_port, first.rtcp_address, first.rtcp_mux) == (53020, "2001:db8::7", False)
    assert (s.rtcp_port(first), s.rtcp_address(first)) == (53020, "2001:db8::7")
    assert (muxed.rtcp_port, muxed.rtcp_mux, s.rtcp_port(muxed), s.rtcp_address(muxed)) == (None, True, 6000, "192.0.2.1")
    assert muxed.is_secure and not first.is_secure
    assert s.rtcp_port(both) == 9001


def test_direction_media_level_overrides_session_level() -> None:
    s = SessionDescription.parse(sdp(
        "v=0", "c=IN IP4 192.0.2.1", "a=sendonly",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 4002 RTP/AVP 0", "a=inactive",
        "m=audio 4004 RTP/AVP 0", "a=recvonly",
    ))
    assert s.direction == "sendonly"
    assert [m.direction for m in s.media] == ["sendonly", "inactive", "recvonly"]


def test_hold_with_zero_address() -> None:
    s = SessionDescription.parse(sdp("v=0", "c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0", "a=sendonly"))
    audio = s.audio()
    assert audio is not None and s.media_address(audio) == "0.0.0.0" and audio.direction == "sendonly"


def test_rejected_streams_are_skipped_by_audio() -> None:
    s = SessionDescription.parse(sdp(
        "v=0", "c=IN IP4 192.0.2.1", "m=audio 0 RTP/AVP 0", "m=video 0 RTP/AVP 96", "m=audio 7078 RTP/AVP 8",
    ))
    assert s.audio() is s.media[2]
    assert SessionDescription.parse(sdp("v=0", "m=audio 0 RTP/AVP 0")).audio() is None
    assert SessionDescription.parse("").media == ()


def test_multiple_crypto_lines_and_a_bad_one_kept_out() -> None:
    short = base64.b64encode(bytes(20)).decode()
    s = SessionDescription.parse(sdp(
        "v=0", "c=IN IP4 192.0.2.1", "m=audio 4000 RTP/SAVP 0",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^31|1:1",
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{short}",
        f"a=crypto:3 AES_256_CM_HMAC_SHA1_32 inline:{KEY_B}",
    ))
    audio = s.audio()
    assert audio is not None
    assert [(c.tag, c.suite) for c in audio.crypto] == [(1, "AES_CM_128_HMAC_SHA1_80"), (3, "AES_256_CM_HMAC_SHA1_32")]
    assert audio.crypto[0].key.key_and_salt == bytes(range(30))
    assert audio.crypto[1].key.key_and_salt == bytes(range(100, 146))
    assert s.problems == (
        "line 5 (audio): a=crypto ignored: AES_CM_128_HMAC_SHA1_80 needs a 30-byte inline key "
        "(16-byte key + 14-byte salt) but the key decodes to 20 bytes",
    )
    assert short not in repr(s) and KEY_A not in repr(s) and KEY_B not in repr(s)


def test_fingerprint_session_and_media_level() -> None:
    fp = "sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF"
    s = SessionDescription.parse(sdp(
        "v=0", f"a=fingerprint:{fp}", "c=IN IP4 192.0.2.1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=audio 10 UDP/TLS/RTP/SAVPF 111", "a=fingerprint:sha-1 AA:BB",
    ))
    assert [m.fingerprint for m in s.media] == [fp, "sha-1 AA:BB"]
    assert all(m.crypto == () for m in s.media)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("m=audio", "is not 'media port proto fmt...'"),
        ("m=audio seven RTP/AVP 0", "m=audio port 'seven' is not a number 0-65535"),
        ("m=audio 70000 RTP/AVP 0", "m=audio port '70000' is not a number 0-65535"),
        ("c=IN ATM foo", "c='IN ATM foo' is not 'IN IP4|IP6 address'"),
    ],
)
def test_structural_errors_raise(line: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        SessionDescription.parse(sdp("v=0", line))
    assert reason in str(info.value)


def test_bad_rtcp_attribute_is_a_problem_not_an_error() -> None:
    s = SessionDescription.parse(sdp("v=0", "c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=rtcp:abc"))
    audio = s.audio()
    assert audio is not None and audio.rtcp_port is None and s.rtcp_port(audio) == 4001
    assert s.problems == ("line 4 (audio): a=rtcp port 'abc' is not a number 0-65535",)
