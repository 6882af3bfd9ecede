"""The storage interface both backends implement, the object metadata they return and their errors."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rtpcore.errors import StorageError
from rtpcore.literals import StorageMode

__all__ = [
    "DEFAULT_URL_EXPIRES",
    "HASH_BLOCK",
    "FileDigests",
    "ObjectInfo",
    "Storage",
    "StorageAuthError",
    "StorageError",
    "StorageIntegrityError",
    "StorageNotFoundError",
    "StorageUnavailableError",
    "file_digests",
]

HASH_BLOCK = 1024 * 1024
RANGE_BLOCK = 1024 * 1024  # bytes per write while streaming a ranged read
DEFAULT_URL_EXPIRES = 3600


class StorageUnavailableError(StorageError):
    """S3 cannot be reached or keeps failing (connection refused, timeout, 5xx after retries): fall back to local."""


class StorageAuthError(StorageError):
    """S3 rejected the credentials or denied access; retrying cannot help, a person must fix the config."""


class StorageNotFoundError(StorageError):
    """The bucket or the object does not exist."""


class StorageIntegrityError(StorageError):
    """What the store holds differs from the local file (size or checksum), so the local copy must stay."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object as the store reports it (sha256 from our metadata, etag as the server computed it)."""

    key: str
    size: int
    etag: str | None = None
    sha256: str | None = None
    last_modified_ns: int | None = None


@dataclass(frozen=True, slots=True)
class FileDigests:
    """A local file's size and hashes, computed in one read pass."""

    size: int
    sha256: str
    md5: str
    multipart_etag: str | None  # S3's md5-of-part-md5s "-N" form when the file is sent in parts


def file_digests(path: Path, part_size: int | None = None) -> FileDigests:
    """Size, sha256, md5 and (when part_size is given and the file exceeds it) the multipart ETag of a file."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    part_md5s: list[bytes] = []
    part = hashlib.md5(usedforsecurity=False)
    in_part = size = 0
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            sha.update(block)
            md5.update(block)
            size += len(block)
            if part_size:
                view = memoryview(block)
                while view:
                    take = min(len(view), part_size - in_part)
                    part.update(view[:take])
                    in_part += take
                    view = view[take:]
                    if in_part == part_size:
                        part_md5s.append(part.digest())
                        part, in_part = hashlib.md5(usedforsecurity=False), 0
    if in_part:
        part_md5s.append(part.digest())
    multipart = None
    if part_size and size > part_size:
        multipart = f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"
    return FileDigests(size, sha.hexdigest(), md5.hexdigest(), multipart)


class Storage(ABC):
    """A flat key → file store; keys are '/'-separated and never start with '/'."""

    kind: StorageMode  # the store behind it: a local fallback store is "local"
    prefix: str  # the configured key prefix ("" when none); keys passed in already include it

    @abstractmethod
    def put_file(self, local_path: Path, key: str, *, sha256: str | None = None) -> ObjectInfo:
        """Store a file and verify size and checksum against what the store reports; raise on any mismatch."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size/etag/sha256 of a stored object, None when it does not exist."""

    def exists(self, key: str) -> bool:
        """True when the key is stored."""
        return self.head(key) is not None

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order."""

    @abstractmethod
    def get_file(self, key: str, local_path: Path) -> ObjectInfo:
        """Copy an object to local_path atomically and verify it; StorageNotFoundError when absent."""

    def read_range(self, key: str, start: int, end: int, out: BinaryIO) -> int:
        """Append bytes [start, end) of an object to out (correlation reads only the call's part of a chunk)."""
        raise StorageError(f"{self.describe()}: cannot read part of {key}; download the whole object")

    @abstractmethod
    def presigned_url(self, key: str, expires: int = DEFAULT_URL_EXPIRES) -> str:
        """A URL someone can open to fetch the object (presigned for S3, file:// for local)."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageUnavailableError/StorageAuthError/StorageNotFoundError unless the store is usable now."""

    def set_phase(self, phase: str) -> None:
        """Tune for "capture" (small footprint) or "post" (fast final flush); a no-op by default."""

    def close(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        """A short, secret-free name of the store for messages."""
        return self.kind
