"""SIP signalling: messages, SDP, SDES keys, TCP reassembly and extraction from captures."""
from __future__ import annotations

from rtpcore.sip.capture import SipCapture, SipCaptureStats, SipPacket, read_sip, scan_sip
from rtpcore.sip.crypto import SRTP_SUITES, CryptoAttribute, SdesKey, SuiteInfo, redact, suite_info
from rtpcore.sip.message import SipFramer, SipMessage, looks_like_sip
from rtpcore.sip.sdp import MediaDescription, SessionDescription
from rtpcore.sip.tcp import TcpReassembler

__all__ = [
    "SRTP_SUITES",
    "CryptoAttribute",
    "MediaDescription",
    "SdesKey",
    "SessionDescription",
    "SipCapture",
    "SipCaptureStats",
    "SipFramer",
    "SipMessage",
    "SipPacket",
    "SuiteInfo",
    "TcpReassembler",
    "looks_like_sip",
    "read_sip",
    "redact",
    "scan_sip",
    "suite_info",
]
