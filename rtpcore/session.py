"""Session folders: <root>/<optional folder>/<timestamp>/{raw,uploads,decrypted,combined} and imports into them."""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
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
