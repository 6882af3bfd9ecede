"""Atomic file outputs: a half-written pcap must never look like a finished one."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rtpcore.errors import InputError

__all__ = ["OutputExistsError", "atomic_output", "fsync_dir", "new_temp"]

TEMP_SUFFIX = ".part"
TEMP_TOKEN_BYTES = 8      # 64 random bits: a temp name nobody can guess in advance
TEMP_MODE = 0o600
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class OutputExistsError(InputError, FileExistsError):
    """The output file is already there; catchable as InputError (CLI) or FileExistsError (stdlib style)."""


def new_temp(folder: Path, stem: str) -> Path:
    """Create an empty temp file with a random name, exclusively and never through a symlink (no planted names)."""
    folder = Path(folder)
    while True:
        temp = folder / f".{stem}.{secrets.token_hex(TEMP_TOKEN_BYTES)}{TEMP_SUFFIX}"
        try:
            fd = os.open(temp, _TEMP_FLAGS, TEMP_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return temp


def fsync_dir(path: Path) -> None:
    """Flush a folder's entry table so a rename survives a power cut (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    """Force the temp file's bytes to disk before it takes the final name."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temp path beside `final`; rename it onto `final` only when the block succeeds."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final} already exists; choose another --out or remove it")
    temp = new_temp(final.parent, final.name)
    try:
        yield temp
        if not temp.exists():
            raise FileNotFoundError(f"{temp}: the block did not create its output file")
        _fsync_file(temp)
        if not overwrite and final.exists():
            raise OutputExistsError(f"{final} already exists; choose another --out or remove it")
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
