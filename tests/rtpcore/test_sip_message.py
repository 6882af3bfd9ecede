"""SipMessage parsing, looks_like_sip and the SipFramer, on messages built in the tests."""
from __future__ import annotations

import pytest

from rtpcore.sip.message import SipFramer, SipMessage, looks_like_sip, uri_user

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def request(method: str = "INVITE", *, body: bytes = b"", extra: str = "", call_id: str = "abc@host") -> bytes:
    """A minimal valid request with a correct Content-Length."""
    head = (
        f"{method} sip:+15551234@example.com;user=phone SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
        'From: "Alice Smith" <sip:alice@example.com>;tag=from1\r\n'
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 7 {method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def response(code: int = 200, *, body: bytes = b"") -> bytes:
    """A minimal valid response."""
    return (
        f"SIP/2.0 {code} OK Then\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@h>;tag=1\r\n"
        f"t: <sip:b@h>;tag=2\r\ni: r1\r\nCSeq: 3 BYE\r\nl: {len(body)}\r\n\r\n"
    ).encode() + body


def test_request_line_and_properties() -> None:
    m = SipMessage.parse(request(body=SDP, extra="Content-Type: application/sdp\r\n"))
    assert (m.method, m.request_uri, m.status, m.reason) == ("INVITE", "sip:+15551234@example.com;user=phone", None, None)
    assert m.is_request
    assert (m.call_id, m.cseq_number, m.cseq_method) == ("abc@host", 7, "INVITE")
    assert (m.from_tag, m.to_tag) == ("from1", None)
    assert (m.from_user, m.to_user, m.request_user) == ("alice", "bob", "+15551234")
    assert m.body == SDP
    assert m.sdp() == SDP.decode()


def test_status_line_and_compact_headers() -> None:
    m = SipMessage.parse(response(486))
    assert (m.method, m.status, m.reason, m.is_request) == (None, 486, "OK Then", False)
    assert m.call_id == "r1" and m.header("Call-ID") == "r1" and m.header("I") == "r1"
    assert m.header("via") == "SIP/2.0/UDP h;branch=z9hG4bK1"
    assert (m.from_tag, m.to_tag) == ("1", "2")
    assert m.header("content-length") == "0" and m.body == b""
    assert m.request_user is None


def test_all_compact_forms_map_to_long_names() -> None:
    compact = {"i": "Call-ID", "f": "From", "t": "To", "v": "Via", "m": "Contact", "l": "Content-Length",
               "c": "Content-Type", "k": "Supported", "s": "Subject", "e": "Content-Encoding", "o": "Event",
               "r": "Refer-To", "u": "Allow-Events"}
    lines = "".join(f"{short}: value-{short}\r\n" for short in compact if short not in "il")
    m = SipMessage.parse(f"NOTIFY sip:x@h SIP/2.0\r\ni: n1\r\nCSeq: 1 NOTIFY\r\n{lines}l: 0\r\n\r\n".encode())
    for short, long in compact.items():
        if short not in "il":
            assert m.header(long) == f"value-{short}", long
            assert m.header(long.upper()) == f"value-{short}"


def test_header_folding_and_repeats() -> None:
    data = (b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nSubject: first\r\n  part\r\n\tand more\r\n"
            b"Via: SIP/2.0/TCP b;branch=z9hG4bK2\r\nCall-ID: c\r\nCSeq: 2 OPTIONS\r\n\r\n")
    m = SipMessage.parse(data)
    assert m.header("subject") == "first part and more"
    assert m.headers_named("v") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/TCP b;branch=z9hG4bK2"]
    assert m.headers_named("route") == []


def test_body_trimmed_to_content_length_and_lf_only_endings() -> None:
    data = request(body=SDP, extra="Content-Type: application/sdp\r\n") + b"TRAILING GARBAGE"
    assert SipMessage.parse(data).body == SDP
    lf = request(body=b"hello").replace(b"\r\n", b"\n")
    m = SipMessage.parse(lf)
    assert m.body == b"hello" and m.call_id == "abc@host" and m.from_user == "alice"


def test_body_without_content_length_is_the_rest() -> None:
    data = b"MESSAGE sip:a@h SIP/2.0\r\nCall-ID: q\r\nCSeq: 1 MESSAGE\r\n\r\nhi there"
    assert SipMessage.parse(data).body == b"hi there"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty SIP message"),
        (b"HELLO WORLD\r\n\r\n", "neither 'METHOD URI SIP/2.0' nor 'SIP/2.0 CODE REASON'"),
        (b"SIP/2.0 99 Low\r\nCall-ID: a\r\nCSeq: 1 X\r\n\r\n", "no 3-digit status code 100-699"),
        (b"INV(TE sip:a SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 X\r\n\r\n", "invalid method token"),
        (b"BYE sip:a SIP/2.0\r\nCSeq: 1 BYE\r\n\r\n", "no Call-ID header"),
        (b"BYE sip:a SIP/2.0\r\nCall-ID: a\r\n\r\n", "no CSeq header"),
        (b"BYE sip:a SIP/2.0\r\nCall-ID: a\r\nCSeq: BYE\r\n\r\n", "CSeq 'BYE' is not 'NUMBER METHOD'"),
        (b"BYE sip:a SIP/2.0\r\nCall-ID: a\r\nno colon here\r\n\r\n", "line 3 'no colon here' is not a 'Name: value' header"),
        (b"BYE sip:a SIP/2.0\r\n folded\r\n\r\n", "line 2 is a continuation line but no header precedes it"),
        (b"BYE sip:a SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 BYE\r\nContent-Length: 10\r\n\r\nshort", "body has 5 bytes but Content-Length says 10"),
        (b"BYE sip:a SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 BYE\r\nContent-Length: ten\r\n\r\n", "Content-Length 'ten' is not a decimal number"),
    ],
)
def test_parse_errors_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        SipMessage.parse(data)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:alice@example.com", "alice"),
        ("sips:alice:secret@example.com:5061;transport=tls", "alice"),
        ("sip:+4930123;npdi;rn=+4930999@gw.example;user=phone", "+4930123"),
        ("tel:+1-555-0100;phone-context=example.com", "+1-555-0100"),
        ("TEL:911", "911"),
        ("sip:example.com", None),
        ("http://example.com/x", None),
        ("sip:%2B49%20123@h", "+49 123"),
        ("sip:[2001:db8::1]", None),
        ("sip:bob@[2001:db8::1]:5060", "bob"),
    ],
)
def test_uri_user(uri: str, user: str | None) -> None:
    assert uri_user(uri) == user


@pytest.mark.parametrize(
    ("from_value", "user", "tag"),
    [
        ('"Doe, John <x>" <sip:john@h>;tag=t1', "john", "t1"),
        ("sip:bare@h;tag=t2", "bare", "t2"),
        ("<tel:+15550100>;TAG=t3", "+15550100", "t3"),
        ("Anonymous <sip:anonymous@anonymous.invalid>", "anonymous", None),
        ("<sip:a@h;tag=uri-param-not-header>", "a", None),
    ],
)
def test_from_display_names_and_tags(from_value: str, user: str, tag: str | None) -> None:
    m = SipMessage.parse(f"BYE sip:x@h SIP/2.0\r\nFrom: {from_value}\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n".encode())
    assert (m.from_user, m.from_tag) == (user, tag)


def test_multipart_mixed_sdp_part() -> None:
    isup = bytes([0x01, 0x00, 0x0D, 0x0A, 0x0D, 0x0A, 0xFF])   # binary part with CRLFCRLF inside
    body = (b"--XyZ\r\nContent-Type: application/isup;version=itu-t92+\r\nContent-Disposition: signal\r\n\r\n"
            + isup + b"\r\n--XyZ\r\nContent-Type: application/SDP\r\n\r\n" + SDP + b"\r\n--XyZ--\r\n")
    m = SipMessage.parse(request(body=body, extra='Content-Type: multipart/mixed; boundary="XyZ"\r\n'))
    assert m.sdp() == SDP.decode()
    related = SipMessage.parse(request(body=body, extra="c: Multipart/Related;boundary=XyZ\r\n"))
    assert related.sdp() == SDP.decode()


def test_sdp_absent_or_not_sdp() -> None:
    assert SipMessage.parse(request()).sdp() is None
    assert SipMessage.parse(request(body=b"hello", extra="Content-Type: text/plain\r\n")).sdp() is None
    assert SipMessage.parse(request(body=b"hello")).sdp() is None
    assert SipMessage.parse(request(body=SDP)).sdp() == SDP.decode()   # untyped but starts with v=0
    no_sdp_part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"
    assert SipMessage.parse(request(body=no_sdp_part, extra="Content-Type: multipart/mixed;boundary=b\r\n")).sdp() is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (request(), True),
        (response(180), True),
        (b"SUBSCRIBE sip:x@h SIP/2.0\r\n", True),
        (b"FOOBAR sip:x@h SIP/2.0\r\n", True),           # extension methods are tokens too
        (b"SIP/2.0 200\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\n", False),
        (b"SIP/2.0 20 OK\r\n", False),
        (b"SIP/2.0/UDP host\r\n", False),
        (b"\x80\x08\x00\x01" + b"\x00" * 160, False),    # RTP
        (b"INVITE sip:x@h SIP/2.0", False),              # no line end yet
        (b"", False),
    ],
)
def test_looks_like_sip(payload: bytes, expected: bool) -> None:
    assert looks_like_sip(payload) is expected


def test_framer_splits_and_joins() -> None:
    one, two, three = request(body=SDP, call_id="1"), response(200, body=b"abc"), request("ACK", call_id="3")
    stream = one + two + three
    framer = SipFramer()
    assert framer.feed(stream) == [one, two, three]
    assert framer.pending == 0
    framer = SipFramer()
    out: list[bytes] = []
    for i in range(0, len(stream), 7):
        out += framer.feed(stream[i:i + 7])
    assert out == [one, two, three]


def test_framer_keepalives_and_partial() -> None:
    framer = SipFramer()
    msg = request("OPTIONS")
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n" + msg[:30]) == []
    assert framer.pending == 30
    assert framer.feed(msg[30:] + b"\r\n") == [msg]
    assert framer.pending == 0 and framer.keepalives == 3


def test_framer_without_content_length_takes_no_body() -> None:
    framer = SipFramer()
    msg = b"BYE sip:a@h SIP/2.0\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n"
    assert framer.feed(msg + msg) == [msg, msg]


def test_framer_resyncs_after_garbage() -> None:
    framer = SipFramer()
    msg = request("BYE")
    garbage = b"\x16\x03\x01 binary tail of a lost message\r\nbody: line\r\n"
    assert framer.feed(garbage + msg) == [msg]
    assert framer.discarded_bytes == len(garbage)
    framer = SipFramer()
    assert framer.feed(b"junk without newline") == []
    assert framer.feed(b"\r\nmore junk\r\nSIP/2.0 200 OK\r\ni: x\r\nCSeq: 1 BYE\r\nl: 0\r\n\r\n") == [
        b"SIP/2.0 200 OK\r\ni: x\r\nCSeq: 1 BYE\r\nl: 0\r\n\r\n"]


def test_framer_reset_drops_partial() -> None:
    framer = SipFramer()
    msg = request("INFO", body=b"x" * 50)
    framer.feed(msg[:-10])
    framer.reset()
    assert framer.pending == 0
    assert framer.feed(msg) == [msg]
