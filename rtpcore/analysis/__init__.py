"""Call insight: per-stream RTP statistics (Wireshark-equal), E-model MOS, audio and DTMF from a media pcap."""
from __future__ import annotations

from rtpcore.analysis.call import CallAnalysis, StreamAnalysis, analyze_capture, write_audio

__all__ = ["CallAnalysis", "StreamAnalysis", "analyze_capture", "write_audio"]
