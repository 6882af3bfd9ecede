"""Atomic file outputs: a half-written pcap must never look like a finished one."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rtpcore.errors import InputError

__all__ = ["OutputExistsError", "atomic_output", "fsync_dir"]

TEMP_SUFFIX = ".part"


class OutputExistsError(InputError, FileExistsError):
    """The output file is already there; catchable as InputError (CLI) or FileExistsError (stdlib style)."""


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
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp path beside `final`; rename it onto `final` only when the block succeeds."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final} already exists; choose another --out or remove it")
    temp = final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
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
