"""SRTP/SRTCP receive contexts over libsrtp (via pylibsrtp), with libsrtp status codes mapped to rtpcore errors.

pylibsrtp 1.0 exposes four profiles and no ROC control. Its compiled binding statically links libsrtp
and exports every libsrtp symbol, so ctypes on the same loaded image (same global state) reaches
`srtp_set_stream_roc`, `srtp_get_stream_roc` and the AES-256 policy setters. The per-packet path
calls `srtp_unprotect` through pylibsrtp's cffi `lib` with a buffer and length cell allocated once.
"""
from __future__ import annotations

import ctypes
import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

import pylibsrtp
from pylibsrtp import ffi as _ffi
from pylibsrtp import lib as _lib

from rtpcore.errors import SrtpError
from rtpcore.sip.crypto import SRTP_SUITES

__all__ = [
    "SrtpError",
    "SrtpAuthError",
    "SrtpReplayError",
    "SUPPORTED_SUITES",
    "SrtpContext",
    "guess_roc",
]

# libsrtp srtp_err_status_t values (include/srtp.h).
STATUS_OK = 0
STATUS_BAD_PARAM = 2
STATUS_AUTH_FAIL = 7
STATUS_CIPHER_FAIL = 8
STATUS_REPLAY_FAIL = 9
STATUS_REPLAY_OLD = 10
STATUS_NO_CTX = 13
STATUS_PKT_IDX_OLD = 26

INITIAL_BUFFER = 2048
MIN_REPLAY_WINDOW = 64            # libsrtp rejects windows outside 64..0x7fff
MAX_REPLAY_WINDOW = 0x7FFF
MAX_ROC = 0xFFFFFFFF
SRTCP_INDEX_LEN = 4
RTP_SEQ_END = 4
ALT_SRTCP_TAG_LEN = 4             # the HMAC-SHA1-32 tag some phones wrongly put on SRTCP


class SrtpAuthError(SrtpError):
    """The packet failed authentication: wrong key, wrong suite, wrong ROC or a corrupted packet."""


class SrtpReplayError(SrtpError):
    """libsrtp's replay check refused the packet: a duplicate, or older than the replay window."""


@dataclass(frozen=True, slots=True)
class _Setup:
    """How to build a suite's policy: a pylibsrtp profile, or libsrtp setter names called through ctypes."""

    profile: int | None
    rtp_setter: str | None = None
    rtcp_setter: str | None = None
    alt_rtcp_setter: str | None = None   # 32-bit SRTCP tag, for phones that use it on the _32 suites


_CM = "srtp_crypto_policy_set_aes_cm_{bits}_hmac_sha1_{tag}"
_SETUPS: dict[str, _Setup] = {
    "AES_CM_128_HMAC_SHA1_80": _Setup(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
    # The profile gives RTCP an 80-bit tag (RFC 4568 §6.2.2); the alternate context uses 32 bits.
    "AES_CM_128_HMAC_SHA1_32": _Setup(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
                                      alt_rtcp_setter=_CM.format(bits=128, tag=32)),
    "AEAD_AES_128_GCM": _Setup(pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM),
    "AEAD_AES_256_GCM": _Setup(pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM),
}
# No AES-192: the libsrtp 2.7.0 in pylibsrtp 1.0.0 derives AES-192 session keys with AES-256 over
# key+salt (cisco/libsrtp#763), so it cannot decrypt RFC 6188 senders; tests/rtpcore/test_srtp.py shows it.
for _tag in (80, 32):
    _SETUPS[f"AES_256_CM_HMAC_SHA1_{_tag}"] = _Setup(
        None,
        rtp_setter=_CM.format(bits=256, tag=_tag),
        rtcp_setter=_CM.format(bits=256, tag=80),
        alt_rtcp_setter=_CM.format(bits=256, tag=32) if _tag == 32 else None,
    )


@functools.cache
def _native() -> ctypes.CDLL | None:
    """libsrtp as linked into pylibsrtp's binding, or None when that image does not export what we need."""
    try:
        native = ctypes.CDLL(pylibsrtp._binding.__file__)
        native.srtp_set_stream_roc.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
        native.srtp_set_stream_roc.restype = ctypes.c_int
        native.srtp_get_stream_roc.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
        native.srtp_get_stream_roc.restype = ctypes.c_int
        for setup in _SETUPS.values():
            for name in (setup.rtp_setter, setup.rtcp_setter, setup.alt_rtcp_setter):
                if name is not None:
                    setter = getattr(native, name)
                    setter.argtypes = [ctypes.c_void_p]
                    setter.restype = None
    except (OSError, AttributeError):
        return None
    return native


def _supported() -> frozenset[str]:
    """Suites we can build a context for; the AES-256 CM ones need the exported policy setters."""
    if _native() is not None:
        return frozenset(_SETUPS)
    return frozenset(name for name, setup in _SETUPS.items() if setup.profile is not None)


SUPPORTED_SUITES: frozenset[str] = _supported()


def _address(cdata: object) -> int:
    """A cffi pointer as an integer, for ctypes."""
    return int(_ffi.cast("uintptr_t", cdata))


def _status_text(rc: int) -> str:
    return pylibsrtp.ERRORS[rc] if 0 <= rc < len(pylibsrtp.ERRORS) else "unknown status"


def _require_native(what: str) -> ctypes.CDLL:
    native = _native()
    if native is None:
        raise SrtpError(f"{what} needs libsrtp symbols that pylibsrtp's binding ({pylibsrtp._binding.__file__}) does not export")
    return native


def _strip_mki(packet: bytes, mki_length: int, after: int) -> bytes:
    """Drop the MKI, which sits `after` bytes before the end; the tag does not cover it and libsrtp must not see it.

    AES-CM: between payload (SRTCP: index) and tag, RFC 3711 §3.1/§3.4. AEAD: last, after the tag
    (SRTCP: after the index), RFC 7714 §8.1/§9.1.
    """
    cut = len(packet) - after
    if cut - mki_length < 0:
        raise SrtpError(f"{len(packet)}-byte packet is too short to hold a {mki_length}-byte MKI")
    return packet[: cut - mki_length] + packet[cut:]


class _Session:
    """One libsrtp srtp_t holding one SSRC-specific stream; freed with the object."""

    __slots__ = ("handle", "srtp", "address")

    def __init__(self, policy: object) -> None:
        handle = _ffi.new("srtp_t *")
        rc = _lib.srtp_create(handle, policy)
        if rc != STATUS_OK:
            raise SrtpError(f"libsrtp refused the SRTP policy: {_status_text(rc)} (status {rc})")
        self.handle = _ffi.gc(handle, lambda h: _lib.srtp_dealloc(h[0]))
        self.srtp = handle[0]
        self.address = _address(handle[0])


class SrtpContext:
    """One sender's SRTP+SRTCP receive context for one SSRC (libsrtp keeps replay and ROC state per stream)."""

    __slots__ = (
        "suite", "ssrc", "mki_length", "replay_window",
        "_key", "_setup", "_rtp_tag_len", "_srtcp_tag_len", "_aead",
        "_session", "_rtcp_contexts", "_fresh", "_pending_roc",
        "_cdata", "_view", "_capacity", "_length",
    )

    def __init__(self, suite: str, master_key: bytes, master_salt: bytes, ssrc: int, *,
                 mki_length: int = 0, replay_window: int = 1024) -> None:
        if suite not in SUPPORTED_SUITES:
            raise SrtpError(f"SRTP suite {suite} is not supported; supported: {', '.join(sorted(SUPPORTED_SUITES))}")
        info = SRTP_SUITES[suite]
        if len(master_key) != info.key_len or len(master_salt) != info.salt_len:
            raise SrtpError(
                f"{suite} needs a {info.key_len}-byte master key and {info.salt_len}-byte salt, "
                f"got {len(master_key)} and {len(master_salt)} bytes"
            )
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC {ssrc} is not a 32-bit unsigned value")
        if mki_length < 0:
            raise ValueError(f"MKI length {mki_length} must not be negative")
        if not MIN_REPLAY_WINDOW <= replay_window <= MAX_REPLAY_WINDOW:
            raise ValueError(f"replay window {replay_window} is outside libsrtp's {MIN_REPLAY_WINDOW}..{MAX_REPLAY_WINDOW}")
        self.suite = suite
        self.ssrc = ssrc
        self.mki_length = mki_length
        self.replay_window = replay_window
        self._key = bytes(master_key) + bytes(master_salt)
        self._setup = _SETUPS[suite]
        self._rtp_tag_len = info.rtp_tag_len
        self._srtcp_tag_len = info.srtcp_tag_len
        self._aead = info.aead
        self._session = self._new_session(alt_rtcp=False)
        # SRTCP gets its own sessions (made on first use), so set_roc never resets the SRTCP replay state:
        # (session, tag length) in the order to try; the alternate 32-bit-tag one joins on first failure.
        self._rtcp_contexts: list[tuple[_Session, int]] = []
        self._fresh = True
        self._pending_roc = 0
        self._capacity = INITIAL_BUFFER
        self._cdata = _ffi.new("unsigned char[]", self._capacity)
        self._view = _ffi.buffer(self._cdata)
        self._length = _ffi.new("int *")

    def __repr__(self) -> str:
        return f"SrtpContext({self.suite}, ssrc=0x{self.ssrc:08x}, roc={self.roc})"

    def _new_session(self, *, alt_rtcp: bool) -> _Session:
        """Build the libsrtp session for our SSRC; the key copy handed to libsrtp is wiped afterwards."""
        setup = self._setup
        policy = _ffi.new("srtp_policy_t *")
        if setup.profile is not None:
            _lib.srtp_crypto_policy_set_from_profile_for_rtp(_ffi.addressof(policy.rtp), setup.profile)
            _lib.srtp_crypto_policy_set_from_profile_for_rtcp(_ffi.addressof(policy.rtcp), setup.profile)
        else:
            native = _require_native(f"the {self.suite} policy")
            assert setup.rtp_setter is not None and setup.rtcp_setter is not None
            getattr(native, setup.rtp_setter)(_address(_ffi.addressof(policy.rtp)))
            getattr(native, setup.rtcp_setter)(_address(_ffi.addressof(policy.rtcp)))
        if alt_rtcp:
            native = _require_native("a 32-bit SRTCP tag")
            assert setup.alt_rtcp_setter is not None
            getattr(native, setup.alt_rtcp_setter)(_address(_ffi.addressof(policy.rtcp)))
        key = _ffi.new("unsigned char[]", self._key)
        policy.key = key
        policy.ssrc.type = _lib.ssrc_specific
        policy.ssrc.value = self.ssrc
        policy.window_size = self.replay_window
        try:
            return _Session(policy)
        finally:
            _ffi.memmove(key, bytes(len(self._key)), len(self._key))

    def _grow(self, needed: int) -> None:
        self._capacity = max(needed, 2 * self._capacity)
        self._cdata = _ffi.new("unsigned char[]", self._capacity)
        self._view = _ffi.buffer(self._cdata)

    # -- RTP ---------------------------------------------------------------------------------------

    def unprotect_rtp(self, packet: bytes) -> bytes:
        """Verify and decrypt one SRTP packet; returns the RTP packet without tag and MKI."""
        if self.mki_length:
            packet = _strip_mki(packet, self.mki_length, 0 if self._aead else self._rtp_tag_len)
        n = len(packet)
        if n > self._capacity:
            self._grow(n)
        self._view[0:n] = packet
        length = self._length
        length[0] = n
        rc = _lib.srtp_unprotect(self._session.srtp, self._cdata, length)
        if rc:
            raise self._error(rc, "SRTP", packet)
        self._fresh = False
        return self._view[0:length[0]]

    def unprotect_rtp_or_none(self, packet: bytes) -> bytes | None:
        """unprotect_rtp for the hot loop: None instead of an error (unprotect_rtp says why; a refused packet
        leaves libsrtp's state unchanged, so asking again gives the same verdict)."""
        n = len(packet)
        if self.mki_length or n > self._capacity:
            try:
                return self.unprotect_rtp(packet)
            except SrtpError:
                return None
        self._view[0:n] = packet
        length = self._length
        length[0] = n
        if _lib.srtp_unprotect(self._session.srtp, self._cdata, length):
            return None
        self._fresh = False
        return self._view[0:length[0]]

    @property
    def roc(self) -> int:
        """The rollover counter of the highest packet accepted (the set ROC until a packet is)."""
        if self._fresh:
            return self._pending_roc
        native = _require_native("reading the SRTP ROC")
        value = ctypes.c_uint32()
        rc = native.srtp_get_stream_roc(self._session.address, self.ssrc, ctypes.byref(value))
        if rc:
            raise SrtpError(f"cannot read the ROC of SSRC 0x{self.ssrc:08x}: {_status_text(rc)} (status {rc})")
        return value.value

    def set_roc(self, roc: int) -> None:
        """Interpret the next RTP packet at this ROC; the RTP replay state starts afresh (SRTCP's is kept)."""
        if not 0 <= roc <= MAX_ROC:
            raise ValueError(f"ROC {roc} is not a 32-bit unsigned value")
        native = _require_native("setting the SRTP ROC")
        if not self._fresh:
            # libsrtp keeps a pending ROC until it jumps the index by more than 2^15: on a used stream a
            # nearby ROC would stay pending and break the next wrap. A new stream always jumps or starts at 0.
            self._session = self._new_session(alt_rtcp=False)
            self._fresh = True
        rc = native.srtp_set_stream_roc(self._session.address, self.ssrc, roc)
        if rc:
            raise SrtpError(f"cannot set ROC {roc} on SSRC 0x{self.ssrc:08x}: {_status_text(rc)} (status {rc})")
        self._pending_roc = roc

    # -- RTCP --------------------------------------------------------------------------------------

    def _rtcp_candidates(self) -> Iterator[tuple[int, _Session, int]]:
        """The remembered SRTCP context first, then the others, creating the 32-bit-tag one on demand."""
        if not self._rtcp_contexts:
            self._rtcp_contexts.append((self._new_session(alt_rtcp=False), self._srtcp_tag_len))
        yield from ((i, s, t) for i, (s, t) in enumerate(list(self._rtcp_contexts)))
        if len(self._rtcp_contexts) == 1 and self._setup.alt_rtcp_setter is not None:
            session = self._new_session(alt_rtcp=True)
            self._rtcp_contexts.append((session, ALT_SRTCP_TAG_LEN))
            yield 1, session, ALT_SRTCP_TAG_LEN

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Verify and decrypt one SRTCP packet; returns the RTCP compound without index, MKI and tag."""
        errors: list[SrtpError] = []
        for position, session, tag_len in self._rtcp_candidates():
            try:
                plain = self._unprotect_rtcp_with(session, tag_len, packet)
            except SrtpError as exc:
                # A wrong tag length reads E flag and index from the wrong bytes, so libsrtp may report
                # an auth failure, a replay or "can't check"; the next context decides.
                errors.append(exc)
                continue
            if position:
                self._rtcp_contexts.insert(0, self._rtcp_contexts.pop(position))
            return plain
        # A replay verdict from any layout means a duplicate; else an auth failure; else the first reason.
        raise min(errors, key=lambda e: 0 if isinstance(e, SrtpReplayError) else 1 if isinstance(e, SrtpAuthError) else 2)

    def _unprotect_rtcp_with(self, session: _Session, tag_len: int, packet: bytes) -> bytes:
        if self.mki_length:
            packet = _strip_mki(packet, self.mki_length, 0 if self._aead else tag_len)
        n = len(packet)
        if n > self._capacity:
            self._grow(n)
        self._view[0:n] = packet
        length = self._length
        length[0] = n
        rc = _lib.srtp_unprotect_rtcp(session.srtp, self._cdata, length)
        if rc:
            raise self._error(rc, "SRTCP", packet, tag_len=tag_len)
        return self._view[0:length[0]]

    # -- errors ------------------------------------------------------------------------------------

    def _error(self, rc: int, kind: str, packet: bytes, *, tag_len: int = 0) -> SrtpError:
        """The rtpcore error for a libsrtp status: what failed, for which SSRC and packet; never key bytes."""
        where = f"{kind} SSRC 0x{self.ssrc:08x}"
        if kind == "SRTP" and len(packet) >= RTP_SEQ_END:
            where += f" seq {struct.unpack_from('!H', packet, 2)[0]}"
        elif kind == "SRTCP" and len(packet) >= tag_len + SRTCP_INDEX_LEN:
            # AEAD puts the index after the tag (RFC 7714 §9.1), AES-CM before it (RFC 3711 §3.4).
            behind = 0 if self._aead else tag_len
            index = struct.unpack_from("!I", packet, len(packet) - behind - SRTCP_INDEX_LEN)[0] & 0x7FFFFFFF
            where += f" index {index} ({tag_len}-byte tag)"
        if rc == STATUS_AUTH_FAIL or (rc == STATUS_CIPHER_FAIL and self._aead):
            roc = f" at ROC {self.roc}" if kind == "SRTP" else ""
            return SrtpAuthError(f"{where}: authentication failed{roc}; wrong key, suite or ROC, or a corrupt packet")
        if rc == STATUS_REPLAY_FAIL:
            return SrtpReplayError(f"{where}: replay check failed, the packet index was already seen (duplicate)")
        if rc == STATUS_REPLAY_OLD:
            return SrtpReplayError(f"{where}: replay check failed, the packet is older than the {self.replay_window}-packet window")
        if rc == STATUS_NO_CTX and len(packet) >= 12:
            offset = 8 if kind == "SRTP" else 4
            other = struct.unpack_from("!I", packet, offset)[0]
            return SrtpError(f"{where}: the packet belongs to SSRC 0x{other:08x}, not to this context")
        if rc == STATUS_PKT_IDX_OLD:
            return SrtpError(f"{where}: packet index is too far behind the ROC set on this context")
        return SrtpError(f"{where}: {_status_text(rc)} (libsrtp status {rc}, {len(packet)}-byte packet)")


def guess_roc(suite: str, master_key: bytes, master_salt: bytes, ssrc: int, packet: bytes, *,
              max_roc: int = 1024, hint: int = 0, mki_length: int = 0) -> int | None:
    """The ROC (hint first, then 0..max_roc) under which the packet authenticates, for mid-call captures."""
    context = SrtpContext(suite, master_key, master_salt, ssrc, mki_length=mki_length)
    # A failed unprotect leaves a fresh stream fresh, so one context serves every try.
    for roc in chain((hint,), (r for r in range(max_roc + 1) if r != hint)):
        context.set_roc(roc)
        try:
            context.unprotect_rtp(packet)
        except SrtpAuthError:
            continue
        return roc
    return None
