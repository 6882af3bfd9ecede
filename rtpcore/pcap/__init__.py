"""Capture files: streaming pcap/pcapng reading and frame decoding down to UDP/TCP.

The names below load with their module on first use (PEP 562), so `rtpcore.pcap.index` or `.libpcap` alone
(the capture's start-up path) does not pay for the reader and the layer parsers.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtpcore.pcap.fragments import IpReassembler
    from rtpcore.pcap.layers import (
        IpPacket,
        TcpSegment,
        UdpDatagram,
        link_payload,
        parse_ip,
        parse_tcp,
        parse_udp,
        unwrap_tunnels,
    )
    from rtpcore.pcap.linktypes import (
        LINKTYPE_ETHERNET,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
        LINKTYPE_LOOP,
        LINKTYPE_NULL,
        LINKTYPE_RAW,
        SUPPORTED_LINKTYPES,
        linktype_name,
    )
    from rtpcore.pcap.reader import CaptureReader, Frame, open_capture

_HOMES = {
    "fragments": ("IpReassembler",),
    "layers": ("IpPacket", "TcpSegment", "UdpDatagram", "link_payload", "parse_ip", "parse_tcp", "parse_udp",
               "unwrap_tunnels"),
    "linktypes": ("LINKTYPE_ETHERNET", "LINKTYPE_IPV4", "LINKTYPE_IPV6", "LINKTYPE_LINUX_SLL", "LINKTYPE_LINUX_SLL2",
                  "LINKTYPE_LOOP", "LINKTYPE_NULL", "LINKTYPE_RAW", "SUPPORTED_LINKTYPES", "linktype_name"),
    "reader": ("CaptureReader", "Frame", "open_capture"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'rtpcore.pcap' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rtpcore.pcap.{module}"), name)
    globals()[name] = value
    return value
