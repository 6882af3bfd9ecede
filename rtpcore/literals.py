"""The closed word sets passed between modules, typed once so mypy catches a misspelt direction, kind or side.

Plain str-valued Literals: JSON outputs and Prefect parameters keep the same strings (no Enum to serialise);
the runtime tuples that user input is checked against are derived from the Literals, so the two cannot drift.
"""
from __future__ import annotations

from typing import Literal, TypeGuard, get_args

# The call's direction as the user gives it: which side of the SBC the first INVITE came from.
Direction = Literal["inbound", "outbound"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)

# A UDP payload of a media leg (RFC 5761 demultiplexing): rtpcore.media.rtp.classify.
StreamKind = Literal["rtp", "rtcp"]

# The two ends of one SIP hop: "a" sent its first INVITE (upstream; the offerer unless the offer is late),
# "b" received it.
HopSide = Literal["a", "b"]

# The two ends of one media leg: the peer (carrier or core) and the SBC's media host.
LegSide = Literal["peer", "host"]

# Where capture chunks go: s3 (with automatic local fallback) or local disk only; also a Storage's kind.
StorageMode = Literal["s3", "local"]
STORAGE_MODES: tuple[StorageMode, ...] = get_args(StorageMode)


def is_direction(value: str) -> TypeGuard[Direction]:
    """Narrows a user-given string (CLI, flow parameter, truth.json) to a Direction."""
    return value in DIRECTIONS
