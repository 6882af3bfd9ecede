"""A local capture session's copy in S3: chunks its raw/ folder no longer holds are read from it, outputs go to it.

In S3 mode the upload queue removes the local copy of uploaded chunks to keep the spool under
RTPHELPER_LOCAL_SPOOL_MAX_BYTES, so a long capture's folder keeps only its newest chunks. A correlation given that
folder must not read what is left and call it the call's media: the chunks in the call's time are range-read from
the session in S3, and a chunk that is neither on disk nor uploaded stops the run, named.

Which chunks a session has: its manifest.jsonl's chunk records, plus the raw chunks its upload queue holds that the
manifest does not list (a torn or unreadable line: a capture killed mid-write); those have no times in the manifest
and are decided by their index in S3. Fetched parts go to <dest>/uploaded-chunks/ (never the session's own raw/: a
chunk downloaded whole there would undo the spool cap and pass for a captured file on the next run).

An object in S3 whose size differs from the manifest's record of the chunk is not the chunk this capture closed and
verified (overwritten by another upload to the same key): the run stops naming both sizes rather than correlate
bytes of another capture as this call's media.
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
FETCH_DIR = "uploaded-chunks"   # <dest>/uploaded-chunks[-n]/: what fetch_absent reads from S3 (not the session's raw/)
SHOWN = 5                       # chunks an error names before "and N more"
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
    size: int | None = None          # its bytes as the manifest (or the upload queue) recorded them
    queued: str | None = None        # its upload queue state (pending, uploading, failed, done); None: never queued
    queue_error: str | None = None   # the queue's last error for it (a failed upload)

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
    """The chunks that session manifests (or their upload queues) list and raw/ lacks, whose time meets a window."""
    found: list[AbsentChunk] = []
    seen: set[Path] = set()
    for source in sources:
        root = _session_root(Path(source))
        if root is None or root.resolve() in seen or not (root / MANIFEST_NAME).is_file():
            continue
        seen.add(root.resolve())
        found += _session_absent(root, windows)
    return found


def _session_absent(root: Path, windows: Sequence[Span]) -> list[AbsentChunk]:
    from rtpcore.capture.manifest import Manifest
    from rtpcore.storage.queue import DONE, QUEUE_DIR, QueueStore

    state = Manifest.read(root / MANIFEST_NAME)
    items = {item.path: item for item in QueueStore(root).load_all()}   # enqueue order: the latest item wins
    listed = {c.name for c in state.chunks}
    chunks = [(c.name, c.host, c.first_ns, c.last_ns, c.bytes) for c in state.chunks]
    # Raw chunks the queue took that the manifest lost (its torn last line): their times come from S3's index.
    chunks += [(path.removeprefix(f"{RAW_DIR}/"), "", None, None, item.size) for path, item in items.items()
               if item.evictable and path.startswith(f"{RAW_DIR}/") and path.count("/") == 1
               and path.removeprefix(f"{RAW_DIR}/") not in listed]
    missing = [c for c in chunks if not (root / RAW_DIR / c[0]).exists() and _meets(c[2], c[3], windows)]
    if not missing:
        return []
    for problem in state.problems:
        log.warning("%s; the upload queue's records of %s stand in for the chunks it may have listed", problem,
                    root / QUEUE_DIR)
    if not state.finished:
        log.warning("%s has no 'finished' record: the capture is still running (or stopped without finishing); only "
                    "the %d chunk(s) closed so far are correlated: correlate again once it has stopped if the call "
                    "went on after them", root / MANIFEST_NAME, len(chunks))
    found = []
    for name, host, first_ns, last_ns, size in missing:
        item = items.get(f"{RAW_DIR}/{name}")
        found.append(AbsentChunk(root, name, host, first_ns, last_ns,
                                 item.key if item is not None and item.state == DONE else None, size,
                                 item.state if item is not None else None,
                                 item.last_error if item is not None else None))
    return found


def fetch_absent(absent: Sequence[AbsentChunk], settings: Settings | None, dest: Path, windows: Sequence[Span], *,
                 endpoints: Sequence[Endpoint] | None = None, defer: bool = False) -> list[ChunkChoice]:
    """Range-read the call's part of each absent chunk from the session in S3, as a correlation from S3 does."""
    from rtpcore.storage.base import StorageNotFoundError
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
        folder = dest / (FETCH_DIR if n == 0 else f"{FETCH_DIR}-{n + 1}")
        try:
            got = select_from_storage(storage_for_url(url, settings), url, folder, windows, endpoints=endpoints,
                                      defer=defer, only={c.name for c in chunks})
        except StorageNotFoundError as exc:
            raise MissingChunkError(f"{_names(chunks)}: {EVICTED_WHY}, but not in {url} any more ({exc}): deleted "
                                    "from the bucket (a lifecycle rule?); restore the file(s) into the session's "
                                    "raw/ folder, or give the remaining chunks as files (--media FILE …) to "
                                    "correlate without them") from None
        except StorageError as exc:
            raise StorageError(f"{_names(chunks)}: {EVICTED_WHY}; reading them from {url} failed: {exc}. Correlate "
                               "again when S3 is reachable, or copy the chunks back into the session's raw/ "
                               "folder") from None
        _check_sizes(chunks, got, url)
        choices += [replace(c, why=f"{EVICTED_WHY}; {c.why}") for c in got]
    return choices


def _check_sizes(chunks: Sequence[AbsentChunk], got: Sequence[ChunkChoice], url: str) -> None:
    """Stop when an object's size is not the manifest's: another file was uploaded over the capture's chunk."""
    recorded = {c.name: c for c in chunks}
    wrong = []
    for choice in got:
        chunk = recorded.get(Path(choice.origin or choice.source).name)
        if chunk is not None and chunk.size is not None and choice.size != chunk.size:
            wrong.append(f"{chunk.path} ({chunk.size} bytes in {chunk.session / MANIFEST_NAME}, "
                         f"{choice.size} bytes at {choice.origin or url})")
    if wrong:
        from rtpcore.storage.base import StorageIntegrityError

        raise StorageIntegrityError(
            f"{'; '.join(wrong)}: {EVICTED_WHY}, but the object in S3 is not the chunk the capture closed (another "
            "upload replaced it); it is not read as this call's media. Copy the capture's own chunk back into the "
            "session's raw/ folder, or give the remaining chunks as files (--media FILE …) to correlate without it")


def _first(texts: Sequence[str], sep: str) -> str:
    """The first few of a long list, and how many more: an error names chunks, it does not list a session."""
    more = f" and {len(texts) - SHOWN} more" if len(texts) > SHOWN else ""
    return sep.join(texts[:SHOWN]) + more


def _names(chunks: Sequence[AbsentChunk]) -> str:
    return _first([str(c.path) for c in chunks], ", ")


def _lost_message(lost: Sequence[AbsentChunk]) -> str:
    def why(chunk: AbsentChunk) -> str:
        when = "" if chunk.first_ns is not None else "; its time is unknown (not in the manifest)"
        if chunk.queued is None:
            return "never queued for upload" + when
        detail = f": {chunk.queue_error}" if chunk.queue_error else ""
        return f"its upload is {chunk.queued}{detail}{when}"

    return (f"{_first([f'{c.path} ({why(c)})' for c in lost], '; ')}: listed in the session's manifest.jsonl and inside the call's time, but not in raw/ "
            "and not uploaded to S3; restore the file(s) into raw/, or give the remaining chunks as files "
            "(--media FILE …) to correlate without them")
