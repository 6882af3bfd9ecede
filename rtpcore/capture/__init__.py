"""Capture sessions on disk: the chunk manifest and the repair step that follows a crash."""
from __future__ import annotations

from rtpcore.capture.manifest import MANIFEST_NAME, ChunkRecord, GapRecord, Manifest, ManifestState, OpenRecord
from rtpcore.capture.repair import RAW_DIR, RepairAction, RepairReport, repair_session

__all__ = [
    "MANIFEST_NAME",
    "RAW_DIR",
    "ChunkRecord",
    "GapRecord",
    "Manifest",
    "ManifestState",
    "OpenRecord",
    "RepairAction",
    "RepairReport",
    "repair_session",
]
