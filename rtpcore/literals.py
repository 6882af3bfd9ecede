"""The closed word sets passed between modules, typed once so mypy catches a misspelt direction, kind or side.

Plain str-valued Literals: JSON outputs and Prefect parameters keep the same strings (no Enum to serialise),
and the runtime tuples below are derived from the Literals so the two cannot drift.
"""
from __future__ import annotations

from typing import Literal, TypeGuard, get_args

# The call's direction as the user gives it: which side of the SBC the first INVITE came from.
Direction = Literal["inbound", "outbound"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)

# A UDP payload of a media leg (RFC 5761 demultiplexing): rtpcore.media.rtp.classify.
StreamKind = Literal["rtp", "rtcp"]
STREAM_KINDS: tuple[StreamKind, ...] = get_args(StreamKind)

# The two ends of one SIP hop: "a" sent the hop's first INVITE (upstream, the offerer), "b" received it.
HopSide = Literal["a", "b"]
HOP_SIDES: tuple[HopSide, ...] = get_args(HopSide)

# The two ends of one media leg: the peer (carrier or core) and the SBC's media host.
LegSide = Literal["peer", "host"]
LEG_SIDES: tuple[LegSide, ...] = get_args(LegSide)

# Where capture chunks go: s3 (with automatic local fallback) or local disk only; also a Storage's kind.
StorageMode = Literal["s3", "local"]
STORAGE_MODES: tuple[StorageMode, ...] = get_args(StorageMode)


def is_direction(value: str) -> TypeGuard[Direction]:
    """Narrows a user-given string (CLI, flow parameter, truth.json) to a Direction."""
    return value in DIRECTIONS


def is_stream_kind(value: str) -> TypeGuard[StreamKind]:
    """Narrows a string read back from JSON to a StreamKind."""
    return value in STREAM_KINDS


def is_storage_mode(value: str) -> TypeGuard[StorageMode]:
    """Narrows a string from settings or a CLI option to a StorageMode."""
    return value in STORAGE_MODES
