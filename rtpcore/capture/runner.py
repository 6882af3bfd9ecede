"""One capture run with its storage: what both `rtphelper capture` and the capture-session flow call.

The capture starts at once; S3 is probed in the background (a black-holed endpoint would otherwise hold
the start for connect timeout × attempts), and every closed chunk is queued for upload. S3 trouble at
any point only switches the session to local-fallback: a capture never fails for storage reasons.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.capture.engine import ADHOC, CaptureSession, CaptureTarget, ReconnectPolicy
from rtpcore.capture.stats import CaptureProgress, CaptureSummary
from rtpcore.storage.keys import SessionLocation
from rtpcore.storage.policy import (
    MODE_LOCAL,
    MODE_S3,
    STORAGE_FALLBACK,
    FallbackPolicy,
    FlushReport,
    SessionStorage,
    StorageStatus,
)
from rtpcore.storage.queue import DONE, FAILED, PHASE_CAPTURE, PHASE_POST, QueueStore

if TYPE_CHECKING:
    from rtpcore.settings import Settings
    from rtpcore.storage.base import Storage

__all__ = ["CaptureRequest", "CaptureResult", "RunningCapture", "run_capture", "session_location", "start_capture"]

log = logging.getLogger(__name__)

STORAGE_MODES = (MODE_LOCAL, MODE_S3)
MIXED_ENVIRONMENTS = "mixed"
CLOSE_WAIT = 1.0  # seconds for the upload workers to end: the result must not wait out S3's read timeout
_UNSAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CaptureRequest:
    """What to capture, where, for how long, and where its files go (None → the settings' value)."""

    targets: tuple[CaptureTarget, ...]
    session_dir: Path
    duration: float
    filter_expression: str = ""
    max_bytes: int | None = None
    max_seconds: float | None = None
    storage_mode: str | None = None
    environment: str = ADHOC
    folder: str | None = None
    flush_timeout: float | None = None  # None: RTPHELPER_S3_FINAL_FLUSH_SECONDS


@dataclass(frozen=True)
class CaptureResult:
    """The capture summary plus where its files ended up (storage never makes a capture fail)."""

    summary: CaptureSummary
    storage: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every host captured to the end; pending uploads do not count against it."""
        return self.summary.ok

    def to_json(self) -> dict[str, Any]:
        """The CLI --json object: {"hosts": [...], "session": DIR, "storage": {...}}."""
        return {**self.summary.to_json(), "storage": self.storage}


def _segment(text: str) -> str:
    """A key segment from a free-form name (hosts.yaml environments may hold spaces)."""
    return _UNSAFE_SEGMENT.sub("_", text).strip("._") or ADHOC


def _environment(request: CaptureRequest) -> str:
    """The targets' environment; the request's own when they have none (ad-hoc) or several."""
    envs = {t.env for t in request.targets if t.env and t.env != ADHOC}
    if len(envs) == 1:
        return _segment(envs.pop())
    if len(envs) > 1:
        log.warning("capture spans environments %s; its S3 keys use %r", ", ".join(sorted(envs)),
                    request.environment if request.environment != ADHOC else MIXED_ENVIRONMENTS)
        return _segment(request.environment if request.environment != ADHOC else MIXED_ENVIRONMENTS)
    return _segment(request.environment or ADHOC)


def session_location(request: CaptureRequest, settings: Settings) -> SessionLocation:
    """<prefix>/<env>/<folder>/<timestamp> with the session folder's name as the timestamp."""
    folder = request.folder.strip("/") if request.folder else None
    if folder:
        folder = "/".join(_segment(part) for part in folder.split("/") if part)
    return SessionLocation(settings.s3_key_prefix, _environment(request), folder or None,
                           _segment(Path(request.session_dir).resolve().name))


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _open_storage(
    request: CaptureRequest, settings: Settings, mode: str, location: SessionLocation,
    environ: Mapping[str, str] | None, storage: Storage | None,
) -> tuple[SessionStorage, StorageStatus | None]:
    """The session's storage without any network call; (local storage, why) when S3 cannot even be set up."""
    from rtpcore.storage.policy import open_session_storage  # the one composition root (tests use it too)

    session_dir = Path(request.session_dir).resolve()
    try:
        opened = open_session_storage(settings, session_dir, location, storage=storage, environ=environ,
                                      phase=PHASE_CAPTURE, mode=mode, start=False)
    except Exception as exc:  # noqa: BLE001 - no bucket, bad profile, unwritable queue: capture anyway
        why = str(exc)
        log.error("S3 storage cannot be used for this capture (%s); capturing to local disk only. Fix the "
                  "configuration, then run: rtphelper flush %s", why, session_dir)
        try:  # a later `rtphelper flush` then knows where the session belongs
            QueueStore(session_dir).save_location(location)
        except OSError as save_exc:
            log.warning("cannot record the session's S3 location in %s: %s", session_dir, save_exc)
        return (SessionStorage(session_dir, FallbackPolicy(MODE_LOCAL, None), None),
                StorageStatus(STORAGE_FALLBACK, _now_iso(), why))
    return opened, None


class RunningCapture:
    """A started capture: stop it, watch it, wait for its result (which includes the final flush)."""

    def __init__(self, request: CaptureRequest, session: CaptureSession, storage: SessionStorage, mode: str,
                 start_problem: StorageStatus | None, flush_budget: float) -> None:
        self.request = request
        self.session = session
        self.storage = storage
        self.mode = mode
        self._start_problem = start_problem
        self._lock = threading.RLock()  # RLock: a signal handler may call wait() during the final flush
        self._finishing = False
        self._closed = threading.Event()
        self._result: CaptureResult | None = None
        self._probe = threading.Thread(target=self._probe_storage, name="s3-start-probe", daemon=True)
        self._flush_budget = flush_budget

    def _probe_storage(self) -> None:
        """Check S3 once (falling back when it fails), then let the upload workers go."""
        policy, queue = self.storage.policy, self.storage.queue
        if queue is None:
            return
        try:
            if not policy.probe():
                log.error("S3 storage unreachable at the start of the capture; it goes on to local disk only "
                          "(uploads stay queued, probed every %.0f s): %s", policy.probe_interval,
                          policy.status().why)
            if not self._closed.is_set():  # the capture may have ended while a hung endpoint held the probe
                queue.start()
        except Exception:  # noqa: BLE001 - storage bugs must not reach the capture
            log.exception("starting the upload queue failed; files stay local (rtphelper flush uploads them)")

    def stop(self) -> None:
        """Cooperative stop: chunks are closed and the manifest finished within about a second."""
        self.session.stop()

    def progress(self) -> list[CaptureProgress]:
        """Every target's live counters."""
        return self.session.progress()

    def wait(self, timeout: float | None = None) -> CaptureResult | None:
        """None while the capture runs; once it ended: the final flush (up to flush_timeout) and the result.

        Called again from a signal handler while this thread is in the final flush, it returns None at once.
        """
        summary = self.session.wait(timeout)
        if summary is None:
            return None
        with self._lock:
            if self._result is None:
                if self._finishing:
                    return None
                self._finishing = True
                try:
                    self._result = CaptureResult(summary, self._finish_storage())
                finally:
                    self._finishing = False
            return self._result

    def _finish_storage(self) -> dict[str, Any]:
        """Flush in the post phase and describe where the files are; never raises."""
        storage, budget = self.storage, self._flush_budget
        started = time.monotonic()
        error: str | None
        try:
            if self._probe.is_alive():
                self._probe.join(budget)
            storage.set_phase(PHASE_POST)
            report = storage.flush(max(0.0, budget - (time.monotonic() - started)))
        except Exception as exc:  # noqa: BLE001 - the capture's result must come back whatever storage does
            log.exception("final upload flush failed; files stay local (rtphelper flush uploads them)")
            report = None
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = None
        finally:
            self._closed.set()
            if storage.queue is not None:  # a worker stuck on a hung endpoint ends by itself; records are atomic
                storage.queue.close(timeout=CLOSE_WAIT)
            storage.close()
        return self._storage_json(report, error)

    def _storage_json(self, report: FlushReport | None, error: str | None) -> dict[str, Any]:
        storage = self.storage
        status = self._start_problem or storage.policy.status()
        items = storage.queue.items() if storage.queue is not None else []
        left = [i.path for i in items if i.state != DONE]
        out: dict[str, Any] = {
            "mode": self.mode, "status": status.storage, "switched_at": status.switched_at, "why": status.why,
            "restored_at": status.restored_at, "uploaded": sum(1 for i in items if i.state == DONE),
            "pending": left, "failed": [i.path for i in items if i.state == FAILED],
            "location": None,
        }
        if self._start_problem is not None:
            raw = self.session.raw
            out["pending"] = sorted(f"{raw.name}/{p.name}" for p in raw.glob("*")
                                    if p.is_file() and not p.name.startswith("."))
        if storage.queue is not None:
            q = storage.queue
            bucket = getattr(q.storage, "bucket", None)
            out["location"] = f"s3://{bucket}/{q.location.key_prefix}/" if bucket else q.location.key_prefix
        if report is not None and report.errors:
            out["errors"] = list(report.errors)
        if error is not None:
            out["errors"] = [*out.get("errors", []), error]
        return out


def start_capture(
    request: CaptureRequest,
    settings: Settings,
    *,
    on_progress: Callable[[CaptureProgress], None] | None = None,
    environ: Mapping[str, str] | None = None,
    storage: Storage | None = None,
) -> RunningCapture:
    """Open the session's storage, start capturing every target, and return at once.

    `storage` replaces the backend built from the settings (tests, callers with their own S3 client).
    """
    mode = request.storage_mode or settings.storage_mode
    if mode not in STORAGE_MODES:
        raise ValueError(f"storage mode {mode!r}: must be {' or '.join(map(repr, STORAGE_MODES))}")
    max_bytes = settings.rolling_pcap_max_bytes if request.max_bytes is None else request.max_bytes
    max_seconds = settings.rolling_pcap_max_seconds if request.max_seconds is None else request.max_seconds
    reconnect = ReconnectPolicy(settings.rpcap_reconnect_base_seconds, settings.rpcap_reconnect_max_seconds,
                                settings.rpcap_reconnect_max_attempts)
    location = session_location(request, settings)
    session_storage, problem = _open_storage(request, settings, mode, location, environ, storage)
    try:
        session = CaptureSession(
            request.targets, Path(request.session_dir), duration=request.duration,
            filter_expression=request.filter_expression, max_bytes=max_bytes, max_seconds=max_seconds,
            reconnect=reconnect, on_progress=on_progress, on_chunk_closed=session_storage.on_chunk_closed,
        )
        budget = settings.s3_final_flush_seconds if request.flush_timeout is None else request.flush_timeout
        running = RunningCapture(request, session, session_storage, mode, problem, budget)
        session.start()
    except BaseException:
        session_storage.close()
        raise
    running._probe.start()
    if mode == MODE_S3 and problem is None:
        log.info("capture %s: chunks go to %s/", session.root, location.key_prefix)
    return running


def run_capture(
    request: CaptureRequest,
    settings: Settings,
    *,
    on_progress: Callable[[CaptureProgress], None] | None = None,
    environ: Mapping[str, str] | None = None,
    storage: Storage | None = None,
) -> CaptureResult:
    """start_capture() and wait for the end, final flush included."""
    running = start_capture(request, settings, on_progress=on_progress, environ=environ, storage=storage)
    result = running.wait()
    assert result is not None
    return result
