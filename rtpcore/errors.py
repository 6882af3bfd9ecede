"""One root exception for rtpcore, with category bases (modelled on httpx's hierarchy)."""
from __future__ import annotations


class RtpCoreError(Exception):
    """Root of every error rtpcore raises on purpose; the CLI prints it as one line and exits 2."""


class InputError(RtpCoreError):
    """The user handed us something unusable: a file, a field, a selection."""


class ConfigError(InputError):
    """hosts.yaml, runtime.env or an RTPHELPER_* variable is invalid; the message names the place."""


class PcapError(InputError):
    """A capture file cannot be read: not a pcap, truncated, unsupported link type."""


class PcapFormatError(PcapError):
    """The file is not a pcap/pcapng file at all, or a block/record header is corrupt."""


class TruncatedCaptureError(PcapError):
    """The file ends in the middle of a record; `packets_read` good records came before `offset`."""

    def __init__(self, message: str, *, packets_read: int, offset: int) -> None:
        super().__init__(message)
        self.packets_read = packets_read
        self.offset = offset


class UnsupportedLinkTypeError(PcapError):
    """The capture's link-layer header type is one we cannot decode."""

    def __init__(self, message: str, *, linktype: int) -> None:
        super().__init__(message)
        self.linktype = linktype


class SipError(InputError):
    """The SIP capture does not hold a call we can use (no INVITE, no SDP, ambiguous selection)."""


class CallSelectionError(SipError):
    """Several calls match and no --call-id/--number narrowed them; the message lists them."""


class DirectionMismatchError(SipError):
    """The chosen direction does not fit the signalling; the message names the addresses seen."""


class MediaError(RtpCoreError):
    """Media correlation or decryption failed."""


class NoMediaMatchError(MediaError, InputError):
    """No media packet matched the call's legs."""


class BpfBuildError(MediaError):
    """Our own media filter could not be built or compiled: our bug, not the capture's; names the endpoint."""


class SrtpError(MediaError):
    """SRTP keying or decryption failure, translated from pylibsrtp at the boundary."""


class CaptureError(RtpCoreError):
    """A remote capture failed (RPCAP host unreachable, auth refused, filter rejected)."""


class StorageError(RtpCoreError):
    """Local disk or S3 storage failed."""
