"""Capture files: streaming pcap/pcapng reading and frame decoding down to UDP/TCP."""
from __future__ import annotations

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

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "SUPPORTED_LINKTYPES",
    "CaptureReader",
    "Frame",
    "IpPacket",
    "IpReassembler",
    "TcpSegment",
    "UdpDatagram",
    "link_payload",
    "linktype_name",
    "open_capture",
    "parse_ip",
    "parse_tcp",
    "parse_udp",
    "unwrap_tunnels",
]
