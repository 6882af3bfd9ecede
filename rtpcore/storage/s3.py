"""The S3 backend (the only boto3 user in rtpcore): tuned clients per phase, verified transfers, translated errors.

Verification: every object carries the file's sha256 in its metadata (x-amz-meta-sha256) for end-to-end
identity, and the server's own ETag is checked against a locally computed value: the MD5 for a single
PUT, the MD5-of-part-MD5s "-N" for a multipart upload (parts sized exactly as s3transfer cuts them).
With SSE-KMS the ETag is not an MD5, so only size and the metadata sha256 are compared there.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.utils import ChunksizeAdjuster

from rtpcore.fsutil import atomic_output
from rtpcore.logs import redact_secrets
from rtpcore.storage.base import (
    RANGE_BLOCK,
    DEFAULT_URL_EXPIRES,
    ObjectInfo,
    Storage,
    StorageAuthError,
    StorageError,
    StorageIntegrityError,
    StorageNotFoundError,
    StorageUnavailableError,
    file_digests,
)
from rtpcore.storage.keys import check_key

if TYPE_CHECKING:
    from rtpcore.settings import Settings

__all__ = ["AWS_CREDENTIAL_VARS", "PHASES", "S3Config", "S3Storage", "aws_credentials"]

log = logging.getLogger(__name__)

AWS_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
SHA256_METADATA = "sha256"
PHASE_CAPTURE, PHASE_POST, PHASE_BASE = "capture", "post", "base"
PHASES = (PHASE_CAPTURE, PHASE_POST, PHASE_BASE)
SSE_KMS = ("aws:kms", "aws:kms:dsse")
_AUTH_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AllAccessDisabled", "InvalidClientTokenId", "AccountProblem", "403", "Forbidden",
})
_NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "404", "NotFound"})
_UNAVAILABLE_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "Throttling",
})
_NETWORK_ERRORS = (BotoConnectionError, HTTPClientError, socket.timeout, ConnectionError, TimeoutError)


@dataclass(frozen=True, slots=True)
class S3Config:
    """Everything needed to build the client; from Settings via from_settings, or by hand in tests."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "eu-west-1"
    pool_capture: int = 6
    pool_post_capture: int = 60
    pool_base: int = 10
    multipart_threshold: int = 200 * 1024 * 1024
    multipart_chunksize: int = 100 * 1024 * 1024
    multipart_max_concurrency: int = 10
    multipart_use_threads: bool = True
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_attempts: int = 3  # botocore "standard" retries (connection errors, 5xx, throttling) per request
    probe_timeout: float = 4.0  # the health probe: one request, no retry, this deadline for connect and read

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> S3Config:
        """The RTPHELPER_S3_* settings as a client config; raises StorageError when no bucket is set."""
        bucket = settings.s3_bucket_name
        if not bucket:
            raise StorageError("storage mode is s3 but no bucket is set: set RTPHELPER_S3_PATH=<bucket>/<prefix> "
                               "(or RTPHELPER_S3_BUCKET), or RTPHELPER_STORAGE_MODE=local")
        config = cls(
            bucket=bucket, prefix=settings.s3_key_prefix, endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region, pool_capture=settings.s3_pool_capture,
            pool_post_capture=settings.s3_pool_post_capture, pool_base=settings.s3_max_pool_connections,
            multipart_threshold=settings.s3_multipart_threshold_bytes,
            multipart_chunksize=settings.s3_multipart_chunksize_bytes,
            multipart_max_concurrency=settings.s3_multipart_max_concurrency,
            multipart_use_threads=settings.s3_multipart_use_threads,
            connect_timeout=settings.s3_connect_timeout_seconds, read_timeout=settings.s3_read_timeout_seconds,
            max_attempts=settings.s3_request_max_attempts, probe_timeout=settings.s3_probe_timeout_seconds,
        )
        return replace(config, **overrides)

    def pool_for(self, phase: str) -> int:
        """The HTTP pool size of a phase."""
        if phase not in PHASES:
            raise ValueError(f"phase {phase!r}: must be one of {', '.join(PHASES)}")
        return {PHASE_CAPTURE: self.pool_capture, PHASE_POST: self.pool_post_capture}.get(phase, self.pool_base)


def aws_credentials(env_file: Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """AWS_* credential variables from the env file (runtime.env) overlaid by the process environment."""
    from rtpcore.settings import read_env_file

    found: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        found.update({k: v for k, v in read_env_file(env_file).items() if k in AWS_CREDENTIAL_VARS and v})
    environ = os.environ if environ is None else environ
    found.update({k: environ[k] for k in AWS_CREDENTIAL_VARS if environ.get(k)})
    return found


class S3Storage(Storage):
    """Objects in one bucket; keys passed in already include the prefix (see keys.SessionLocation)."""

    kind = "s3"

    def __init__(self, config: S3Config, *, credentials: Mapping[str, str] | None = None,
                 phase: str = PHASE_BASE) -> None:
        check_key(config.bucket)
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self._credentials = dict(credentials or {})
        self._session = boto3.Session(
            aws_access_key_id=self._credentials.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=self._credentials.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=self._credentials.get("AWS_SESSION_TOKEN"),
            profile_name=None if "AWS_ACCESS_KEY_ID" in self._credentials else self._credentials.get("AWS_PROFILE"),
            region_name=config.region,
        )
        self._lock = threading.Lock()
        self.phase = phase
        self._client = self._new_client(config.pool_for(phase))
        # A black-holed endpoint accepts TCP and never answers: the probe must decide within its own deadline.
        self._probe_client = self._new_client(1, timeout=config.probe_timeout, attempts=1)

    @classmethod
    def from_settings(cls, settings: Settings, *, environ: Mapping[str, str] | None = None,
                      phase: str = PHASE_BASE, **overrides: Any) -> S3Storage:
        """A backend for the configured bucket with AWS_* from runtime.env and the environment."""
        return cls(S3Config.from_settings(settings, **overrides),
                   credentials=aws_credentials(settings.env_file, environ), phase=phase)

    def for_bucket(self, bucket: str) -> S3Storage:
        """The same endpoint and credentials on another bucket (imports from an s3:// URL)."""
        if bucket == self.bucket:
            return self
        return S3Storage(replace(self.config, bucket=bucket, prefix=""), credentials=self._credentials,
                         phase=self.phase)

    def _new_client(self, pool: int, *, timeout: float | None = None, attempts: int | None = None) -> Any:
        extra: dict[str, Any] = {}
        if self.config.endpoint_url:
            extra["s3"] = {"addressing_style": "path"}  # MinIO, Ceph, moto: no bucket sub-domains
        config = Config(
            max_pool_connections=pool,
            connect_timeout=min(self.config.connect_timeout, timeout) if timeout else self.config.connect_timeout,
            read_timeout=timeout or self.config.read_timeout,
            retries={"total_max_attempts": attempts or self.config.max_attempts, "mode": "standard"},
            signature_version="s3v4", **extra,
        )
        return self._session.client("s3", endpoint_url=self.config.endpoint_url, region_name=self.config.region,
                                    config=config)

    @property
    def client(self) -> Any:
        """The current boto3 client (replaced, not mutated, on a phase switch)."""
        with self._lock:
            return self._client

    def set_phase(self, phase: str) -> None:
        pool = self.config.pool_for(phase)
        with self._lock:
            if phase == self.phase:
                return
            self.phase = phase
            # In-flight transfers keep the old client; new work gets the re-sized pool.
            self._client = self._new_client(pool)
        log.info("S3 client for %s now uses a pool of %d connections (%s phase)", self.describe(), pool, phase)

    def transfer_config(self) -> TransferConfig:
        """Multipart settings from RTPHELPER_S3_MULTIPART_*; the classic client so part sizes are predictable."""
        return TransferConfig(
            multipart_threshold=self.config.multipart_threshold, multipart_chunksize=self.config.multipart_chunksize,
            max_concurrency=self.config.multipart_max_concurrency, use_threads=self.config.multipart_use_threads,
            preferred_transfer_client="classic",
        )

    def part_size(self, size: int) -> int | None:
        """The part size s3transfer will use for a file of this size, None when it is sent in one PUT."""
        if size < self.config.multipart_threshold:
            return None
        return ChunksizeAdjuster().adjust_chunksize(self.config.multipart_chunksize, size)

    # -- Storage ---------------------------------------------------------------------------

    def put_file(self, local_path: Path, key: str, *, sha256: str | None = None) -> ObjectInfo:
        path = Path(local_path)
        check_key(key)
        size = path.stat().st_size
        part_size = self.part_size(size)
        digests = file_digests(path, part_size)
        if sha256 is not None and sha256 != digests.sha256:
            raise StorageIntegrityError(f"{path}: sha256 is {digests.sha256}, not {sha256} as recorded when the "
                                        "chunk was closed; the file changed since, it is kept and not uploaded")
        extra = {"Metadata": {SHA256_METADATA: digests.sha256}}
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self.transfer_config())
        except Exception as exc:
            raise self._translate(exc, "upload", key) from exc
        head = self._head_raw(key)
        if head is None:
            raise StorageIntegrityError(f"{self._where(key)}: missing right after the upload of {path}")
        info = self._info(key, head)
        expected_etag = digests.multipart_etag if part_size else digests.md5
        problems = []
        if info.size != digests.size:
            problems.append(f"size {info.size} != local {digests.size}")
        if info.sha256 != digests.sha256:
            problems.append(f"metadata sha256 {info.sha256} != local {digests.sha256}")
        if head.get("ServerSideEncryption") not in SSE_KMS and info.etag != expected_etag:
            problems.append(f"ETag {info.etag} != local {expected_etag}")
        if problems:
            raise StorageIntegrityError(f"{self._where(key)}: upload of {path} does not match: {'; '.join(problems)}")
        return info

    def head(self, key: str) -> ObjectInfo | None:
        head = self._head_raw(check_key(key))
        return None if head is None else self._info(key, head)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    yield ObjectInfo(key=item["Key"], size=item["Size"], etag=item.get("ETag", "").strip('"') or None,
                                     last_modified_ns=int(item["LastModified"].timestamp() * 1e9))
        except StorageError:
            raise
        except Exception as exc:
            raise self._translate(exc, "list", prefix) from exc

    def get_file(self, key: str, local_path: Path) -> ObjectInfo:
        head = self._head_raw(check_key(key))
        if head is None:
            raise StorageNotFoundError(f"{self._where(key)}: no such object")
        info = self._info(key, head)
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(dest, overwrite=True) as tmp:
            try:
                self.client.download_file(self.bucket, key, str(tmp), Config=self.transfer_config())
            except Exception as exc:
                raise self._translate(exc, "download", key) from exc
            got = file_digests(tmp)
            if got.size != info.size or (info.sha256 and got.sha256 != info.sha256):
                raise StorageIntegrityError(f"{self._where(key)}: downloaded {got.size} bytes sha256 {got.sha256}; "
                                            f"S3 reports {info.size} bytes sha256 {info.sha256}")
        return replace(info, sha256=got.sha256)

    def read_range(self, key: str, start: int, end: int, out: BinaryIO) -> int:
        """One ranged GET streamed into out; the client's read deadline applies to every block."""
        want = end - start
        if want <= 0:
            return 0
        got = 0
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=check_key(key), Range=f"bytes={start}-{end - 1}")
            body = reply["Body"]
            for block in body.iter_chunks(RANGE_BLOCK):
                out.write(block)
                got += len(block)
        except Exception as exc:
            raise self._translate(exc, "download", key) from exc
        if got != want:
            raise StorageIntegrityError(f"{self._where(key)}: asked for bytes {start}-{end - 1}, got {got} bytes")
        return got

    def presigned_url(self, key: str, expires: int = DEFAULT_URL_EXPIRES) -> str:
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=expires)
        except Exception as exc:
            raise self._translate(exc, "presign", key) from exc

    def check(self) -> None:
        """The health probe: one request with the probe deadline, no retry."""
        try:
            # Not head_bucket: a HEAD reply carries no error code, and both need s3:ListBucket anyway.
            self._probe_client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except ClientError as exc:
            if _error_code(exc) == "AccessDenied":
                return  # the keys were accepted; write-only credentials may still upload
            raise self._translate(exc, "check", None) from exc
        except Exception as exc:
            raise self._translate(exc, "check", None) from exc

    def close(self) -> None:
        with self._lock:
            self._client.close()
            self._probe_client.close()

    def describe(self) -> str:
        endpoint = self.config.endpoint_url or f"AWS S3 ({self.config.region})"
        return redact_secrets(f"bucket {self.bucket} at endpoint {endpoint}")

    # -- helpers ---------------------------------------------------------------------------

    def _where(self, key: str | None) -> str:
        return redact_secrets(f"s3://{self.bucket}/{key or ''} (endpoint {self.config.endpoint_url or 'AWS'})")

    def _head_raw(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._translate(exc, "head", key) from exc
        except Exception as exc:
            raise self._translate(exc, "head", key) from exc

    @staticmethod
    def _info(key: str, head: Mapping[str, Any]) -> ObjectInfo:
        modified = head.get("LastModified")
        return ObjectInfo(
            key=key, size=int(head["ContentLength"]), etag=str(head.get("ETag", "")).strip('"') or None,
            sha256=(head.get("Metadata") or {}).get(SHA256_METADATA),
            last_modified_ns=None if modified is None else int(modified.timestamp() * 1e9),
        )

    def _translate(self, exc: BaseException, action: str, key: str | None) -> StorageError:
        """A StorageError subclass whose message says what failed, where, and what to do."""
        if isinstance(exc, StorageError):
            return exc
        cause = _root_cause(exc)
        where = self._where(key) if key is not None else self.describe()
        if isinstance(cause, (NoCredentialsError, PartialCredentialsError)):
            return StorageAuthError(f"no usable AWS credentials for {self.describe()} ({type(cause).__name__}); "
                                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment or runtime.env")
        if isinstance(cause, ClientError):
            code = _error_code(cause)
            if code.isdigit():
                code = f"HTTP {code}, a HEAD reply has no error code"
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            text = redact_secrets(str(cause.response.get("Error", {}).get("Message") or code))
            if code == "AccessDenied":
                return StorageAuthError(f"S3 denied access (AccessDenied) during {action} on {where}; the "
                                        "credentials were accepted but may not use this bucket/prefix: check the "
                                        "IAM/bucket policy (s3:PutObject, s3:GetObject, s3:ListBucket)")
            if code in _AUTH_CODES or status == 403:
                return StorageAuthError(f"S3 rejected the credentials ({code}) for {self.describe()}; check "
                                        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (environment "
                                        "or runtime.env)")
            if code in _NOT_FOUND_CODES or status == 404:
                if key is None or code == "NoSuchBucket":
                    return StorageNotFoundError(f"S3 bucket {self.bucket} does not exist at endpoint "
                                                f"{self.config.endpoint_url or 'AWS'} ({code}); check "
                                                "RTPHELPER_S3_PATH / RTPHELPER_S3_BUCKET")
                return StorageNotFoundError(f"{where}: no such object ({code})")
            if code in _UNAVAILABLE_CODES or status >= 500:
                return StorageUnavailableError(f"S3 is failing during {action} on {where}: {code} (HTTP {status}) "
                                               f"after {self.config.max_attempts} attempts: {text}")
            return StorageError(f"S3 {action} on {where} failed: {code} (HTTP {status}): {text}")
        if isinstance(cause, _NETWORK_ERRORS) or isinstance(cause, OSError):
            return StorageUnavailableError(f"S3 endpoint unreachable during {action} on {where}: "
                                           f"{redact_secrets(str(cause))}")
        if isinstance(cause, BotoCoreError):
            return StorageError(f"S3 {action} on {where} failed: {redact_secrets(str(cause))}")
        return StorageError(f"S3 {action} on {where} failed: {type(cause).__name__}: {redact_secrets(str(cause))}")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _root_cause(exc: BaseException) -> BaseException:
    """The botocore/socket error behind boto3's and s3transfer's wrappers."""
    seen: set[int] = set()
    while isinstance(exc, (S3UploadFailedError, RetriesExceededError)) or type(exc).__module__.startswith("s3transfer"):
        inner = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(exc))
        exc = inner
    return exc
