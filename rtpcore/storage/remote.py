"""A filter task's own S3 read (issue 12, point 3): a cluster worker range-reads the chunk bytes it filters.

The selection step decides the ranges from the sidecar indexes and leaves the bytes in S3 (a deferred choice);
the worker checks the object is still the one selected (size and ETag), range-reads the header and ranges with
the S3 client's connect/read deadlines into a worker-local temporary folder, checks the length, and removes the
folder once the filter is done. No shared disk is needed for the raw media; credentials come from the job's
settings and never appear in messages (the storage backend's errors name bucket and key only).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rtpcore.media.select import ChunkChoice
from rtpcore.pcap.index import FILE_HEADER_LEN
from rtpcore.storage.base import StorageIntegrityError, StorageNotFoundError
from rtpcore.storage.download import fetch_ranges, parse_s3_url, storage_for_url

if TYPE_CHECKING:
    from rtpcore.settings import Settings

__all__ = ["fetch_choice"]


def fetch_choice(choice: ChunkChoice, settings: Settings, folder: Path) -> Path:
    """folder/<chunk name>: the chunk's pcap header and the choice's ranges, read from S3 and verified."""
    if choice.origin is None or not choice.deferred:
        raise ValueError(f"{choice.source.name}: not an S3 chunk left for the filter task to read")
    key = parse_s3_url(choice.origin).key
    storage = storage_for_url(choice.origin, settings)
    expected = dict(choice.identity)
    info = storage.head(key)
    if info is None:
        raise StorageNotFoundError(f"{choice.origin}: no longer in S3 (it was there when the call's media was selected)")
    if info.size != expected.get("bytes") or (expected.get("etag") and info.etag != expected["etag"]):
        raise StorageIntegrityError(f"{choice.origin}: changed since the call's media was selected ({info.size} bytes, "
                                    f"was {expected.get('bytes')}); correlate again")
    dest = Path(folder) / choice.source.name
    ranges = choice.ranges or ()
    fetch_ranges(storage, key, ranges, dest)
    want = FILE_HEADER_LEN + sum(e - b for b, e in ranges)
    got = dest.stat().st_size
    if got != want:
        raise StorageIntegrityError(f"{choice.origin}: range reads gave {got} bytes, expected {want}")
    return dest
