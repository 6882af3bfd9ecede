"""Import a stored session: copy its raw/ (and uploads/) objects into a local session folder for correlation."""
from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpcore.errors import PcapError
from rtpcore.fsutil import atomic_output, new_temp
from rtpcore.media.demux import CAPTURE_SUFFIXES
from rtpcore.media.select import (
    UNKNOWN_TS, ChunkChoice, Endpoint, bounded_choice, flow_choice, index_choice, next_chunks, select_files,
)
from rtpcore.pcap.flows import FLOWS_SUFFIX, FlowProblem, FlowSummary, parse_summary
from rtpcore.pcap.index import FILE_HEADER_LEN, HEAD_BYTES, INDEX_SUFFIX, ChunkIndex, head_timestamp, index_path

from rtpcore.storage.base import (
    DEFAULT_URL_EXPIRES, ObjectInfo, Storage, StorageError, StorageNotFoundError, file_digests,
)
from rtpcore.storage.keys import SESSION_SUBDIRS, check_key

if TYPE_CHECKING:
    from rtpcore.settings import Settings

__all__ = [
    "DEFAULT_IMPORT_SUBDIRS",
    "OUTPUT_SUBDIRS",
    "DownloadReport",
    "PublishedOutputs",
    "S3Url",
    "download_session",
    "fetch_ranges",
    "is_s3_url",
    "materialize_media",
    "parse_s3_url",
    "publish_outputs",
    "select_from_storage",
    "storage_for_url",
]

log = logging.getLogger(__name__)

DEFAULT_IMPORT_SUBDIRS = ("raw", "uploads")
OUTPUT_SUBDIRS = ("decrypted", "combined")
REPORT_SUBDIR, REPORT_PAGE = "combined", "report.html"  # rtpcore.analysis.report_md's names (not imported: cost)
REPORT_AUDIO_SUBDIR = "combined/audio"
S3_SCHEME = "s3://"
FETCH_THREADS = 4         # chunks range-read at once (the S3 pool holds more connections than this)
RANGES_DIR = "raw-call"   # range-read parts of S3 chunks: the chunk's name, only the call's bytes
FURTHER_IMPORT = "import-{n}"  # the 2nd, 3rd … s3:// source of one correlation: chunk names may repeat
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3_url(source: object) -> bool:
    """True for an "s3://…" string (a Path cannot be one: it collapses the "//")."""
    return isinstance(source, str) and source.strip().lower().startswith(S3_SCHEME)


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


def storage_for_url(url: str, settings: Settings, *, environ: Mapping[str, str] | None = None) -> Storage:
    """An S3 backend (configured endpoint and credentials) on the URL's bucket, even with no bucket configured."""
    from rtpcore.storage.s3 import PHASE_POST, S3Storage  # boto3 loads only for s3:// sources

    bucket = parse_s3_url(url).bucket
    if not settings.s3_bucket_name:
        settings = settings.model_copy(update={"s3_bucket": bucket})
    return S3Storage.from_settings(settings, environ=environ, phase=PHASE_POST).for_bucket(bucket)


def materialize_media(
    sources: Sequence[str | Path],
    dest: Path,
    settings: Settings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    storage: Storage | None = None,
) -> list[Path]:
    """Local paths as given; each s3:// session's raw/ downloaded, verified, into dest/raw/ (then import-2/raw/ …)."""
    out: list[Path] = []
    imported = 0
    for source in sources:
        if not is_s3_url(source):
            out.append(Path(source))
            continue
        url = str(source).strip()
        imported += 1
        target = Path(dest) if imported == 1 else Path(dest) / FURTHER_IMPORT.format(n=imported)
        if storage is None:
            from rtpcore.settings import load_settings

            settings = settings if settings is not None else load_settings(environ)
            store = storage_for_url(url, settings, environ=environ)
        else:
            store = storage
        report = download_session(store, url, target, subdirs=("raw",))
        out.extend(sorted(report.files + report.skipped))
    return out


@dataclass(frozen=True, slots=True)
class PublishedOutputs:
    """Outputs uploaded into a stored session: session-relative path → presigned URL (never logged)."""

    location: str
    urls: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def _output_files(session_dir: Path) -> list[Path]:
    """decrypted/*, the combined/ finals and the report's WAVs (combined/audio/); combined/filtered/ holds
    intermediates and stays local."""
    files: list[Path] = []
    for folder in [session_dir / sub for sub in OUTPUT_SUBDIRS] + [session_dir / REPORT_AUDIO_SUBDIR]:
        if folder.is_dir():
            files += sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return files


def _publish_report(storage: Storage, session_dir: Path, prefix: str, urls: dict[str, str], expires: int) -> None:
    """Store report.html again with its relative links presigned: opened from its own URL, every link works."""
    from rtpcore.storage.report_links import presign_links

    relative = f"{REPORT_SUBDIR}/{REPORT_PAGE}"
    if relative not in urls:
        return
    page, missing = presign_links((session_dir / relative).read_text(encoding="utf-8"), REPORT_SUBDIR, urls)
    if missing:
        log.warning("report.html stored with %d link(s) to files that were not uploaded: %s", len(missing),
                    ", ".join(missing))
    temp = new_temp(session_dir / REPORT_SUBDIR, f"{REPORT_PAGE}.s3")  # the local report keeps relative links
    try:
        temp.write_text(page, encoding="utf-8")
        key = check_key(f"{prefix}/{relative}")
        storage.put_file(temp, key)
    finally:
        temp.unlink(missing_ok=True)
    urls[relative] = storage.presigned_url(key, expires)


def publish_outputs(
    source: str,
    session_dir: Path,
    settings: Settings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    storage: Storage | None = None,
    expires: int = DEFAULT_URL_EXPIRES,
) -> PublishedOutputs:
    """Upload a correlation's outputs into the S3 session its media came from; errors are reported, not raised."""
    url = parse_s3_url(source)
    head, _, last = url.key.rpartition("/")
    prefix = head if head and last in SESSION_SUBDIRS else url.key
    location = f"{S3_SCHEME}{url.bucket}/{prefix}/"
    urls: dict[str, str] = {}
    try:
        if storage is None:
            from rtpcore.settings import load_settings

            settings = settings if settings is not None else load_settings(environ)
            storage = storage_for_url(source, settings, environ=environ)
        elif getattr(storage, "bucket", url.bucket) != url.bucket:
            storage = storage.for_bucket(url.bucket)  # type: ignore[attr-defined]
        session_dir = Path(session_dir)
        for path in _output_files(session_dir):
            relative = path.relative_to(session_dir).as_posix()
            key = check_key(f"{prefix}/{relative}")
            storage.put_file(path, key)
            urls[relative] = storage.presigned_url(key, expires)
        _publish_report(storage, session_dir, prefix, urls, expires)
    except StorageError as exc:
        log.warning("outputs not (all) uploaded to %s: %s", location, exc)
        return PublishedOutputs(location, urls, f"outputs not (all) uploaded to {location}: {exc}")
    log.info("uploaded %d output file(s) to %s (presigned URLs valid %d s)", len(urls), location, expires)
    return PublishedOutputs(location, urls)


# -- selective download (issue 12): only the chunks / byte ranges the call touched -----------------------


def select_from_storage(
    storage: Storage, source: str, dest_dir: Path, windows: Sequence[tuple[int, int]], *,
    endpoints: Sequence[Endpoint] | None = None, defer: bool = False, only: Collection[str] | None = None,
) -> list[ChunkChoice]:
    """Decide per raw/ chunk of a stored session from its sidecar index; fetch only what the call needs.

    Indexed chunks: the seek-point ranges around the windows are range-read into dest/raw-call/<chunk> (header +
    ranges, a valid pcap); skipped chunks cost nothing. Chunks without a usable index are bounded by the first
    timestamps of consecutive chunks of their host (40-byte range reads); those that may hold the call are
    downloaded whole into dest/raw/ (a warning) and indexed locally. Never the whole session.
    With the call's endpoints, a chunk's flow summary in S3 (`<key>.flows.json`) may skip it (flow_choice); defer:
    leave the ranges in S3 for the filter tasks to read themselves (cluster workers without a shared disk).
    only: these chunk names of raw/ and no others (a local session's chunks removed after upload).
    """
    storage, prefix, _ = _session_prefix(storage, source)
    objects = {o.key[len(prefix) + 1:]: o for o in storage.list(f"{prefix}/raw/")}
    chunks = {rel: o for rel, o in objects.items() if Path(rel).suffix.lower() in CAPTURE_SUFFIXES
              and (only is None or Path(rel).name in only)}
    if only is not None and (gone := sorted(set(only) - {Path(rel).name for rel in chunks})):
        raise StorageNotFoundError(f"{', '.join(gone)}: not under {prefix}/raw/ in {storage.describe()}")
    if not chunks:
        raise StorageNotFoundError(f"no raw/ objects under {prefix}/ in {storage.describe()} (no capture chunks); "
                                   "check the session URL or environment/session path")
    dest_dir = Path(dest_dir)
    choices: dict[str, ChunkChoice] = {}
    unindexed: dict[str, str] = {}   # relative key → why it has no usable index
    fetches: list[tuple[str, ChunkChoice]] = []
    for rel, obj in sorted(chunks.items()):
        local = dest_dir.joinpath(*check_key(rel).split("/"))
        origin = f"{S3_SCHEME}{getattr(storage, 'bucket', '')}/{obj.key}"
        sidecar = objects.get(rel + INDEX_SUFFIX)
        if sidecar is None:
            unindexed[rel] = ""
            continue
        try:
            storage.get_file(sidecar.key, index_path(local))
            index = ChunkIndex.from_json(json.loads(index_path(local).read_bytes()))
            if index.bytes != obj.size or index.chunk != local.name:
                raise ValueError(f"describes {index.chunk} of {index.bytes} bytes, the object has {obj.size}")
        except (ValueError, TypeError) as exc:
            unindexed[rel] = f"{origin}{INDEX_SUFFIX}: unusable index ({exc})"
            continue
        choice = index_choice(local, index, windows, "index", "indexed", None)
        identity: dict[str, Any] = {"bytes": obj.size, "etag": obj.etag}
        if endpoints is not None and choice.read and choice.ranges:
            choice = _s3_flows(storage, objects.get(rel + FLOWS_SUFFIX), obj, choice, endpoints, windows, identity)
        if choice.read and choice.ranges:
            choice = replace(choice, source=dest_dir / RANGES_DIR / local.name, fetched=True, deferred=defer,
                             identity=tuple(sorted(identity.items())),
                             why=choice.why.replace("bytes from", "bytes range-read from S3 at"))
            if not defer:
                fetches.append((obj.key, choice))
        choices[rel] = replace(choice, origin=origin)
    with ThreadPoolExecutor(FETCH_THREADS) as pool:  # chunks in parallel; list() re-raises the first failure
        list(pool.map(lambda job: fetch_ranges(storage, job[0], job[1].ranges or (), job[1].source), fetches))
    choices.update(_unindexed(storage, dest_dir, chunks, unindexed, windows))
    return [choices[rel] for rel in sorted(choices)]


def _s3_flows(storage: Storage, summary_obj: ObjectInfo | None, obj: ObjectInfo, choice: ChunkChoice,
              endpoints: Sequence[Endpoint], windows: Sequence[tuple[int, int]], identity: dict[str, Any]
              ) -> ChunkChoice:
    """flow_choice with the summary stored beside the S3 object (read whole: it is small)."""
    target = obj.key + FLOWS_SUFFIX
    summary: FlowSummary | None = None
    problem = None
    if summary_obj is not None:
        buf = io.BytesIO()
        storage.read_range(summary_obj.key, 0, summary_obj.size, buf)
        try:
            summary = parse_summary(buf.getvalue(), f"{S3_SCHEME}{getattr(storage, 'bucket', '')}/{target}",
                                    Path(obj.key).name, identity)
        except FlowProblem as exc:
            problem = str(exc)
    return flow_choice(choice, summary, problem, endpoints, windows, target, identity)


def fetch_ranges(storage: Storage, key: str, ranges: Sequence[tuple[int, int]], dest: Path) -> None:
    """The chunk's pcap header and the given ranges, as one pcap file written atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest, overwrite=True) as temp, open(temp, "wb") as out:
        ranges = list(ranges)
        if ranges and ranges[0][0] == FILE_HEADER_LEN:
            ranges[0] = (0, ranges[0][1])  # the header and the first range in one request
        else:
            storage.read_range(key, 0, FILE_HEADER_LEN, out)
        for begin, end in ranges:
            storage.read_range(key, begin, end, out)


def _unindexed(
    storage: Storage, dest_dir: Path, chunks: Mapping[str, ObjectInfo], unindexed: Mapping[str, str],
    windows: Sequence[tuple[int, int]],
) -> dict[str, ChunkChoice]:
    """Chunks with no usable sidecar: bound by first timestamps, download only those that may hold the call."""
    out: dict[str, ChunkChoice] = {}
    if not unindexed:
        return out
    paths = {Path(rel): rel for rel in chunks}
    following = next_chunks(list(paths))
    firsts: dict[str, int | None] = {}

    def first(rel: str) -> int | None:
        if rel not in firsts:
            head = io.BytesIO()
            storage.read_range(chunks[rel].key, 0, min(HEAD_BYTES, chunks[rel].size), head)
            try:
                firsts[rel] = head_timestamp(head.getvalue(), Path(chunks[rel].key))
            except PcapError:
                firsts[rel] = UNKNOWN_TS  # not a classic pcap: it cannot be bounded, only downloaded
        return firsts[rel]

    for rel, why in sorted(unindexed.items()):
        obj = chunks[rel]
        local = dest_dir.joinpath(*check_key(rel).split("/"))
        origin = f"{S3_SCHEME}{getattr(storage, 'bucket', '')}/{obj.key}"
        if Path(rel) in following:
            nxt = following[Path(rel)]
            choice = bounded_choice(local, obj.size, first(rel), first(paths[nxt]) if nxt is not None else None,
                                    windows)
            if choice is not None:
                out[rel] = replace(choice, origin=origin, warning=why or None)
                continue
        storage.get_file(obj.key, local)
        [choice] = select_files([local], windows)
        warning = why or f"{origin}: no index in S3: the whole chunk was downloaded to index it"
        out[rel] = replace(choice, origin=origin, warning=warning, why=f"downloaded whole; {choice.why}")
    return out

