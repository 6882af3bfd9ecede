"""SDES a=crypto attributes (RFC 4568) and the SRTP suites they name (RFC 4568, 6188, 7714)."""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

KEY_METHOD_INLINE = "inline:"
MAX_TAG_DIGITS = 9
MAX_MKI_LENGTH = 128
REDACTED_PREFIX_CHARS = 4
REDACTED_MARK = "…(redacted)"


@dataclass(frozen=True, slots=True)
class SuiteInfo:
    """Key, salt and tag sizes in bytes: what SRTP needs to build a policy for the suite."""

    name: str
    key_len: int
    salt_len: int
    rtp_tag_len: int
    srtcp_tag_len: int
    aead: bool

    @property
    def inline_len(self) -> int:
        """Bytes of the decoded inline key: master key followed by master salt."""
        return self.key_len + self.salt_len


SRTP_SUITES: dict[str, SuiteInfo] = {
    info.name: info
    for info in (
        # The SRTCP tag of the _32 suites stays 80-bit (RFC 4568 §6.2.2).
        SuiteInfo("AES_CM_128_HMAC_SHA1_80", 16, 14, 10, 10, False),
        SuiteInfo("AES_CM_128_HMAC_SHA1_32", 16, 14, 4, 10, False),
        SuiteInfo("AES_192_CM_HMAC_SHA1_80", 24, 14, 10, 10, False),
        SuiteInfo("AES_192_CM_HMAC_SHA1_32", 24, 14, 4, 10, False),
        SuiteInfo("AES_256_CM_HMAC_SHA1_80", 32, 14, 10, 10, False),
        SuiteInfo("AES_256_CM_HMAC_SHA1_32", 32, 14, 4, 10, False),
        SuiteInfo("AEAD_AES_128_GCM", 16, 12, 16, 16, True),
        SuiteInfo("AEAD_AES_256_GCM", 32, 12, 16, 16, True),
    )
}

# Pre-RFC 6188 spellings still sent by FreeSWITCH, eXosip2 and SIPSorcery-based stacks.
SUITE_ALIASES: dict[str, str] = {
    "AES_CM_192_HMAC_SHA1_80": "AES_192_CM_HMAC_SHA1_80",
    "AES_CM_192_HMAC_SHA1_32": "AES_192_CM_HMAC_SHA1_32",
    "AES_CM_256_HMAC_SHA1_80": "AES_256_CM_HMAC_SHA1_80",
    "AES_CM_256_HMAC_SHA1_32": "AES_256_CM_HMAC_SHA1_32",
}

_BASE64_KEY = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# Everything up to the next '|', ';' or blank is key material, base64 or not: a malformed key is still a key.
_INLINE_IN_TEXT = re.compile(r"(inline:)([^\s|;]+)", re.I)
_LIFETIME_POWER = re.compile(r"2\^(\d{1,3})")


# Kinds of a=crypto problems: stable codes for `legs --json` (key_problems) and the generator's truth.
KIND_MALFORMED = "malformed"
KIND_BAD_BASE64 = "bad-base64"
KIND_KEY_LENGTH = "key-length"
KIND_NO_INLINE_KEY = "no-inline-key"
KIND_BAD_LIFETIME = "bad-lifetime"
KIND_BAD_MKI = "bad-mki"
KIND_UNKNOWN_SUITE = "unknown-suite"
KIND_REFUSED_SUITE = "refused-suite"
# AES_192: the libsrtp 2.7 inside pylibsrtp derives its session keys wrongly (cisco/libsrtp#763).
REFUSED_SUITES: dict[str, str] = {
    "AES_192_CM_HMAC_SHA1_80": "AES_192_CM is refused: the bundled libsrtp derives its keys wrongly (cisco/libsrtp#763)",
    "AES_192_CM_HMAC_SHA1_32": "AES_192_CM is refused: the bundled libsrtp derives its keys wrongly (cisco/libsrtp#763)",
}


class CryptoLineError(ValueError):
    """An a=crypto line that cannot be used; `kind` is one of the KIND_* codes, the message never holds key bytes."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def suite_info(name: str) -> SuiteInfo | None:
    """The SuiteInfo for a suite name as written in SDP (any case, old aliases too), else None."""
    upper = name.upper()
    return SRTP_SUITES.get(SUITE_ALIASES.get(upper, upper))


@dataclass(frozen=True, slots=True)
class SdesKey:
    """One inline master key + salt; repr and str show sizes only, never key material."""

    master_key: bytes
    master_salt: bytes
    lifetime: int | None
    mki: int | None
    mki_length: int | None

    def __repr__(self) -> str:
        mki = "" if self.mki is None else f", mki={self.mki}:{self.mki_length}"
        lifetime = "" if self.lifetime is None else f", lifetime={self.lifetime}"
        return f"SdesKey(<{len(self.master_key)}-byte key, {len(self.master_salt)}-byte salt redacted>{lifetime}{mki})"

    __str__ = __repr__

    @property
    def key_and_salt(self) -> bytes:
        """Master key followed by master salt, the layout libsrtp's policy key expects."""
        return self.master_key + self.master_salt


def _decode_base64(text: str, *, suite: str) -> bytes:
    """Base64 with or without '=' padding; the error never echoes the key."""
    if _BASE64_KEY.fullmatch(text) is None:
        raise CryptoLineError(KIND_BAD_BASE64, f"{suite}: inline key of {len(text)} characters is not base64")
    unpadded = text.rstrip("=")
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error as exc:
        raise CryptoLineError(
            KIND_BAD_BASE64, f"{suite}: inline key of {len(text)} characters is not valid base64 ({exc})"
        ) from None


def _parse_lifetime(text: str) -> int:
    """'2^31' or a decimal packet count."""
    power = _LIFETIME_POWER.fullmatch(text)
    if power is not None:
        return 2 ** int(power.group(1))
    if text.isdigit():
        return int(text)
    raise CryptoLineError(KIND_BAD_LIFETIME, f"key lifetime {text!r} is neither '2^N' nor a decimal number")


def _parse_mki(text: str) -> tuple[int, int]:
    """'value:length' → (value, length in bytes 1..128)."""
    value, _, length = text.partition(":")
    if not value.isdigit() or not length.isdigit():
        raise CryptoLineError(KIND_BAD_MKI, f"MKI {text!r} is not 'value:length'")
    mki, mki_length = int(value), int(length)
    if not 1 <= mki_length <= MAX_MKI_LENGTH:
        raise CryptoLineError(KIND_BAD_MKI, f"MKI length {mki_length} is outside 1..{MAX_MKI_LENGTH}")
    if mki >= 256 ** mki_length:
        raise CryptoLineError(KIND_BAD_MKI, f"MKI value {mki} does not fit in {mki_length} byte(s)")
    return mki, mki_length


MAX_SHOWN_METHOD = 12  # a key method is a short word (inline, uri); anything longer may be key material


def _parse_key_param(param: str, suite: str, info: SuiteInfo | None) -> SdesKey:
    """One 'inline:KEY[|lifetime][|MKI:len]' key-param."""
    if not param.lower().startswith(KEY_METHOD_INLINE):
        method, colon, _ = param.partition(":")
        if not colon or len(method) > MAX_SHOWN_METHOD:  # no "method:" at all: the token is most likely the key itself
            raise CryptoLineError(KIND_NO_INLINE_KEY, f"{suite}: no 'inline:' before the key ({len(param)} characters, "
                                                      "not shown)")
        raise CryptoLineError(KIND_NO_INLINE_KEY, f"{suite}: key method {method!r} is not 'inline'")
    key_b64, *fields = param[len(KEY_METHOD_INLINE):].split("|")
    if len(fields) > 2:
        raise CryptoLineError(KIND_MALFORMED, f"{suite}: inline key has {len(fields)} '|' fields; at most lifetime and MKI")
    lifetime: int | None = None
    mki: int | None = None
    mki_length: int | None = None
    for number, field in enumerate(fields):
        if ":" in field:
            mki, mki_length = _parse_mki(field)
        elif number == 0 and mki is None:
            lifetime = _parse_lifetime(field)
        else:
            raise CryptoLineError(KIND_BAD_LIFETIME, f"{suite}: inline key field {field!r} is neither lifetime nor MKI")
    raw = _decode_base64(key_b64, suite=suite)
    if info is None:
        return SdesKey(raw, b"", lifetime, mki, mki_length)
    if len(raw) != info.inline_len:
        raise CryptoLineError(
            KIND_KEY_LENGTH,
            f"{suite} needs a {info.inline_len}-byte inline key ({info.key_len}-byte key + "
            f"{info.salt_len}-byte salt) but the key decodes to {len(raw)} bytes"
        )
    return SdesKey(raw[: info.key_len], raw[info.key_len:], lifetime, mki, mki_length)


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One a=crypto line: tag, suite, one or more inline keys, session parameters."""

    tag: int
    suite: str
    keys: tuple[SdesKey, ...]
    session_params: tuple[str, ...]

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value after "a=crypto:"; unknown suites parse but are not `supported`."""
        parts = value.strip().split()
        if len(parts) < 3:
            kind = KIND_NO_INLINE_KEY if len(parts) == 2 else KIND_MALFORMED
            raise CryptoLineError(kind, f"a=crypto needs 'tag suite key-params', got {len(parts)} field(s)")
        tag_text, suite, key_params, *session_params = parts
        if not tag_text.isdigit() or len(tag_text) > MAX_TAG_DIGITS:
            raise CryptoLineError(KIND_MALFORMED, f"a=crypto tag {tag_text!r} is not a 1-{MAX_TAG_DIGITS} digit number")
        info = suite_info(suite)
        keys = tuple(_parse_key_param(param, suite, info) for param in key_params.split(";") if param)
        if not keys:
            raise CryptoLineError(KIND_NO_INLINE_KEY, f"{suite}: a=crypto has no inline key")
        return cls(int(tag_text), suite, keys, tuple(session_params))

    @property
    def suite_info(self) -> SuiteInfo | None:
        """Sizes for the suite, resolving old alias spellings; None when unknown."""
        return suite_info(self.suite)

    @property
    def supported(self) -> bool:
        """True when the suite is one we can decrypt."""
        return self.suite_info is not None

    @property
    def canonical_suite(self) -> str:
        """The suite's canonical name (old aliases resolved) when known, else as written: what contexts are keyed by."""
        info = self.suite_info
        return info.name if info is not None else self.suite

    @property
    def key(self) -> SdesKey:
        """The first (usually only) inline key."""
        return self.keys[0]

    def unusable(self) -> CryptoLineError | None:
        """Why a line that parsed still cannot decrypt (unknown or refused suite), else None."""
        info = self.suite_info
        if info is None:
            known = ", ".join(n for n in SRTP_SUITES if n not in REFUSED_SUITES)
            return CryptoLineError(KIND_UNKNOWN_SUITE, f"suite {self.suite} is unknown; SDES suites we decrypt: {known}")
        if info.name in REFUSED_SUITES:
            return CryptoLineError(KIND_REFUSED_SUITE, REFUSED_SUITES[info.name])
        return None


@dataclass(frozen=True, slots=True)
class CryptoProblem:
    """One a=crypto line of an SDP that cannot be used: where it is, what it says (redacted) and why."""

    line: int                    # 1-based line number in the SDP body
    media: str                   # the m= section it belongs to ("audio")
    text: str                    # the line, key material redacted
    kind: str                    # a KIND_* code
    reason: str                  # plain words, no key material

    def describe(self) -> str:
        """'SDP line 12 a=crypto:1 … (redacted): why' for findings and warnings."""
        return f"SDP line {self.line} {self.text}: {self.reason}"


def redact_crypto_line(value: str) -> str:
    """An a=crypto value as 'a=crypto:…' with the key of every key-param redacted, whatever its method (inline,
    uri, a malformed one); lifetime and MKI fields stay, they are not secret."""
    parts = value.split()
    if len(parts) >= 3:
        params = []
        for param in parts[2].split(";"):
            method, sep, rest = param.partition(":")
            key, *fields = rest.split("|")
            shown = f"{key[:REDACTED_PREFIX_CHARS]}{REDACTED_MARK}" if sep else f"{method[:REDACTED_PREFIX_CHARS]}{REDACTED_MARK}"
            params.append("|".join([f"{method}:{shown}" if sep else shown, *fields]))
        parts[2] = ";".join(params)
    return "a=crypto:" + " ".join(parts)


def redact(text: str) -> str:
    """Hide every inline key in text, keeping its first characters so two keys can be told apart."""
    return _INLINE_IN_TEXT.sub(
        lambda m: f"{m.group(1)}{m.group(2)[:REDACTED_PREFIX_CHARS]}{REDACTED_MARK}", text
    )
