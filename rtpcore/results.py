"""Result transactions: a correlation writes into a staging folder and swaps it in only when complete.

Old results (decrypted/, combined/ with combined/filtered/) stay untouched until the swap, then are replaced
as a whole; an interrupted run (SIGINT, SIGTERM, a cancelled flow, SIGKILL) leaves only a staging folder,
which the next run removes (rolling back a swap that a SIGKILL cut in half).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rtpcore.errors import InputError
from rtpcore.fsutil import fsync_dir

log = logging.getLogger(__name__)

MEDIA_RAW = "media_raw.pcap"
MEDIA_DECRYPTED = "media_decrypted.pcap"
SIP_PLUS_MEDIA = "SIP_plus_media_decrypted.pcap"
DECRYPTED_DIR = "decrypted"
COMBINED_DIR = "combined"
FILTERED_DIR = "filtered"
RESULT_DIRS = (DECRYPTED_DIR, COMBINED_DIR)  # swapped as a whole; combined/ holds filtered/
STAGING_PREFIX = ".staging-"
REPLACED_DIR = ".replaced"                   # inside the staging folder: the old results during the swap
_DEFERRED_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@dataclass(frozen=True, slots=True)
class SessionPaths:
    """The seed's session layout: <root>/{raw,uploads,decrypted,combined/filtered}."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def decrypted(self) -> Path:
        return self.root / DECRYPTED_DIR

    @property
    def combined(self) -> Path:
        return self.root / COMBINED_DIR

    @property
    def filtered(self) -> Path:
        return self.combined / FILTERED_DIR

    @property
    def media_raw(self) -> Path:
        return self.combined / MEDIA_RAW

    @property
    def media_decrypted(self) -> Path:
        return self.combined / MEDIA_DECRYPTED

    @property
    def sip_plus_media(self) -> Path:
        return self.combined / SIP_PLUS_MEDIA

    @property
    def finals(self) -> tuple[Path, ...]:
        return (self.media_raw, self.media_decrypted, self.sip_plus_media)

    def discard_finals(self) -> None:
        """After a failed run: nothing may be left under the final output names."""
        for p in self.finals:
            p.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class ResultTransaction:
    """Where a run writes (staged) and where its results appear on commit (final)."""

    final: SessionPaths
    staged: SessionPaths
    overwrite: bool

    def rebase(self, path: Path) -> Path:
        """A staged output's name once committed (what the report must show)."""
        return self.final.root / Path(path).relative_to(self.staged.root)


def existing_results(paths: SessionPaths) -> list[Path]:
    """Files a commit would replace: the three finals and every per-file output (filtered/, decrypted/)."""
    found: list[Path] = []
    for folder in RESULT_DIRS:
        top = paths.root / folder
        if top.is_dir():
            found += sorted(p for p in top.rglob("*") if p.is_file() and not p.name.startswith("."))
    return found


def clean_leftovers(root: Path) -> list[Path]:
    """Remove staging folders of interrupted runs; a swap cut short by SIGKILL is rolled back first."""
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for staging in sorted(root.glob(f"{STAGING_PREFIX}*")):
        if not staging.is_dir() or staging.is_symlink():
            continue
        replaced = staging / REPLACED_DIR
        if replaced.is_dir() and any((staging / name).exists() for name in RESULT_DIRS):
            _roll_back(root, staging, replaced)
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(staging)
    if removed:
        log.info("removed %d staging folder(s) of interrupted runs in %s", len(removed), root)
    return removed


def _roll_back(root: Path, staging: Path, replaced: Path) -> None:
    """A half-done swap: the new folders already moved in go, the old ones come back."""
    for name in RESULT_DIRS:
        if not (staging / name).exists() and (root / name).exists():
            shutil.rmtree(root / name)
        if (replaced / name).exists() and not (root / name).exists():
            os.replace(replaced / name, root / name)
    log.warning("%s: an interrupted run had begun replacing the results; the previous results were restored", root)


def begin(out: Path, *, overwrite: bool = False) -> ResultTransaction:
    """Refuse up front when results exist without --overwrite; otherwise a fresh staging folder beside them."""
    final = SessionPaths(Path(out).expanduser().resolve())
    final.root.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final.root)
    existing = existing_results(final)
    if existing and not overwrite:
        raise InputError(f"{existing[0]} already exists; choose another --out or pass --overwrite")
    staged = SessionPaths(Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=final.root)))
    for folder in (staged.decrypted, staged.filtered):
        folder.mkdir(parents=True)
    return ResultTransaction(final, staged, overwrite)


def commit(txn: ResultTransaction) -> None:
    """Swap the staged results in as a whole (SIGINT/SIGTERM wait until the swap is done)."""
    root, staging = txn.final.root, txn.staged.root
    replaced = staging / REPLACED_DIR
    with signals_deferred():
        if not txn.overwrite and existing_results(txn.final):
            raise InputError(f"{txn.final.root}: results appeared during the run; pass --overwrite to replace them")
        replaced.mkdir()
        for name in RESULT_DIRS:
            if (root / name).exists():
                os.replace(root / name, replaced / name)
        fsync_dir(root)
        for name in RESULT_DIRS:
            os.replace(staging / name, root / name)
        fsync_dir(root)
    shutil.rmtree(staging, ignore_errors=True)


def abort(txn: ResultTransaction) -> None:
    """A failed or interrupted run: its staging folder goes, the previous results were never touched."""
    shutil.rmtree(txn.staged.root, ignore_errors=True)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM in a critical section (main thread only: handlers run there), deliver them after."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
