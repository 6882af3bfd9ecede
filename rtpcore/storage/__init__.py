"""Session storage: one interface, local and S3 backends, a durable upload queue and the fallback between them.

boto3 is imported only by rtpcore.storage.s3, and only when S3 is used (import it explicitly for S3Storage).
The names below load on first use (PEP 562), so `rtpcore.storage.download.is_s3_url` costs no queue/policy import.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ObjectInfo": "base", "Storage": "base", "StorageAuthError": "base", "StorageError": "base",
    "StorageIntegrityError": "base", "StorageNotFoundError": "base", "StorageUnavailableError": "base",
    "DownloadReport": "download", "S3Url": "download", "download_session": "download", "parse_s3_url": "download",
    "SESSION_SUBDIRS": "keys", "SessionLocation": "keys", "key_for_path": "keys", "path_for_key": "keys",
    "split_key": "keys",
    "LocalStorage": "local",
    "FallbackPolicy": "policy", "FlushReport": "policy", "SessionStorage": "policy", "StorageStatus": "policy",
    "flush_session": "policy", "open_session_storage": "policy",
    "QUEUE_DIR": "queue", "UploadItem": "queue", "UploadQueue": "queue",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
