"""A local capture session's copy in S3: chunks its raw/ folder no longer holds are read from it, outputs go to it.

In S3 mode the upload queue removes the local copy of uploaded chunks to keep the spool under
RTPHELPER_LOCAL_SPOOL_MAX_BYTES, so a long capture's folder keeps only its newest chunks. A correlation given that
folder must not read what is left and call it the call's media: the chunks in the call's time are range-read from
the session in S3, and a chunk that is neither on disk nor uploaded stops the run, named.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rtpcore.errors import InputError, StorageError

if TYPE_CHECKING:
    from rtpcore.media.select import ChunkChoice, Endpoint, Span
    from rtpcore.settings import Settings

__all__ = ["AbsentChunk", "MissingChunkError", "absent_chunks", "emptied_session", "fetch_absent", "uploaded_to"]

log = logging.getLogger(__name__)

RAW_DIR = "raw"
MANIFEST_NAME = "manifest.jsonl"   # rtpcore.capture.manifest's, not imported for folders that have none
QUEUE_LOCATION = ".upload-queue/location.json"   # rtpcore.storage.queue's QUEUE_DIR/LOCATION_FILE
RAW_KEY_PART = "/raw/"
EVICTED_WHY = "removed locally after its upload (RTPHELPER_LOCAL_SPOOL_MAX_BYTES)"


class MissingChunkError(InputError):
    """A chunk in the call's time is listed by the session's manifest but is neither on disk nor in S3."""


@dataclass(frozen=True, slots=True)
class AbsentChunk:
    """One chunk of a session's manifest that is not in its raw/ folder and may hold part of the call."""

    session: Path          # the session folder (manifest.jsonl, raw/, .upload-queue/)
    name: str              # the chunk's file name in raw/
    host: str
    first_ns: int | None
    last_ns: int | None
    key: str | None        # its object key when the upload queue verified the upload, else None

    @property
    def path(self) -> Path:
        return self.session / RAW_DIR / self.name

    @property
    def session_key(self) -> str | None:
        """The session's key prefix in the bucket (the object key up to /raw/)."""
        return self.key.rpartition(RAW_KEY_PART)[0] if self.key and RAW_KEY_PART in self.key else None


def _session_root(source: Path) -> Path | None:
    """The session folder of a raw/ folder or of a session folder given as media; None for anything else."""
    if source.name == RAW_DIR and source.is_dir():
        return source.parent
    return source if (source / RAW_DIR).is_dir() else None


def emptied_session(source: Path) -> bool:
    """A session folder (or its raw/) whose manifest lists chunks and whose raw/ holds none of them any more."""
    from rtpcore.media.demux import CAPTURE_SUFFIXES

    root = _session_root(Path(source))
    if root is None or not (root / MANIFEST_NAME).is_file():
        return False
    return not any(p.suffix.lower() in CAPTURE_SUFFIXES for p in (root / RAW_DIR).iterdir() if p.is_file())


def uploaded_to(sources: Sequence[Path], settings: Settings | None) -> str | None:
    """The s3:// URL of the session a local session folder among `sources` uploads to (its queue's location), when
    this run is in S3 mode with a bucket: the correlation's outputs are published there, beside its chunks."""
    if settings is None or settings.storage_mode != "s3" or not settings.s3_bucket_name:
        return None
    for source in sources:
        root = _session_root(Path(source))
        if root is None or not (root / QUEUE_LOCATION).is_file():
            continue
        from rtpcore.storage.queue import QueueStore

        try:
            location = QueueStore(root).load_location()
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s: unreadable (%s); the outputs are not published to S3", root / QUEUE_LOCATION, exc)
            continue
        if location is not None:
            return f"s3://{settings.s3_bucket_name}/{location.key_prefix}/"
    return None


def _meets(first_ns: int | None, last_ns: int | None, windows: Sequence[Span]) -> bool:
    """Whether a chunk's time may meet a window (a chunk without timestamps always may)."""
    if first_ns is None or last_ns is None:
        return True
    return any(first_ns <= end and last_ns >= begin for begin, end in windows)


def absent_chunks(sources: Sequence[Path], windows: Sequence[Span]) -> list[AbsentChunk]:
    """The chunks that session manifests list and raw/ lacks, whose time meets a window of the call."""
    found: list[AbsentChunk] = []
    seen: set[Path] = set()
    for source in sources:
        root = _session_root(Path(source))
        if root is None or root.resolve() in seen or not (root / MANIFEST_NAME).is_file():
            continue
        seen.add(root.resolve())
        from rtpcore.capture.manifest import Manifest
        from rtpcore.storage.queue import DONE, QueueStore

        state = Manifest.read(root / MANIFEST_NAME)
        missing = [c for c in state.chunks if not (root / RAW_DIR / c.name).exists()
                   and _meets(c.first_ns, c.last_ns, windows)]
        if not missing:
            continue
        uploaded = {item.path: item.key for item in QueueStore(root).load_all() if item.state == DONE}
        found += [AbsentChunk(root, c.name, c.host, c.first_ns, c.last_ns, uploaded.get(f"{RAW_DIR}/{c.name}"))
                  for c in missing]
    return found


def fetch_absent(absent: Sequence[AbsentChunk], settings: Settings | None, dest: Path, windows: Sequence[Span], *,
                 endpoints: Sequence[Endpoint] | None = None, defer: bool = False) -> list[ChunkChoice]:
    """Range-read the call's part of each absent chunk from the session in S3, as a correlation from S3 does."""
    from rtpcore.storage.download import select_from_storage, storage_for_url

    lost = [a for a in absent if a.session_key is None]
    if lost:
        raise MissingChunkError(_lost_message(lost))
    bucket = settings.s3_bucket_name if settings is not None else None
    if settings is None or not bucket:
        raise MissingChunkError(_names(absent) + f": {EVICTED_WHY}, and no bucket is configured to read them from; "
                                "set RTPHELPER_S3_PATH (or RTPHELPER_S3_BUCKET) as the capture had it")
    choices: list[ChunkChoice] = []
    by_session: dict[str, list[AbsentChunk]] = {}
    for chunk in absent:
        assert chunk.session_key is not None
        by_session.setdefault(chunk.session_key, []).append(chunk)
    for n, (prefix, chunks) in enumerate(sorted(by_session.items())):
        url = f"s3://{bucket}/{prefix}/"
        log.warning("%d chunk(s) of the call's time were %s: reading them from %s", len(chunks), EVICTED_WHY, url)
        try:
            got = select_from_storage(storage_for_url(url, settings), url, dest if n == 0 else dest / f"absent-{n + 1}",
                                      windows, endpoints=endpoints, defer=defer, only={c.name for c in chunks})
        except StorageError as exc:
            raise StorageError(f"{_names(chunks)}: {EVICTED_WHY}; reading them from {url} failed: {exc}. Correlate "
                               "again when S3 is reachable, or copy the chunks back into the session's raw/ "
                               "folder") from None
        choices += [replace(c, why=f"{EVICTED_WHY}; {c.why}") for c in got]
    return choices


def _names(chunks: Sequence[AbsentChunk]) -> str:
    shown = ", ".join(str(c.path) for c in chunks[:5])
    return shown + (f" and {len(chunks) - 5} more" if len(chunks) > 5 else "")


def _lost_message(lost: Sequence[AbsentChunk]) -> str:
    return (f"{_names(lost)}: listed in the session's manifest.jsonl and inside the call's time, but not in raw/ "
            "and not uploaded to S3; restore the file(s) into raw/, or give the remaining chunks as files "
            "(--media FILE …) to correlate without them")
