"""Which SDES key decrypts a stream: candidate keys per negotiation window, one bounded ROC search per key and
window, and the stream's key status (authenticated / wrong key / no key / not SRTP / clear)."""
from __future__ import annotations

from dataclasses import dataclass, field

from rtpcore.errors import SrtpError
from rtpcore.literals import StreamKind
from rtpcore.media.srtp import SUPPORTED_SUITES, SrtpAuthError, SrtpContext, SrtpReplayError, guess_roc
from rtpcore.sip.crypto import CryptoAttribute

__all__ = [
    "MAX_ROC_GUESS", "KEY_PROBE_PACKETS", "NEVER_NS", "DUPLICATE",
    "KEY_AUTHENTICATED", "KEY_WRONG", "KEY_NONE", "KEY_NOT_SRTP", "KEY_CLEAR", "KEY_STATUSES",
    "SenderKeys", "KeyState",
]

MAX_ROC_GUESS = 4096
# A key gets this many of a stream's packets (each with one bounded ROC search) per negotiation window; after
# that the stream is "wrong key" and its packets pass through undecrypted without further searches.
KEY_PROBE_PACKETS = 3
NEVER_NS = 2**63
# The stream's key status (StreamStats.key), as the report prints it.
KEY_AUTHENTICATED = "authenticated"
KEY_WRONG = "wrong key"
KEY_NONE = "no key"
KEY_NOT_SRTP = "not SRTP"
KEY_CLEAR = "clear"
KEY_STATUSES = (KEY_AUTHENTICATED, KEY_WRONG, KEY_NONE, KEY_NOT_SRTP, KEY_CLEAR)
# unprotect's answer for a packet libsrtp's replay check refused: the caller counts a duplicate.
DUPLICATE = b"<replayed SRTP packet>"


@dataclass(slots=True)
class SenderKeys:
    """The keys one side may send with on one leg: (window start, window end, crypto) per negotiation, newest last."""

    suite: str | None
    keys: list[tuple[int, int, CryptoAttribute]] = field(default_factory=list)
    srtp: bool = False  # SRTP was negotiated for this side, with or without a usable key

    @property
    def usable(self) -> bool:
        """True when there is a suite and at least one key to try."""
        return bool(self.suite and self.keys)

    def candidates(self, ts_ns: int) -> list[CryptoAttribute]:
        """Keys in force at ts first (newest first), then the others: a rekey's switch time is not exact."""
        inside = [c for s, e, c in reversed(self.keys) if s <= ts_ns <= e]
        rest = [c for s, e, c in reversed(self.keys) if c not in inside]
        seen: list[CryptoAttribute] = []
        for c in inside + rest:
            if c not in seen:
                seen.append(c)
        return seen


@dataclass(slots=True)
class KeyState:
    """One stream's decryption state: the context that authenticated it, and the probe budget of each key."""

    sender: SenderKeys | None
    ssrc: int
    where: str                            # "carrier 198.51.100.10:30000 → 10.77.1.1:40000", for warnings
    ctx: SrtpContext | None = None
    crypto: CryptoAttribute | None = None
    gave_up: bool = False                 # the suite cannot be decrypted here (warned once)
    failures: dict[CryptoAttribute, int] = field(default_factory=dict)  # packets each key failed on, this window
    window_ns: int = -1                   # start of the newest negotiation window the budget was granted for
    wrong_key: bool = False               # every candidate key used up its probes: no more ROC searches

    @property
    def roc(self) -> int:
        """The authenticated context's ROC, 0 before any packet authenticated."""
        return self.ctx.roc if self.ctx is not None else 0

    def unprotect(self, kind: StreamKind, payload: bytes, ts: int, warnings: list[str]) -> bytes | None:
        """Plaintext, DUPLICATE for a replay, or None when no key authenticates the packet (the caller decides
        between clear RTCP and an authentication failure)."""
        if self.ctx is not None:
            try:
                return self.ctx.unprotect_rtp(payload) if kind == "rtp" else self.ctx.unprotect_rtcp(payload)
            except SrtpReplayError:
                return DUPLICATE
            except SrtpAuthError:
                pass
            except SrtpError as exc:
                warnings.append(f"{self.where}: {exc}")
                return None
        for crypto in self._keys_to_try(ts):
            if crypto is self.crypto and self.ctx is not None:
                continue
            ctx = self._context(crypto, kind, payload, warnings)
            plain: bytes | None = None
            if ctx is not None:
                try:
                    plain = ctx.unprotect_rtp(payload) if kind == "rtp" else ctx.unprotect_rtcp(payload)
                except SrtpError:
                    plain = None
            if plain is None:
                self.failures[crypto] = self.failures.get(crypto, 0) + 1
                continue
            self.ctx, self.crypto = ctx, crypto
            self.failures.clear()
            self.wrong_key = False
            return plain
        if self.ctx is None and not self._keys_to_try(ts):
            self.wrong_key = True
        return None

    def _keys_to_try(self, ts: int) -> list[CryptoAttribute]:
        """Candidate keys with probes left; a newly opened negotiation window (rekey) grants every key one more round."""
        assert self.sender is not None
        opened = [s for s, _, _ in self.sender.keys if self.window_ns < s <= ts]
        if opened:
            self.window_ns = max(opened)
            self.failures.clear()
        return [c for c in self.sender.candidates(ts) if self.failures.get(c, 0) < KEY_PROBE_PACKETS]

    def next_window(self) -> int:
        """When the next negotiation window opens for this sender (a rekey may fit), else NEVER_NS."""
        starts = [s for s, _, _ in self.sender.keys if s > self.window_ns] if self.sender else []
        return min(starts, default=NEVER_NS)

    def status(self, decrypted: int, clear: int, packets: int) -> str:
        """What the user reads per stream: did the SDES key authenticate it, and if not, why not."""
        sender = self.sender
        if decrypted:
            return KEY_AUTHENTICATED
        if sender is None or not (sender.suite or sender.srtp):
            return KEY_NOT_SRTP
        if not sender.keys or self.gave_up:
            return KEY_NONE
        if clear and clear == packets:
            return KEY_CLEAR
        return KEY_WRONG

    def _context(self, crypto: CryptoAttribute, kind: StreamKind, payload: bytes, warnings: list[str]) -> SrtpContext | None:
        """A receive context for this key, the ROC found by one bounded search for a capture that starts mid-call."""
        suite = crypto.canonical_suite
        if suite not in SUPPORTED_SUITES:
            if not self.gave_up:
                warnings.append(f"{self.where}: SRTP suite {crypto.suite} is not supported; written undecrypted")
                self.gave_up = True
            return None
        key = crypto.keys[0]
        mki = key.mki_length or 0
        try:
            ctx = SrtpContext(suite, key.master_key, key.master_salt, self.ssrc, mki_length=mki)
            if kind == "rtp":
                roc = guess_roc(suite, key.master_key, key.master_salt, self.ssrc, payload, max_roc=MAX_ROC_GUESS,
                                mki_length=mki)
                if roc is None:
                    return None
                ctx.set_roc(roc)
            return ctx
        except SrtpError as exc:
            warnings.append(f"{self.where}: {exc}")
            return None
