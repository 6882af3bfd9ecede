"""Session folders: <root>/<optional folder>/<timestamp>/{raw,uploads,decrypted,combined} and imports into them."""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rtpcore.errors import InputError
from rtpcore.fsutil import atomic_output
from rtpcore.pipeline import SessionPaths

SESSION_FORMAT = "%Y%m%d_%H%M%S"
_SAFE_FOLDER = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def new_session(root: Path, folder: str | None = None, *, now: datetime | None = None) -> SessionPaths:
    """Create a fresh session folder; a second one in the same second gets a -2, -3 … suffix."""
    if folder and (not _SAFE_FOLDER.match(folder) or ".." in folder.split("/")):
        raise InputError(f"output folder {folder!r}: use letters, digits, '.', '_', '-' and '/' only")
    base = Path(root).expanduser() / (folder or "")
    stamp = (now or datetime.now(timezone.utc)).strftime(SESSION_FORMAT)
    for n in range(1, 1000):
        candidate = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        paths = SessionPaths(candidate.resolve())
        for sub in (paths.raw, paths.uploads, paths.decrypted, paths.filtered):
            sub.mkdir(parents=True, exist_ok=True)
        return paths
    raise InputError(f"{base}: cannot create a new session folder for {stamp}")


def import_file(source: Path, dest_dir: Path) -> Path:
    """Hard-link (same filesystem) or copy one file into the session; never overwrite."""
    source = Path(source)
    if not source.is_file():
        raise InputError(f"{source}: not found or not a file")
    dest = dest_dir / source.name
    if dest.exists():
        raise InputError(f"{dest} already exists in the session; files to import must have distinct names")
    try:
        os.link(source, dest)
    except OSError:
        with atomic_output(dest) as tmp:
            shutil.copyfile(source, tmp)
    return dest


def import_media(paths: SessionPaths, sources: Sequence[Path]) -> list[Path]:
    """Bring raw media captures into <session>/raw/."""
    return [import_file(s, paths.raw) for s in sources]


def import_sip(paths: SessionPaths, sip: Path) -> Path:
    """Bring the SIP pcap into <session>/uploads/ (the seed's place for uploaded SIP captures)."""
    return import_file(sip, paths.uploads)


# -- sessions as first-class inputs (issue 10) -----------------------------------------------------
SUMMARY_SESSION = re.compile(r"# Capture session `([^`]+)`")
RAW_DIR = "raw"
KIND_LOCAL = "local"
KIND_S3 = "s3"


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A session named by a run name, a folder or an S3 URL: where its raw media is, and its ticket folder."""

    kind: str                 # KIND_LOCAL or KIND_S3
    root: Path | None         # local session root (None for an S3 session not on this machine)
    url: str | None           # s3://bucket/…/<timestamp>/ when the session lives in S3
    folder: str               # the ticket folder ("" when the session sits right under the capture root)
    stamp: str                # the session's timestamp folder name

    @property
    def media(self) -> str:
        """What the correlation reads: the local raw/ folder, or the S3 session URL."""
        if self.root is not None:
            return str(self.root / RAW_DIR)
        assert self.url is not None
        return self.url

    def local_root(self, capture_root: Path) -> Path:
        """Where outputs go: the session itself, or <capture root>/<folder>/<timestamp> for an S3-only session."""
        return self.root if self.root is not None else Path(capture_root) / self.folder / self.stamp


def find_raw(path: Path) -> Path:
    """A session root's raw/ (so the folder the capture summary prints works as it is); any other path unchanged."""
    path = Path(path)
    return path / RAW_DIR if path.is_dir() and (path / RAW_DIR).is_dir() else path


def ref_for_dir(path: Path, capture_root: Path | None = None) -> SessionRef:
    """A local session from its root or its raw/ folder; InputError when it holds no raw/."""
    path = Path(path).expanduser().resolve()
    if path.name == RAW_DIR:
        path = path.parent
    if not (path / RAW_DIR).is_dir():
        raise InputError(f"{path}: not a session folder (no raw/ inside); give the folder the capture summary printed")
    folder = ""
    if capture_root is not None and path.parent.resolve().is_relative_to(Path(capture_root).resolve()):
        folder = path.parent.resolve().relative_to(Path(capture_root).resolve()).as_posix().strip(".")
    else:
        folder = path.parent.name
    return SessionRef(KIND_LOCAL, path, None, folder, path.name)


def ref_for_url(url: str) -> SessionRef:
    """An S3 session from s3://bucket/<prefix>/<env>/<folder>/<timestamp>[/raw]."""
    from rtpcore.storage.download import parse_s3_url

    try:
        parsed = parse_s3_url(url)
    except ValueError as exc:
        raise InputError(f"session: {exc}") from None
    parts = [p for p in parsed.key.split("/") if p]
    if parts and parts[-1] == RAW_DIR:
        parts.pop()
    if not parts:
        raise InputError(f"{url}: name the session folder (s3://bucket/…/<folder>/<timestamp>/)")
    clean = f"s3://{parsed.bucket}/{'/'.join(parts)}/"
    return SessionRef(KIND_S3, None, clean, parts[-2] if len(parts) > 1 else "", parts[-1])


def session_from_summary(markdown: str) -> str | None:
    """The session folder the capture-session summary artifact names (its "# Capture session `…`" heading)."""
    match = SUMMARY_SESSION.search(markdown)
    return match.group(1) if match else None


def discard_if_unused(paths: SessionPaths, created_parent: Path | None = None) -> bool:
    """After a failed run: remove a session folder that holds no outputs (and its ticket folder if we made it)."""
    if any(paths.combined.glob("*.pcap")) or any(p.is_file() for p in paths.decrypted.glob("*")):
        return False
    shutil.rmtree(paths.root, ignore_errors=True)
    if created_parent is not None:
        try:
            created_parent.rmdir()  # only when empty: another session of the same ticket stays
        except OSError:
            pass
    return not paths.root.exists()
