"""The local-disk backend: the same interface as S3 over a folder, for storage mode `local` and for tests."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from rtpcore.fsutil import atomic_output
from rtpcore.storage.base import (
    RANGE_BLOCK,
    DEFAULT_URL_EXPIRES,
    ObjectInfo,
    Storage,
    StorageError,
    StorageIntegrityError,
    StorageNotFoundError,
    StorageUnavailableError,
    file_digests,
)
from rtpcore.storage.keys import check_key

__all__ = ["LocalStorage"]

log = logging.getLogger(__name__)


class LocalStorage(Storage):
    """Objects are files under root, at root/<key>."""

    kind = "local"

    def __init__(self, root: Path, *, prefix: str = "") -> None:
        self.root = Path(root).expanduser().resolve()
        self.prefix = prefix.strip("/")

    def path_of(self, key: str) -> Path:
        """The file that holds key."""
        return self.root / check_key(key)

    def put_file(self, local_path: Path, key: str, *, sha256: str | None = None) -> ObjectInfo:
        source, dest = Path(local_path), self.path_of(key)
        want = file_digests(source)
        if sha256 is not None and sha256 != want.sha256:
            raise StorageIntegrityError(f"{source}: sha256 is {want.sha256}, not {sha256} as recorded; "
                                        "the file changed after it was closed")
        if source.resolve() == dest:
            return self._info(key, dest, want.sha256)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(dest, overwrite=True) as tmp:
                shutil.copyfile(source, tmp)
        except OSError as exc:
            raise StorageError(f"cannot store {source} at {dest}: {exc.strerror or exc}") from exc
        got = file_digests(dest)
        if (got.size, got.sha256) != (want.size, want.sha256):
            raise StorageIntegrityError(f"{dest}: copy of {source} differs ({got.size} bytes, sha256 {got.sha256}; "
                                        f"expected {want.size} bytes, sha256 {want.sha256})")
        return self._info(key, dest, got.sha256)

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path_of(key)
        return self._info(key, path, None) if path.is_file() else None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not path.name.startswith("."):
                yield self._info(key, path, None)

    def get_file(self, key: str, local_path: Path) -> ObjectInfo:
        source, dest = self.path_of(key), Path(local_path)
        if not source.is_file():
            raise StorageNotFoundError(f"{key}: not found in local storage {self.root}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(dest, overwrite=True) as tmp:
            shutil.copyfile(source, tmp)
        return self._info(key, dest, None)

    def read_range(self, key: str, start: int, end: int, out: BinaryIO) -> int:
        """Bytes [start, end) of a stored file appended to out."""
        source = self.path_of(key)
        if not source.is_file():
            raise StorageNotFoundError(f"{key}: not found in local storage {self.root}")
        with open(source, "rb") as f:
            f.seek(start)
            done = 0
            while done < end - start and (block := f.read(min(RANGE_BLOCK, end - start - done))):
                out.write(block)
                done += len(block)
        return done

    def presigned_url(self, key: str, expires: int = DEFAULT_URL_EXPIRES) -> str:
        return self.path_of(key).as_uri()

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailableError(f"local storage {self.root}: {exc.strerror or exc}") from exc

    def describe(self) -> str:
        return f"local storage {self.root}"

    @staticmethod
    def _info(key: str, path: Path, sha256: str | None) -> ObjectInfo:
        stat = path.stat()
        return ObjectInfo(key=key, size=stat.st_size, sha256=sha256, last_modified_ns=stat.st_mtime_ns)
