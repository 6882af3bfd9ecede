"""Bring the SIP pcap into a session's uploads/: from a worker path, an s3:// object or an https:// URL."""
from __future__ import annotations

import filecmp
import logging
import os
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from rtpcore.errors import InputError, StorageError
from rtpcore.fsutil import new_temp
from rtpcore.storage.download import is_s3_url, parse_s3_url, storage_for_url

if TYPE_CHECKING:
    from rtpcore.settings import Settings

log = logging.getLogger(__name__)

HTTP_SCHEMES = ("https://", "http://")
DEFAULT_NAME = "sip.pcap"
MAX_REDIRECTS = 5
COPY_BLOCK = 1024 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def is_http_url(source: object) -> bool:
    """True for an http(s):// string (presigned S3 links, a ticket system's attachment URL)."""
    return isinstance(source, str) and source.strip().lower().startswith(HTTP_SCHEMES)


def shown_url(url: str) -> str:
    """scheme://host/path without the query: presigned URLs carry signatures that must not reach logs."""
    split = urlsplit(url.strip())
    return f"{split.scheme}://{split.hostname or ''}{f':{split.port}' if split.port else ''}{split.path}"


def file_name_of(source: str) -> str:
    """The last path segment as a safe file name ("sip.pcap" when the URL has none)."""
    segment = PurePosixPath(unquote(urlsplit(source.strip()).path)).name if "://" in source else Path(source).name
    name = _SAFE_NAME.sub("_", segment).lstrip(".")
    return name or DEFAULT_NAME


def fetch_sip(source: str, uploads: Path, settings: Settings) -> Path:
    """The SIP pcap as a file in uploads/ (never overwriting a different file there); errors name the source."""
    uploads = Path(uploads)
    text = source.strip()
    if not text:
        raise InputError("sip_pcap is empty: give a worker path, an s3://bucket/key or an https:// URL of the SIP pcap")
    if not (is_s3_url(text) or is_http_url(text)):
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: SIP pcap not found on the worker; give a path the worker can read, "
                             "an s3:// or https:// URL, or upload it with `rtphelper submit`")
        if path.resolve().parent == uploads.resolve():
            return path.resolve()  # already uploaded into this session (rtphelper submit)
    uploads.mkdir(parents=True, exist_ok=True)
    staged = new_temp(uploads, file_name_of(text))
    try:
        if is_s3_url(text):
            _get_s3(text, staged, settings)
        elif is_http_url(text):
            _get_http(text, staged, settings)
        else:
            shutil.copyfile(Path(text).expanduser(), staged)
        return _place(staged, uploads / file_name_of(text))
    finally:
        staged.unlink(missing_ok=True)


def _place(staged: Path, dest: Path) -> Path:
    """Link the staged file into place; an equal file already there is reused, a different one is an error."""
    try:
        os.link(staged, dest)
    except FileExistsError:
        if not filecmp.cmp(staged, dest, shallow=False):
            raise InputError(f"{dest} already exists with other content; rename the SIP pcap or use a new session") from None
    return dest


def _get_s3(url: str, dest: Path, settings: Settings) -> None:
    """One object (S3 settings: endpoint, credentials, connect/read deadlines, attempts)."""
    try:
        parsed = parse_s3_url(url)
    except ValueError as exc:
        raise InputError(f"sip_pcap: {exc}") from None
    if not parsed.key:
        raise InputError(f"{url}: name the SIP pcap object (s3://bucket/…/uploads/sip.pcap), not only the bucket")
    storage_for_url(url, settings).get_file(parsed.key, dest)


def _get_http(url: str, dest: Path, settings: Settings) -> None:
    """Stream the URL with a deadline on every read and a size cap (RTPHELPER_FETCH_MAX_BYTES)."""
    import httpx

    shown = shown_url(url)
    cap = settings.fetch_max_bytes
    timeout = httpx.Timeout(settings.fetch_timeout_seconds)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client:
            with client.stream("GET", url.strip()) as response:
                if response.status_code != httpx.codes.OK:
                    raise InputError(f"{shown}: HTTP {response.status_code} {response.reason_phrase}; check the "
                                     "link (it may have expired) and give a fresh one")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise InputError(f"{shown}: {int(declared)} bytes is more than RTPHELPER_FETCH_MAX_BYTES ({cap}); "
                                     "cut the SIP pcap to the call (e.g. tshark -Y sip) or raise the setting")
                got = 0
                with dest.open("wb") as out:
                    for block in response.iter_bytes(COPY_BLOCK):
                        got += len(block)
                        if got > cap:
                            raise InputError(f"{shown}: more than RTPHELPER_FETCH_MAX_BYTES ({cap}) bytes; cut the "
                                             "SIP pcap to the call or raise the setting")
                        out.write(block)
    except httpx.TimeoutException:
        raise StorageError(f"{shown}: no answer within {settings.fetch_timeout_seconds:g} s "
                           "(RTPHELPER_FETCH_TIMEOUT_SECONDS); check the URL is reachable from the worker") from None
    except httpx.HTTPError as exc:
        raise StorageError(f"{shown}: cannot fetch the SIP pcap ({type(exc).__name__}); check the URL is reachable "
                           "from the worker") from None
    log.info("fetched the SIP pcap from %s (%d bytes)", shown, got)
