"""Call insight: per-stream RTP statistics (Wireshark-equal), E-model MOS, audio and DTMF from a media pcap."""
from __future__ import annotations
