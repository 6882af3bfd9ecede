"""RPCAP: capture on a remote rpcapd (libpcap's remote capture daemon) — wire format and a blocking client."""
from __future__ import annotations

from rtpcore.rpcap.client import (
    CaptureStart,
    RpcapAuthError,
    RpcapClient,
    RpcapConnectError,
    RpcapConnectionLostError,
    RpcapError,
    RpcapFilterError,
    RpcapProtocolError,
)
from rtpcore.rpcap.framing import PacketStreamParser
from rtpcore.rpcap.protocol import (
    InterfaceAddress,
    OpenReply,
    RemoteInterface,
    RemotePacket,
    Stats,
)

__all__ = [
    "CaptureStart",
    "InterfaceAddress",
    "OpenReply",
    "PacketStreamParser",
    "RemoteInterface",
    "RemotePacket",
    "RpcapAuthError",
    "RpcapClient",
    "RpcapConnectError",
    "RpcapConnectionLostError",
    "RpcapError",
    "RpcapFilterError",
    "RpcapProtocolError",
    "Stats",
]
