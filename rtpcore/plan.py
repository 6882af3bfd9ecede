"""The leg plan: which media endpoints, time windows and SDES keys belong to one call."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from rtpcore.literals import Direction, LegSide
from rtpcore.sip.crypto import CryptoAttribute

LEG_CARRIER = "carrier"
LEG_CORE = "core"
LEG_ORDER = (LEG_CARRIER, LEG_CORE)


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """One transport address as announced in SDP."""

    ip: str
    port: int

    def __str__(self) -> str:
        if ":" in self.ip:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Inverse of str(): 'ip:port' or '[v6]:port'."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"endpoint {text!r} is not ip:port")
        host = host.strip("[]")
        ipaddress.ip_address(host)
        return cls(host, int(port))


@dataclass(frozen=True, slots=True)
class MediaSide:
    """What one side of a negotiation announced: where it receives, and the key it sends with."""

    rtp: Endpoint
    rtcp: Endpoint
    rtcp_mux: bool
    crypto: CryptoAttribute | None = field(default=None, repr=False)


# -- SDES key diagnosis (wt-keys) ----------------------------------------------------------------------
KEYS_USABLE = "usable"          # every SRTP negotiation has a usable key for both directions
KEYS_PARTIAL = "partial"        # some direction (or negotiation) has no usable key
KEYS_NONE = "none"              # SRTP, and not one usable key: nothing will decrypt
SIDE_PEER: LegSide = "peer"
SIDE_HOST: LegSide = "host"


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """One a=crypto line of the call's SDP that cannot be used, and where it was sent: never the key itself."""

    message: str                # "INVITE", "183 INVITE", "200 INVITE" ...
    side: LegSide               # SIDE_PEER or SIDE_HOST: who sent the SDP
    line: int | None            # SDP line number; None when the problem is a missing line
    kind: str                   # rtpcore.sip.crypto KIND_* code, or "no-crypto"
    detail: str                 # redacted line and reason, in plain words

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "side": self.side, "line": self.line, "problem": self.kind}


@dataclass(frozen=True, slots=True)
class Negotiation:
    """One completed offer/answer on a leg, with the window in which its media may flow."""

    offer_ns: int
    answer_ns: int
    start_ns: int  # window start (margin included)
    end_ns: int  # window end (margin included)
    peer: MediaSide  # the carrier or core side
    host: MediaSide  # the media host side
    proto: str  # RTP/AVP, RTP/SAVP, ...
    srtp_suite: str | None
    dtls: bool = False  # a=fingerprint without a=crypto: DTLS-SRTP, no SDES keys to use
    key_problems: tuple[KeyProblem, ...] = ()  # unusable a=crypto lines in this offer/answer

    @property
    def is_srtp(self) -> bool:
        """SRTP was negotiated (SAVP profile), whether or not a usable key came with it."""
        return "SAVP" in self.proto.upper()


@dataclass(frozen=True, slots=True)
class Leg:
    """A media leg between the media host and one peer (carrier or core)."""

    name: str
    media_host: str
    peer: str
    call_ids: tuple[str, ...]
    negotiations: tuple[Negotiation, ...]

    @property
    def endpoints(self) -> list[str]:
        """RTP endpoints of both sides, per negotiation peer first, first occurrence kept."""
        seen: dict[str, None] = {}
        for n in self.negotiations:
            for ep in (n.peer.rtp, n.host.rtp):
                seen.setdefault(str(ep), None)
        return list(seen)

    @property
    def srtp_suite(self) -> str | None:
        """Suite of the first SRTP negotiation, the one a user sees in the summary."""
        return next((n.srtp_suite for n in self.negotiations if n.srtp_suite), None)

    @property
    def start_ns(self) -> int:
        return min(n.start_ns for n in self.negotiations)

    @property
    def end_ns(self) -> int:
        return max(n.end_ns for n in self.negotiations)

    @property
    def key_problems(self) -> list[KeyProblem]:
        """Every unusable a=crypto line of the leg's negotiations, first occurrence kept."""
        return list(dict.fromkeys(p for n in self.negotiations for p in n.key_problems))

    @property
    def srtp_keys(self) -> str | None:
        """Whether the SDES keys can decrypt the leg: KEYS_USABLE / KEYS_PARTIAL / KEYS_NONE, None when not SRTP."""
        srtp = [n for n in self.negotiations if n.is_srtp]
        if not srtp:
            return None
        keyed = [side.crypto is not None for n in srtp for side in (n.peer, n.host)]
        if all(keyed):
            return KEYS_USABLE
        return KEYS_PARTIAL if any(keyed) else KEYS_NONE

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "media_host": self.media_host,
            "peer": self.peer,
            "endpoints": self.endpoints,
            "srtp_suite": self.srtp_suite,
            # wt-keys: SDES key diagnosis, the same fields on every leg.
            "srtp_keys": self.srtp_keys,
            "key_problems": [p.to_json() for p in self.key_problems],
        }


@dataclass(frozen=True, slots=True)
class LegPlan:
    """Everything the media stage needs to know about one call; keys stay inside, never in to_json()."""

    call_id: str
    call_ids: tuple[str, ...]
    direction: Direction
    legs: tuple[Leg, ...]
    start_ns: int  # first SIP message of the call
    end_ns: int  # last SIP message of the call
    warnings: tuple[str, ...] = ()
    # wt-parsing: what the media showed about the plan (learned peers, ambiguities); the report lists them.
    findings: tuple[str, ...] = ()

    def leg(self, name: str) -> Leg | None:
        return next((leg for leg in self.legs if leg.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "call_ids": list(self.call_ids),
            "direction": self.direction,
            "legs": [leg.to_json() for leg in self.legs],
        }
