"""Call insight: per-stream RTP statistics (Wireshark-equal), E-model MOS, audio and DTMF from a media pcap."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtpcore.analysis.call import CallAnalysis, StreamAnalysis, analyze_capture, write_audio

__all__ = ["CallAnalysis", "StreamAnalysis", "analyze_capture", "write_audio"]


def __getattr__(name: str) -> Any:
    """Loaded on first use, not with the package: every `rtphelper` command imports rtpcore.analysis.cli (issue 12)."""
    if name in __all__:
        from rtpcore.analysis import call

        return getattr(call, name)
    raise AttributeError(f"module 'rtpcore.analysis' has no attribute {name!r}")
