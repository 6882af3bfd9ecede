"""Session storage: one interface, local and S3 backends, a durable upload queue and the fallback between them.

boto3 is imported only by rtpcore.storage.s3, and only when S3 is used (import it explicitly for S3Storage).
"""
from __future__ import annotations

from rtpcore.storage.base import (
    ObjectInfo,
    Storage,
    StorageAuthError,
    StorageError,
    StorageIntegrityError,
    StorageNotFoundError,
    StorageUnavailableError,
)
from rtpcore.storage.download import DownloadReport, S3Url, download_session, parse_s3_url
from rtpcore.storage.keys import SESSION_SUBDIRS, SessionLocation, key_for_path, path_for_key, split_key
from rtpcore.storage.local import LocalStorage
from rtpcore.storage.policy import (
    FallbackPolicy,
    FlushReport,
    SessionStorage,
    StorageStatus,
    flush_session,
    open_session_storage,
)
from rtpcore.storage.queue import QUEUE_DIR, UploadItem, UploadQueue

__all__ = [
    "QUEUE_DIR",
    "SESSION_SUBDIRS",
    "DownloadReport",
    "FallbackPolicy",
    "FlushReport",
    "LocalStorage",
    "ObjectInfo",
    "S3Url",
    "SessionLocation",
    "SessionStorage",
    "Storage",
    "StorageAuthError",
    "StorageError",
    "StorageIntegrityError",
    "StorageNotFoundError",
    "StorageStatus",
    "StorageUnavailableError",
    "UploadItem",
    "UploadQueue",
    "download_session",
    "flush_session",
    "key_for_path",
    "open_session_storage",
    "parse_s3_url",
    "path_for_key",
    "split_key",
]
