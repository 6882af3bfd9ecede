"""Storage mode and fallback: S3 first, local-only while S3 is down, back to S3 when a probe or flush sees it.

`open_session_storage` is what a capture session talks to (on_chunk_closed, enqueue, set_phase, flush,
summary); `flush_session` is the resume flush for a session folder left with pending uploads.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.storage.base import Storage, StorageAuthError, StorageError, StorageUnavailableError
from rtpcore.storage.keys import SESSION_SUBDIRS, SessionLocation
from rtpcore.storage.queue import DONE, FAILED, PHASE_CAPTURE, PHASE_POST, QUEUE_DIR, QueueStore, UploadQueue

if TYPE_CHECKING:
    from rtpcore.pcap.rolling import ChunkInfo
    from rtpcore.settings import Settings

__all__ = [
    "STORAGE_FALLBACK",
    "STORAGE_LOCAL",
    "STORAGE_S3",
    "FallbackPolicy",
    "FlushReport",
    "SessionStorage",
    "StorageStatus",
    "flush_session",
    "open_session_storage",
]

log = logging.getLogger(__name__)

MODE_S3, MODE_LOCAL = "s3", "local"
STORAGE_S3, STORAGE_FALLBACK, STORAGE_LOCAL = "s3", "local-fallback", "local"
STATUS_FILE = "storage.json"
DEFAULT_PROBE_SECONDS = 30.0


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class StorageStatus:
    """Where the session's files are, for the summary; switched_at/why stay set after S3 comes back."""

    storage: str
    switched_at: str | None = None
    why: str | None = None
    restored_at: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The summary record."""
        return asdict(self)


class FallbackPolicy:
    """Tracks whether S3 is usable for this session, records the switch, and probes until it is back."""

    def __init__(self, mode: str, storage: Storage | None, *, status_file: Path | None = None,
                 probe_interval: float = DEFAULT_PROBE_SECONDS) -> None:
        if mode not in (MODE_S3, MODE_LOCAL):
            raise ValueError(f"storage mode {mode!r}: must be {MODE_S3!r} or {MODE_LOCAL!r}")
        if mode == MODE_S3 and storage is None:
            raise ValueError("storage mode s3 needs a storage backend")
        self.mode, self.storage = mode, storage
        self.status_file = status_file
        self.probe_interval = probe_interval
        self.auth_error: StorageAuthError | None = None
        self._lock = threading.Lock()
        self._down = False
        self._status = StorageStatus(STORAGE_S3 if mode == MODE_S3 else STORAGE_LOCAL)
        self._listeners: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        if status_file is not None and status_file.is_file() and mode == MODE_S3:
            try:
                saved = StorageStatus(**json.loads(status_file.read_text(encoding="utf-8")))
                # Keep the history of an earlier process; S3 is tried again now.
                self._status = StorageStatus(STORAGE_S3, saved.switched_at, saved.why, saved.restored_at)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("storage status %s unreadable (%s); starting fresh", status_file, exc)

    @property
    def available(self) -> bool:
        """True when uploads should be attempted now."""
        with self._lock:
            return self.mode == MODE_S3 and not self._down

    def status(self) -> StorageStatus:
        """The current summary record."""
        with self._lock:
            return self._status

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call back (no arguments) whenever availability changes."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling a listener."""
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def report_failure(self, exc: StorageError) -> None:
        """S3 is unreachable, failing or refusing us: switch the session to local-only (once) and start probing."""
        with self._lock:
            if isinstance(exc, StorageAuthError):
                self.auth_error = exc
            if self._down or self.mode != MODE_S3:
                return
            self._down = True
            self._status = StorageStatus(STORAGE_FALLBACK, _now_iso(), str(exc), None)
            status = self._status
        log.log(logging.ERROR if isinstance(exc, StorageAuthError) else logging.WARNING,
                "S3 storage unavailable, session switched to local-only (files stay on disk, uploads stay "
                "queued): %s", status.why)
        self._save(status)
        self._notify()
        self._start_prober()

    def report_success(self) -> None:
        """An S3 call worked: if we were in fallback, S3 is back."""
        if not self.available and self.mode == MODE_S3:
            self._restore()

    def probe(self) -> bool:
        """Check S3 now; restores the session to S3 on success, falls back on failure."""
        if self.mode != MODE_S3 or self.storage is None:
            return False
        try:
            self.storage.check()
        except StorageError as exc:
            self.report_failure(exc)
            return False
        self._restore()
        return True

    def close(self) -> None:
        """Stop the background probe."""
        self._stop.set()
        prober = self._prober
        if prober is not None:
            prober.join(5.0)

    def _restore(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
            self.auth_error = None
            old = self._status
            self._status = StorageStatus(STORAGE_S3, old.switched_at, old.why, _now_iso())
            status = self._status
        where = self.storage.describe() if self.storage else "S3"
        log.warning("S3 storage reachable again (%s); resuming uploads", where)
        self._save(status)
        self._notify()

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()

    def _save(self, status: StorageStatus) -> None:
        if self.status_file is None:
            return
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.status_file.with_name(f".{self.status_file.name}.part")
            tmp.write_text(json.dumps(status.as_dict()), encoding="utf-8")
            os.replace(tmp, self.status_file)
        except OSError as exc:
            log.warning("cannot record the storage status in %s: %s", self.status_file, exc)

    def _start_prober(self) -> None:
        with self._lock:
            if self._prober is not None and self._prober.is_alive():
                return
            self._stop.clear()
            self._prober = threading.Thread(target=self._probe_loop, name="s3-probe", daemon=True)
            self._prober.start()

    def _probe_loop(self) -> None:
        while not self._stop.wait(self.probe_interval):
            if self.available or self.probe():
                return


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What a flush uploaded and what is still only local (non-empty `left` → the caller exits non-zero)."""

    uploaded: int
    left: tuple[str, ...]
    failed: tuple[str, ...]
    storage: StorageStatus
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing is left to upload."""
        return not self.left


def _report(queue: UploadQueue | None, done_before: int, status: StorageStatus) -> FlushReport:
    if queue is None:
        return FlushReport(0, (), (), status)
    items = queue.items()
    left = [i for i in items if i.state != DONE]
    done = sum(1 for i in items if i.state == DONE)
    return FlushReport(
        uploaded=done - done_before, left=tuple(i.path for i in left),
        failed=tuple(i.path for i in left if i.state == FAILED),
        storage=status, errors=tuple(f"{i.path}: {i.last_error}" for i in left if i.last_error),
    )


class SessionStorage:
    """A capture session's storage: S3 with queue and fallback, or plain local disk."""

    def __init__(self, session_dir: Path, policy: FallbackPolicy, queue: UploadQueue | None) -> None:
        self.session_dir = Path(session_dir)
        self.policy, self.queue = policy, queue

    def on_chunk_closed(self, info: ChunkInfo) -> None:
        """Queue a closed chunk for upload; never raises, the chunk stays on disk whatever happens."""
        if self.queue is None:
            return
        try:
            self.queue.on_chunk_closed(info)
        except Exception as exc:
            log.error("could not queue %s for upload (it stays local; a resume flush picks it up): %s", info.path, exc)

    def enqueue(self, path: Path) -> None:
        """Queue an output (SIP upload, combined pcap) for upload; never raises."""
        if self.queue is None:
            return
        try:
            self.queue.enqueue(Path(path))
        except Exception as exc:
            log.error("could not queue %s for upload (it stays local): %s", path, exc)

    def set_phase(self, phase: str) -> None:
        """"capture" while capturing, "post" for the final flush."""
        if self.queue is not None:
            self.queue.set_phase(phase)

    def flush(self, timeout: float | None = None) -> FlushReport:
        """Drain the queue (probing S3 first if it was down) and report what is left."""
        if self.queue is None:
            return _report(None, 0, self.policy.status())
        self.queue.flush(timeout)
        return _report(self.queue, 0, self.policy.status())

    def summary(self) -> dict[str, Any]:
        """The storage record of the session summary, with item counts."""
        out: dict[str, Any] = dict(self.policy.status().as_dict())
        if self.queue is not None:
            items = self.queue.items()
            out.update(queued=len(items), uploaded=sum(1 for i in items if i.state == DONE),
                       left=sum(1 for i in items if i.state != DONE))
        return out

    def close(self) -> None:
        """Stop workers and the probe; queued items stay on disk."""
        if self.queue is not None:
            self.queue.close()
        self.policy.close()


def _s3_storage(settings: Settings, environ: Mapping[str, str] | None, phase: str) -> Storage:
    from rtpcore.storage.s3 import S3Storage  # boto3 loads only in s3 mode

    return S3Storage.from_settings(settings, environ=environ, phase=phase)


def open_session_storage(
    settings: Settings,
    session_dir: Path,
    location: SessionLocation,
    *,
    storage: Storage | None = None,
    environ: Mapping[str, str] | None = None,
    phase: str = PHASE_CAPTURE,
    probe_interval: float | None = None,
    mode: str | None = None,
    start: bool = True,
    **queue_options: Any,
) -> SessionStorage:
    """The one composition root of a session's storage (production and tests): mode, S3, policy, queue.

    mode defaults to RTPHELPER_STORAGE_MODE; start=False leaves the probe and the upload thread to the caller
    (the capture runner probes in the background so a black-holed S3 never delays the capture's start).
    """
    session_dir = Path(session_dir)
    status_file = session_dir / QUEUE_DIR / STATUS_FILE
    if (mode or settings.storage_mode) == MODE_LOCAL:
        return SessionStorage(session_dir, FallbackPolicy(MODE_LOCAL, None), None)
    if storage is None:
        storage = _s3_storage(settings, environ, phase)
    interval = settings.s3_probe_interval_seconds if probe_interval is None else probe_interval
    policy = FallbackPolicy(MODE_S3, storage, status_file=status_file, probe_interval=interval)
    queue = UploadQueue.from_settings(settings, session_dir, storage, location, policy=policy, phase=phase,
                                      start=False, **queue_options)
    queue.set_phase(phase)
    if start:
        policy.probe()
        queue.start()
    return SessionStorage(session_dir, policy, queue)


def _rescan(queue: UploadQueue) -> int:
    """Queue session files that never made it into the queue (a crash before on_chunk_closed)."""
    known = {i.path for i in queue.items()}
    added = 0
    for sub in SESSION_SUBDIRS:
        folder = queue.session_dir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(queue.session_dir)
            if not path.is_file() or any(p.startswith(".") for p in relative.parts) or relative.as_posix() in known:
                continue
            queue.enqueue(path, evictable=sub == "raw")
            added += 1
    return added


def flush_session(
    session_dir: Path,
    *,
    settings: Settings | None = None,
    storage: Storage | None = None,
    location: SessionLocation | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float | None = None,
    rescan: bool = True,
    **queue_options: Any,
) -> FlushReport:
    """Resume flush: upload whatever a session left pending; StorageAuthError/StorageNotFoundError if S3 refuses."""
    from rtpcore.settings import load_settings

    session_dir = Path(session_dir).resolve()
    settings = settings if settings is not None else load_settings(environ)
    if settings.storage_mode == MODE_LOCAL and storage is None:
        return FlushReport(0, (), (), StorageStatus(STORAGE_LOCAL))
    store = QueueStore(session_dir)
    location = location or store.load_location()
    if location is None:
        raise StorageError(f"{session_dir}: no upload queue here ({QUEUE_DIR}/ is missing); pass the session's "
                           "environment so its files can be queued")
    storage = storage if storage is not None else _s3_storage(settings, environ, PHASE_POST)
    policy = FallbackPolicy(MODE_S3, storage, status_file=store.folder / STATUS_FILE, probe_interval=3600.0)
    queue = UploadQueue.from_settings(settings, session_dir, storage, location, policy=policy, phase=PHASE_POST,
                                      start=False, **queue_options)
    try:
        done_before = sum(1 for i in queue.items() if i.state == DONE)
        try:
            storage.check()
        except StorageUnavailableError as exc:
            policy.report_failure(exc)
            return _report(queue, done_before, policy.status())
        queue.retry_failed()
        if rescan:
            _rescan(queue)
        queue.set_phase(PHASE_POST)
        queue.start()
        queue.flush(timeout)
        if policy.auth_error is not None:
            raise policy.auth_error
        return _report(queue, done_before, policy.status())
    finally:
        queue.close()
        policy.close()
