"""Sessions first-class: resolve one from a run name, folder or S3 URL, and list recent ones with their state."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.capture.manifest import MANIFEST_NAME, Manifest
from rtpcore.errors import InputError
from rtpcore.results import COMBINED_DIR, SIP_PLUS_MEDIA
from rtpcore.session import (
    RAW_DIR, SESSION_FORMAT, SessionRef, ref_for_dir, ref_for_url, session_from_summary,
)
from rtpcore.storage.download import is_s3_url
from rtpcore.storage.keys import SESSION_SUBDIRS

if TYPE_CHECKING:
    from rtpcore.desk.prefect_api import PrefectApi
    from rtpcore.settings import Settings
    from rtpcore.storage.base import Storage

STATE_CAPTURING = "capturing"
STATE_CAPTURED = "captured"
STATE_CORRELATED = "correlated"
STATE_FAILED = "failed"
MAX_DEPTH = 4            # <root>/<folder, may hold '/'>/<timestamp>: how deep to look for sessions
DEFAULT_LIMIT = 20


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One row of the sessions listing."""

    location: str         # local folder or s3:// URL
    folder: str
    stamp: str
    state: str
    raw_files: int
    why: str = ""

    def row(self) -> dict[str, Any]:
        return {"session": self.location, "folder": self.folder or "-", "started": self.stamp, "state": self.state,
                "raw files": self.raw_files, "note": self.why}


def resolve_session(spec: str, capture_root: Path, api: PrefectApi | None = None) -> SessionRef:
    """An s3:// URL, a session folder (root or raw/), or the name of a capture-session run (through the API)."""
    text = spec.strip()
    if not text:
        raise InputError("session is empty: give a capture run name, a session folder or an s3:// session URL")
    if is_s3_url(text):
        return ref_for_url(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return ref_for_dir(path, capture_root)
    if "/" in text or api is None:
        raise InputError(f"{text}: no such session folder on this machine, and not a capture run name")
    runs = api.flow_runs_named(text)
    if not runs:
        raise InputError(f"{text}: no session folder and no flow run of that name at {api.url}; give the capture "
                         "run's name as the UI shows it, its session folder, or its s3:// URL")
    for artifact in api.artifacts(runs[0].id):
        found = session_from_summary(artifact.data) if isinstance(artifact.data, str) else None
        if found and Path(found).is_dir():
            return ref_for_dir(Path(found), capture_root)
        url = _s3_url_in(artifact.data) if isinstance(artifact.data, str) else None
        if url:
            return ref_for_url(url)
    raise InputError(f"run {text} ({runs[0].state}) names no session in its summary yet; wait until it has "
                     "finished capturing, or give the session folder")


def _s3_url_in(text: str) -> str | None:
    """The first s3://… URL in a summary (the capture summary carries the S3 session URL)."""
    start = text.find("s3://")
    if start < 0:
        return None
    end = start
    while end < len(text) and text[end] not in " \n\t`)|\"'<>":
        end += 1
    return text[start:end]


def session_state(root: Path) -> tuple[str, str]:
    """(state, why) from the outputs and the manifest: correlated > capturing > failed > captured."""
    root = Path(root)
    if (root / COMBINED_DIR / SIP_PLUS_MEDIA).is_file():
        return STATE_CORRELATED, ""
    raw = [p for p in (root / RAW_DIR).glob("*") if p.is_file() and not p.name.startswith(".")]
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        state = Manifest.read(manifest)
        if not state.finished:
            return STATE_CAPTURING, f"{len(state.chunks)} chunk(s) closed so far"
        if not state.chunks:
            ends = [s for s in state.sessions if s.get("hosts")]
            errors = [str(h["error"]) for s in ends for h in s["hosts"] if isinstance(h, dict) and h.get("error")]
            return STATE_FAILED, errors[0] if errors else "nothing was captured"
        return STATE_CAPTURED, f"{len(state.chunks)} chunk(s)"
    if not raw:
        return STATE_FAILED, "no raw media and no manifest"
    return STATE_CAPTURED, "imported media"


def stamp_time(name: str) -> datetime | None:
    """When a session folder named `<YYYYmmdd_HHMMSS>[-n]` started (None for any other name)."""
    try:
        return datetime.strptime(name.split("-")[0], SESSION_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _started(stamp: str, root: Path) -> datetime:
    return stamp_time(stamp) or datetime.fromtimestamp(root.stat().st_mtime, timezone.utc)


def list_local_sessions(capture_root: Path, *, limit: int = DEFAULT_LIMIT) -> list[SessionInfo]:
    """Session folders (those with raw/) under the capture root, newest first."""
    root = Path(capture_root).expanduser().resolve()
    found: list[tuple[datetime, SessionInfo]] = []
    if not root.is_dir():
        raise InputError(f"{root}: the capture root does not exist; set RTPHELPER_CAPTURE_ROOT")
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in SESSION_SUBDIRS]
        if depth >= MAX_DEPTH:
            dirnames[:] = []
        if not (here / RAW_DIR).is_dir() or here == root:
            continue
        dirnames[:] = []
        state, why = session_state(here)
        folder = here.parent.relative_to(root).as_posix().strip(".")
        raw_files = sum(1 for p in (here / RAW_DIR).glob("*") if p.is_file() and not p.name.startswith("."))
        found.append((_started(here.name, here), SessionInfo(str(here), folder, here.name, state, raw_files, why)))
    found.sort(key=lambda item: (item[0], item[1].location), reverse=True)
    return [info for _, info in found[:limit]]


def list_s3_sessions(storage: Storage, bucket: str, prefix: str, *, limit: int = DEFAULT_LIMIT) -> list[SessionInfo]:
    """Sessions in S3 under the prefix (one listing), newest first: correlated when combined/ exists."""
    sessions: dict[str, dict[str, int]] = {}
    for obj in storage.list(f"{prefix.strip('/')}/" if prefix.strip("/") else ""):
        parts = obj.key.split("/")
        cut = next((i for i, p in enumerate(parts[:-1]) if p in SESSION_SUBDIRS and i > 0), None)
        if cut is None:
            continue
        counts = sessions.setdefault("/".join(parts[:cut]), {})
        counts[parts[cut]] = counts.get(parts[cut], 0) + 1
    rows: list[tuple[datetime, SessionInfo]] = []
    for key, counts in sessions.items():
        parts = key.split("/")
        state = STATE_CORRELATED if counts.get(COMBINED_DIR) else STATE_CAPTURED if counts.get(RAW_DIR) else STATE_FAILED
        stamp = parts[-1]
        when = stamp_time(stamp) or datetime.min.replace(tzinfo=timezone.utc)
        rows.append((when, SessionInfo(f"s3://{bucket}/{key}/", parts[-2] if len(parts) > 1 else "", stamp, state,
                                       counts.get(RAW_DIR, 0))))
    rows.sort(key=lambda item: (item[0], item[1].location), reverse=True)
    return [info for _, info in rows[:limit]]


def sessions_table(rows: list[SessionInfo]) -> str:
    """The listing as aligned text for the terminal."""
    header = f"{'STARTED':<17} {'STATE':<11} {'RAW':>4}  {'FOLDER':<16} SESSION"
    lines = [header] + [f"{r.stamp:<17} {r.state:<11} {r.raw_files:>4}  {(r.folder or '-'):<16} {r.location}"
                        + (f"  ({r.why})" if r.why and r.state == STATE_FAILED else "") for r in rows]
    return "\n".join(lines)


def folder_hint(session: str, output_folder: str = "") -> str:
    """The ticket folder a correlation belongs to, from its parameters alone (run name and tag before it starts)."""
    text = (session or output_folder).strip().rstrip("/")
    if not text:
        return ""
    if is_s3_url(text):
        parts = [p for p in text[len("s3://"):].split("/")[1:] if p]
        if parts and parts[-1] == RAW_DIR:
            parts.pop()
        return parts[-2] if len(parts) > 1 else (parts[-1] if parts else "")
    if session and "/" not in text:
        return text  # a capture run's name
    path = Path(text)
    if path.name == RAW_DIR:
        path = path.parent
    if stamp_time(path.name) is not None:
        return path.parent.name
    return path.name


def run_name(prefix: str, folder: str) -> str:
    """`<prefix>-<folder>` (e.g. correlate-ticket-123); `<prefix>-<UTC time>` when there is no folder."""
    return f"{prefix}-{folder or datetime.now(timezone.utc).strftime(SESSION_FORMAT)}"


def recent_sessions(capture_root: Path, settings: Settings, *, limit: int = DEFAULT_LIMIT) -> list[SessionInfo]:
    """Local sessions, plus the S3 prefix's in S3 mode (an S3 failure is a row, not an exception), newest first."""
    rows = list_local_sessions(capture_root, limit=limit) if Path(capture_root).expanduser().is_dir() else []
    bucket = settings.s3_bucket_name
    if settings.storage_mode == "s3" and bucket:
        from rtpcore.errors import StorageError
        from rtpcore.storage.s3 import S3Storage

        try:
            storage = S3Storage.from_settings(settings)
            rows += list_s3_sessions(storage, bucket, settings.s3_key_prefix, limit=limit)
        except StorageError as exc:
            rows.append(SessionInfo(f"s3://{bucket}/{settings.s3_key_prefix}", "", "-", STATE_FAILED, 0,
                                    f"cannot list S3: {exc}"))
    return sorted(rows, key=lambda r: r.stamp if r.stamp != "-" else "~", reverse=True)[:limit]


def configured_capture_root(settings: Settings) -> Path:
    """RTPHELPER_CAPTURE_ROOT, else hosts.yaml settings.default_capture_root, else ~/Downloads (the seed's rule)."""
    from rtpcore.hosts import capture_root, load_hosts

    hosts = load_hosts(settings.hosts_file) if Path(settings.hosts_file).is_file() else None
    return Path(capture_root(settings, hosts))
