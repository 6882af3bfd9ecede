"""SDES a=crypto parsing (RFC 4568 / 6188 / 7714) and key redaction, with keys built in the tests."""
from __future__ import annotations

import base64

import pytest

from rtpcore.sip.crypto import SRTP_SUITES, CryptoAttribute, SdesKey, redact, suite_info

# (suite, key bytes, salt bytes, RTP tag, SRTCP tag) from RFC 4568 §6.2, RFC 6188 §7.1, RFC 7714 §14.2.
RFC_SIZES = [
    ("AES_CM_128_HMAC_SHA1_80", 16, 14, 10, 10),
    ("AES_CM_128_HMAC_SHA1_32", 16, 14, 4, 10),
    ("AES_192_CM_HMAC_SHA1_80", 24, 14, 10, 10),
    ("AES_192_CM_HMAC_SHA1_32", 24, 14, 4, 10),
    ("AES_256_CM_HMAC_SHA1_80", 32, 14, 10, 10),
    ("AES_256_CM_HMAC_SHA1_32", 32, 14, 4, 10),
    ("AEAD_AES_128_GCM", 16, 12, 16, 16),
    ("AEAD_AES_256_GCM", 32, 12, 16, 16),
]


def material(n: int, seed: int = 1) -> bytes:
    """Deterministic, distinct key bytes."""
    return bytes((seed * 37 + i * 11) % 256 for i in range(n))


def b64(raw: bytes, *, padded: bool = True) -> str:
    text = base64.b64encode(raw).decode()
    return text if padded else text.rstrip("=")


def test_suite_table_matches_rfcs() -> None:
    assert sorted(SRTP_SUITES) == sorted(row[0] for row in RFC_SIZES)
    for name, key_len, salt_len, rtp_tag, srtcp_tag in RFC_SIZES:
        info = SRTP_SUITES[name]
        assert (info.name, info.key_len, info.salt_len, info.rtp_tag_len, info.srtcp_tag_len) == (
            name, key_len, salt_len, rtp_tag, srtcp_tag)
        assert info.aead is name.startswith("AEAD")
        assert info.inline_len == key_len + salt_len


@pytest.mark.parametrize(("name", "key_len", "salt_len", "rtp_tag", "srtcp_tag"), RFC_SIZES)
@pytest.mark.parametrize("padded", [True, False])
def test_every_suite_with_and_without_padding(name: str, key_len: int, salt_len: int, rtp_tag: int, srtcp_tag: int, padded: bool) -> None:
    raw = material(key_len + salt_len)
    attr = CryptoAttribute.parse(f"1 {name} inline:{b64(raw, padded=padded)}")
    assert (attr.tag, attr.suite, attr.session_params, attr.supported) == (1, name, (), True)
    assert attr.keys == (SdesKey(raw[:key_len], raw[key_len:], None, None, None),)
    assert attr.key.key_and_salt == raw


def test_lifetime_and_mki() -> None:
    raw = material(30)
    attr = CryptoAttribute.parse(f"7 AES_CM_128_HMAC_SHA1_80 inline:{b64(raw)}|2^31|1:4 KDR=0 UNENCRYPTED_SRTCP")
    key = attr.key
    assert (attr.tag, key.lifetime, key.mki, key.mki_length) == (7, 2**31, 1, 4)
    assert attr.session_params == ("KDR=0", "UNENCRYPTED_SRTCP")
    assert CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_32 inline:{b64(raw)}|1048576").key.lifetime == 1048576
    only_mki = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_32 inline:{b64(raw)}|255:1").key
    assert (only_mki.lifetime, only_mki.mki, only_mki.mki_length) == (None, 255, 1)


def test_several_inline_keys() -> None:
    first, second = material(30, 1), material(30, 2)
    attr = CryptoAttribute.parse(f"2 AES_CM_128_HMAC_SHA1_80 inline:{b64(first)}|2^20|1:4;inline:{b64(second, padded=False)}|2^20|2:4")
    assert [(k.key_and_salt, k.mki) for k in attr.keys] == [(first, 1), (second, 2)]


def test_old_256_and_192_spellings_are_aliases() -> None:
    raw = material(46)
    attr = CryptoAttribute.parse(f"1 AES_CM_256_HMAC_SHA1_80 inline:{b64(raw)}")
    assert attr.supported and attr.suite == "AES_CM_256_HMAC_SHA1_80"
    assert attr.suite_info is SRTP_SUITES["AES_256_CM_HMAC_SHA1_80"]
    assert attr.key.master_key == raw[:32]
    assert suite_info("AES_CM_192_HMAC_SHA1_32") is SRTP_SUITES["AES_192_CM_HMAC_SHA1_32"]
    assert suite_info("aes_cm_128_hmac_sha1_80") is SRTP_SUITES["AES_CM_128_HMAC_SHA1_80"]


def test_unknown_suite_parses_but_is_not_supported() -> None:
    raw = material(30)
    attr = CryptoAttribute.parse(f"3 F8_128_HMAC_SHA1_80 inline:{b64(raw)}|2^31")
    assert (attr.suite, attr.supported, attr.suite_info) == ("F8_128_HMAC_SHA1_80", False, None)
    assert attr.key.master_key == raw and attr.key.lifetime == 2**31


@pytest.mark.parametrize(("name", "key_len", "salt_len", "rtp_tag", "srtcp_tag"), RFC_SIZES)
def test_wrong_key_length_names_suite_and_sizes(name: str, key_len: int, salt_len: int, rtp_tag: int, srtcp_tag: int) -> None:
    raw = material(key_len + salt_len - 1)
    with pytest.raises(ValueError) as info:
        CryptoAttribute.parse(f"1 {name} inline:{b64(raw)}")
    assert str(info.value) == (
        f"{name} needs a {key_len + salt_len}-byte inline key ({key_len}-byte key + {salt_len}-byte salt) "
        f"but the key decodes to {key_len + salt_len - 1} bytes"
    )
    assert b64(raw) not in str(info.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "needs 'tag suite key-params', got 2 field(s)"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:QUJD", "tag 'x' is not a 1-9 digit number"),
        ("1 AES_CM_128_HMAC_SHA1_80 uri:https://kms/key", "key method 'uri' is not 'inline'"),
        ("1 AES_CM_128_HMAC_SHA1_80 WVNfX19zZWNyZXRfX19rZXlfX19oZXJlX19fMTIzNDU2", "no 'inline:' before the key (44 characters, not shown)"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64", f"inline key of {len('not*base64')} characters is not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|2^x", "key lifetime '2^x' is neither '2^N' nor a decimal number"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|1:0", "MKI length 0 is outside 1..128"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|256:1", "MKI value 256 does not fit in 1 byte(s)"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|1|2|3", "inline key has 3 '|' fields"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJD|1:4|2^31", "inline key field '2^31' is neither lifetime nor MKI"),
    ],
)
def test_malformed_attributes(value: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        CryptoAttribute.parse(value)
    assert reason in str(info.value)
    assert "WVNfX19z" not in str(info.value), "key material is never echoed"


def test_key_repr_and_str_hide_material() -> None:
    raw = material(30)
    attr = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{b64(raw)}|2^31|1:4")
    for text in (repr(attr.key), str(attr.key), repr(attr), str(attr)):
        assert raw[:16].hex() not in text and repr(raw[:16]) not in text and repr(raw[16:]) not in text
        assert b64(raw) not in text
    assert repr(attr.key) == "SdesKey(<16-byte key, 14-byte salt redacted>, lifetime=2147483648, mki=1:4)"


def test_redact_removes_every_key() -> None:
    keys = [b64(material(30, 1)), b64(material(46, 2), padded=False), b64(material(28, 3))]
    sdp = (
        "v=0\r\nm=audio 4000 RTP/SAVP 0\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{keys[0]}|2^31|1:4\r\n"
        f"a=crypto:2 AES_256_CM_HMAC_SHA1_32 INLINE:{keys[1]};inline:{keys[2]}\r\n"
    )
    out = redact(sdp)
    for key in keys:
        assert key not in out
        assert key[4:] not in out
    assert f"inline:{keys[0][:4]}…(redacted)|2^31|1:4\r\n" in out
    assert f"INLINE:{keys[1][:4]}…(redacted);inline:{keys[2][:4]}…(redacted)\r\n" in out
    assert redact("no keys here") == "no keys here"
