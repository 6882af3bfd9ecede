"""Import a stored session: copy its raw/ (and uploads/) objects into a local session folder for correlation."""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rtpcore.storage.base import Storage, StorageError, StorageNotFoundError, file_digests
from rtpcore.storage.keys import SESSION_SUBDIRS, check_key

__all__ = ["DEFAULT_IMPORT_SUBDIRS", "DownloadReport", "S3Url", "download_session", "parse_s3_url"]

log = logging.getLogger(__name__)

DEFAULT_IMPORT_SUBDIRS = ("raw", "uploads")
S3_SCHEME = "s3://"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class S3Url:
    """bucket and key (prefix) of an s3:// URL; key has no edge slashes."""

    bucket: str
    key: str


def parse_s3_url(url: str) -> S3Url:
    """Split "s3://bucket/prefix/…"; ValueError says what is wrong."""
    text = url.strip()
    if not text.lower().startswith(S3_SCHEME):
        raise ValueError(f"{url!r}: an S3 URL starts with s3:// (s3://<bucket>/<prefix>/<environment>/…/<timestamp>)")
    bucket, _, key = text[len(S3_SCHEME):].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{url!r}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.', '-')")
    key = key.strip("/")
    if key:
        check_key(key)
    return S3Url(bucket, key)


@dataclass(frozen=True, slots=True)
class DownloadReport:
    """The files a download wrote or found already present (same size and sha256)."""

    source: str
    files: tuple[Path, ...]
    skipped: tuple[Path, ...]
    bytes: int


def _session_prefix(storage: Storage, source: str | tuple[str, str]) -> tuple[Storage, str, tuple[str, ...] | None]:
    """(storage to read from, session key prefix, subdir named by the URL or None)."""
    if isinstance(source, tuple):
        environment, session_path = source
        parts = [p for p in (storage.prefix, environment.strip("/"), session_path.strip("/")) if p]
        return storage, check_key("/".join(parts)), None
    url = parse_s3_url(source)
    if not url.key:
        raise ValueError(f"{source!r}: name the session folder, not only the bucket")
    bucket = getattr(storage, "bucket", None)
    if bucket is not None and bucket != url.bucket:
        storage = storage.for_bucket(url.bucket)  # type: ignore[attr-defined]
    head, _, last = url.key.rpartition("/")
    if head and last in SESSION_SUBDIRS:
        return storage, head, (last,)
    return storage, url.key, None


def download_session(
    storage: Storage,
    source: str | tuple[str, str],
    dest_dir: Path,
    *,
    subdirs: Sequence[str] = DEFAULT_IMPORT_SUBDIRS,
) -> DownloadReport:
    """Copy a session's raw/ and uploads/ objects to dest_dir/{raw,uploads}/…, verified; existing equal files are kept.

    source is an s3:// URL of the session folder, or (environment, "<folder>/<timestamp>") under the
    storage's configured prefix.
    """
    storage, prefix, only = _session_prefix(storage, source)
    wanted = only or tuple(subdirs)
    dest_dir = Path(dest_dir)
    written: list[Path] = []
    skipped: list[Path] = []
    total = 0
    for sub in wanted:
        for obj in storage.list(f"{prefix}/{sub}/"):
            relative = obj.key[len(prefix) + 1:]
            dest = dest_dir.joinpath(*check_key(relative).split("/"))
            if dest.is_file() and dest.stat().st_size == obj.size:
                head = storage.head(obj.key)
                if head is not None and head.sha256 and file_digests(dest).sha256 == head.sha256:
                    skipped.append(dest)
                    continue
            if dest.exists() and not dest.is_file():
                raise StorageError(f"{dest}: exists and is not a file; cannot import {obj.key} there")
            info = storage.get_file(obj.key, dest)
            written.append(dest)
            total += info.size
    if not written and not skipped:
        raise StorageNotFoundError(f"no {'/ or '.join(wanted)}/ objects under {prefix}/ in {storage.describe()}; "
                                   "check the session URL or environment/session path")
    log.info("imported %d file(s) (%d already present) from %s/ into %s", len(written), len(skipped), prefix, dest_dir)
    return DownloadReport(source=prefix, files=tuple(written), skipped=tuple(skipped), bytes=total)
