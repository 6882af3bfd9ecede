"""A durable upload queue: one JSON file per item in <session>/.upload-queue/, worked off by background threads.

Item states: pending → uploading → done | failed. A record is replaced atomically on every change, so a
killed process leaves each item in a readable state; on restart "uploading" goes back to "pending" (the
re-upload overwrites the same key). Only a done (verified) item's local file may be deleted, and only
to keep the session's spool under its cap; a capture is never stopped or dropped for storage reasons.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.fsutil import fsync_dir
from rtpcore.logs import redact_secrets
from rtpcore.sizes import format_size
from rtpcore.storage.base import Storage, StorageAuthError, StorageUnavailableError
from rtpcore.storage.keys import SessionLocation, key_for_path

if TYPE_CHECKING:
    from rtpcore.pcap.rolling import ChunkInfo
    from rtpcore.settings import Settings
    from rtpcore.storage.policy import FallbackPolicy

__all__ = [
    "LOCATION_FILE",
    "QUEUE_DIR",
    "STATES",
    "QueueStore",
    "UploadItem",
    "UploadQueue",
]

log = logging.getLogger(__name__)

QUEUE_DIR = ".upload-queue"
LOCATION_FILE = "location.json"
ITEM_SUFFIX = ".item.json"
PENDING, UPLOADING, DONE, FAILED = "pending", "uploading", "done", "failed"
STATES = (PENDING, UPLOADING, DONE, FAILED)
PHASE_CAPTURE, PHASE_POST = "capture", "post"
IDLE_WAIT = 1.0  # seconds a worker sleeps when nothing is ready (it is woken earlier on any change)
WATCH_INTERVAL = 0.5  # seconds between the stall watchdog's looks at the uploads in flight
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class UploadItem:
    """One file to upload, as stored in its queue record."""

    id: str
    path: str  # session-relative, '/'-separated
    key: str
    size: int
    sha256: str | None
    state: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    created_ns: int = 0
    updated_ns: int = 0
    uploaded_ns: int | None = None
    etag: str | None = None
    evictable: bool = False  # raw chunks: the local copy may go once uploaded; outputs stay
    evicted: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadItem:
        """The item of a decoded record; ValueError names what is wrong."""
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        missing = {"id", "path", "key", "size"} - fields.keys()
        if missing:
            raise ValueError(f"missing field(s) {', '.join(sorted(missing))}")
        if fields.get("state", PENDING) not in STATES:
            raise ValueError(f"unknown state {fields['state']!r}")
        return cls(**fields)


class QueueStore:
    """The record files of one session's queue."""

    def __init__(self, session_dir: Path) -> None:
        self.session_dir = Path(session_dir).resolve()
        self.folder = self.session_dir / QUEUE_DIR

    def _path(self, item_id: str) -> Path:
        return self.folder / f"{item_id}{ITEM_SUFFIX}"

    def _write(self, path: Path, data: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def create(self, item: UploadItem) -> None:
        """Write a new record; FileExistsError if the id is taken (link never replaces)."""
        path = self._path(item.id)
        tmp = self._write(path, asdict(item))
        try:
            os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.folder)

    def save(self, item: UploadItem) -> None:
        """Replace a record atomically."""
        path = self._path(item.id)
        os.replace(self._write(path, asdict(item)), path)

    def load_all(self) -> list[UploadItem]:
        """Every readable record in id (= enqueue) order; unreadable ones are logged and skipped."""
        if not self.folder.is_dir():
            return []
        items = []
        for path in sorted(self.folder.glob(f"*{ITEM_SUFFIX}")):
            try:
                items.append(UploadItem.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as exc:
                log.error("upload queue record %s is unreadable and is skipped: %s", path, exc)
        return items

    def save_location(self, location: SessionLocation) -> None:
        """Remember where the session goes in the bucket, so a later resume flush needs only the folder."""
        path = self.folder / LOCATION_FILE
        os.replace(self._write(path, asdict(location)), path)

    def load_location(self) -> SessionLocation | None:
        """The saved location, None when the queue never saved one."""
        path = self.folder / LOCATION_FILE
        if not path.is_file():
            return None
        return SessionLocation(**json.loads(path.read_text(encoding="utf-8")))


class UploadQueue:
    """Uploads a session's closed chunks and outputs in the background, verified, surviving restarts."""

    def __init__(
        self,
        session_dir: Path,
        storage: Storage,
        location: SessionLocation,
        *,
        policy: FallbackPolicy | None = None,
        workers: int = 6,
        concurrency_capture: int = 2,
        concurrency_post: int = 4,
        max_attempts: int = 5,
        spool_max_bytes: int | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        phase: str = PHASE_CAPTURE,
        start: bool = True,
        stall_seconds: float = 5.0,
    ) -> None:
        if workers < 1 or concurrency_capture < 1 or concurrency_post < 1 or max_attempts < 1:
            raise ValueError("workers, concurrencies and max_attempts must be at least 1")
        self.session_dir = Path(session_dir).resolve()
        self.storage = storage
        self.location = location
        self.policy = policy
        self.store = QueueStore(self.session_dir)
        self.max_attempts = max_attempts
        self.spool_max_bytes = spool_max_bytes
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._limits = {PHASE_CAPTURE: concurrency_capture, PHASE_POST: concurrency_post}
        self._cond = threading.Condition()
        self._items: dict[str, UploadItem] = {}
        self._not_before: dict[str, float] = {}
        self._in_flight: set[str] = set()
        self.stall_seconds = stall_seconds
        self._last_progress = time.monotonic()  # start of the oldest upload in flight, or the last one finished
        self._closing = False
        self._over_cap_warned = False
        self._threads: list[threading.Thread] = []
        self._worker_count = workers
        self.phase = phase
        self._limit = self._limits[self._check_phase(phase)]
        self.store.save_location(location)
        self._recover()
        if policy is not None:
            policy.add_listener(self._wake)
        if start:
            self.start()

    @classmethod
    def from_settings(cls, settings: Settings, session_dir: Path, storage: Storage, location: SessionLocation,
                      **kwargs: Any) -> UploadQueue:
        """A queue sized by RTPHELPER_S3_UPLOAD_* and RTPHELPER_LOCAL_SPOOL_MAX_BYTES."""
        params: dict[str, Any] = {
            "workers": settings.s3_upload_workers_max,
            "concurrency_capture": settings.s3_upload_concurrency_capture,
            "concurrency_post": settings.s3_upload_concurrency_post_capture,
            "max_attempts": settings.s3_upload_max_attempts,
            "spool_max_bytes": settings.local_spool_max_bytes,
            "stall_seconds": settings.s3_stall_seconds,
        }
        params.update(kwargs)
        return cls(session_dir, storage, location, **params)

    # -- the capture engine's side ---------------------------------------------------------

    def on_chunk_closed(self, info: ChunkInfo) -> UploadItem:
        """Queue a closed raw chunk (its sha256 is checked before upload) and its sidecar index, if written, so
        a correlation from S3 fetches only the call's part; the chunk's local copy may be evicted later."""
        from rtpcore.pcap.index import index_path

        item = self.enqueue(info.path, sha256=info.sha256, evictable=True)
        if (sidecar := index_path(info.path)).is_file():
            self.enqueue(sidecar)
        return item

    def enqueue(self, path: Path, *, sha256: str | None = None, evictable: bool = False) -> UploadItem:
        """Queue one file of the session (the record is on disk when this returns)."""
        path = Path(path)
        key = key_for_path(path, self.session_dir, self.location)
        relative = path.resolve().relative_to(self.session_dir).as_posix()
        now = time.time_ns()
        item = UploadItem(
            id=f"{now:020d}-{_UNSAFE.sub('_', relative)[-80:]}", path=relative, key=key, size=path.stat().st_size,
            sha256=sha256, created_ns=now, updated_ns=now, evictable=evictable,
        )
        self.store.create(item)
        with self._cond:
            self._items[item.id] = item
            self._cond.notify_all()
        self._enforce_cap()
        return item

    def set_phase(self, phase: str) -> None:
        """Resize the upload concurrency (and the storage's pool) for "capture" or "post"."""
        with self._cond:
            self.phase = phase
            self._limit = self._limits[self._check_phase(phase)]
            self._cond.notify_all()
        self.storage.set_phase(phase)

    # -- state -----------------------------------------------------------------------------

    def items(self) -> list[UploadItem]:
        """Every item, in enqueue order."""
        with self._cond:
            return sorted(self._items.values(), key=lambda i: i.id)

    def pending(self) -> list[UploadItem]:
        """What is not uploaded yet (pending, uploading or failed)."""
        return [i for i in self.items() if i.state != DONE]

    def spool_bytes(self) -> int:
        """Bytes of queued files still on local disk."""
        with self._cond:
            return sum(i.size for i in self._items.values() if not i.evicted)

    @property
    def in_flight(self) -> int:
        """Uploads running right now."""
        with self._cond:
            return len(self._in_flight)

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        with self._cond:
            return self._limit

    def retry_failed(self) -> int:
        """Give failed items a fresh set of attempts (a resume flush does this); returns how many."""
        with self._cond:
            failed = [i for i in self._items.values() if i.state == FAILED]
            for item in failed:
                self._items[item.id] = replace(item, state=PENDING, attempts=0, updated_ns=time.time_ns())
                self._not_before.pop(item.id, None)
            self._cond.notify_all()
        for item in failed:
            self.store.save(self._items[item.id])
        return len(failed)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending; False on timeout, when S3 is down, or when items failed for good.

        S3 judged unavailable (the stall watchdog's probe, or a failed upload) ends the wait at once: an
        upload hung on a black-holed endpoint stays "uploading" until its own read timeout, then pending.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.policy is not None and not self.policy.available:
            self.policy.probe()
        with self._cond:
            while True:
                states = {i.state for i in self._items.values()}
                if not states & {PENDING, UPLOADING}:
                    return FAILED not in states
                if self.policy is not None and not self.policy.available:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(IDLE_WAIT if remaining is None else min(IDLE_WAIT, remaining))

    # -- workers ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        with self._cond:
            if self._threads:
                return
            self._closing = False
            self._threads = [threading.Thread(target=self._work, name=f"upload-{n}", daemon=True)
                             for n in range(self._worker_count)]
            if self.policy is not None:
                self._threads.append(threading.Thread(target=self._watch, name="upload-watchdog", daemon=True))
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the workers after their current upload, waiting at most `timeout` in all; pending items stay queued.

        A worker still inside a hung request is a daemon thread: it ends with its own read timeout, and its
        item's record on disk is "uploading", which a later flush takes as pending.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self.policy is not None:
            self.policy.remove_listener(self._wake)

    def __enter__(self) -> UploadQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _watch(self) -> None:
        """Probe S3 when uploads are in flight and none finished for stall_seconds: a black hole never errors."""
        while True:
            with self._cond:
                if self._closing:
                    return
                self._cond.wait(WATCH_INTERVAL)
                if self._closing:
                    return
                stalled = bool(self._in_flight) and time.monotonic() - self._last_progress > self.stall_seconds
            if not stalled or self.policy is None or not self.policy.available:
                continue
            log.info("no S3 upload finished for %.0f s with %d in flight; probing the endpoint",
                     self.stall_seconds, self.in_flight)
            if self.policy.probe():
                with self._cond:
                    self._last_progress = time.monotonic()  # alive, just slow or large: look again later

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _next_ready(self, now: float) -> tuple[UploadItem | None, float]:
        """The oldest ready pending item, or None and how long until one may be ready."""
        wait = IDLE_WAIT
        for item in sorted(self._items.values(), key=lambda i: i.id):
            if item.state != PENDING or item.id in self._in_flight:
                continue
            ready_at = self._not_before.get(item.id, 0.0)
            if ready_at <= now:
                return item, 0.0
            wait = min(wait, ready_at - now)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    wait = IDLE_WAIT
                    if len(self._in_flight) < self._limit and (self.policy is None or self.policy.available):
                        item, wait = self._next_ready(time.monotonic())
                        if item is not None:
                            break
                    self._cond.wait(wait)
                if not self._in_flight:
                    self._last_progress = time.monotonic()
                self._in_flight.add(item.id)
                item = replace(item, state=UPLOADING, updated_ns=time.time_ns())
                self._items[item.id] = item
            try:
                self.store.save(item)
                item = self._upload(item)
            finally:
                with self._cond:
                    self._in_flight.discard(item.id)
                    self._last_progress = time.monotonic()
                    self._items[item.id] = item
                    self._cond.notify_all()
            if item.state == DONE:
                self._enforce_cap()

    def _upload(self, item: UploadItem) -> UploadItem:
        """One attempt; returns the item's next state (already saved)."""
        path = self.session_dir / item.path
        try:
            info = self.storage.put_file(path, item.key, sha256=item.sha256)
        except (StorageUnavailableError, StorageAuthError) as exc:
            # S3 as a whole is unusable: do not burn the item's attempts, let the policy fall back.
            if self.policy is not None:
                self.policy.report_failure(exc)
            item = replace(item, state=PENDING, last_error=str(exc), updated_ns=time.time_ns())
            self._not_before[item.id] = time.monotonic() + self.backoff_base
        except Exception as exc:  # StorageError, OSError, or a bug: count it, never kill the worker
            attempts = item.attempts + 1
            state = FAILED if attempts >= self.max_attempts else PENDING
            item = replace(item, state=state, attempts=attempts, last_error=redact_secrets(str(exc)),
                           updated_ns=time.time_ns())
            self._not_before[item.id] = time.monotonic() + min(self.backoff_max,
                                                               self.backoff_base * 2 ** (attempts - 1))
            log.warning("upload of %s failed (attempt %d of %d)%s: %s", item.path, attempts, self.max_attempts,
                        "; giving up, the file stays local" if state == FAILED else "", item.last_error)
        else:
            if self.policy is not None:
                self.policy.report_success()
            item = replace(item, state=DONE, attempts=item.attempts + 1, last_error=None, etag=info.etag,
                           uploaded_ns=time.time_ns(), updated_ns=time.time_ns())
            log.debug("uploaded %s → %s", item.path, item.key)
        self.store.save(item)
        return item

    # -- spool cap -------------------------------------------------------------------------

    def _enforce_cap(self) -> None:
        """Over the cap, delete the oldest uploaded chunks locally; if that is not enough, warn once."""
        if self.spool_max_bytes is None:
            return
        with self._cond:
            total = sum(i.size for i in self._items.values() if not i.evicted)
            if total <= self.spool_max_bytes:
                self._over_cap_warned = False
                return
            victims = []
            for item in sorted(self._items.values(), key=lambda i: i.id):
                if total <= self.spool_max_bytes:
                    break
                if item.state == DONE and item.evictable and not item.evicted:
                    victims.append(replace(item, evicted=True, updated_ns=time.time_ns()))
                    total -= item.size
            for item in victims:
                self._items[item.id] = item
            warn = total > self.spool_max_bytes and not self._over_cap_warned
            self._over_cap_warned = total > self.spool_max_bytes
        for item in victims:
            (self.session_dir / item.path).unlink(missing_ok=True)
            self.store.save(item)
            log.info("spool over %s: removed local copy of uploaded %s", format_size(self.spool_max_bytes), item.path)
        if warn:
            log.warning("LOCAL SPOOL OVER CAP: %s of queued files in %s exceed RTPHELPER_LOCAL_SPOOL_MAX_BYTES=%s and "
                        "nothing uploaded can be removed yet; the capture keeps writing locally",
                        format_size(total), self.session_dir, format_size(self.spool_max_bytes))

    # -- restart ---------------------------------------------------------------------------

    def _recover(self) -> None:
        """Load the records left by an earlier process; interrupted uploads start over."""
        for item in self.store.load_all():
            if item.state == UPLOADING:
                item = replace(item, state=PENDING, updated_ns=time.time_ns())
                self.store.save(item)
            self._items[item.id] = item
        if self._items:
            left = sum(1 for i in self._items.values() if i.state != DONE)
            log.info("upload queue of %s resumed: %d item(s), %d not uploaded",
                     self.session_dir, len(self._items), left)

    @staticmethod
    def _check_phase(phase: str) -> str:
        if phase not in (PHASE_CAPTURE, PHASE_POST):
            raise ValueError(f"phase {phase!r}: must be {PHASE_CAPTURE!r} or {PHASE_POST!r}")
        return phase
