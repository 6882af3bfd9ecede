"""Links to a session's outputs: HMAC-signed `rtphelper serve` URLs, presigned S3 URLs, or file:// on the worker."""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from rtpcore.errors import ConfigError, InputError

if TYPE_CHECKING:
    from rtpcore.settings import Settings

FILES_ROUTE = "/files/"
REPORT_ROUTE = "/report/"   # /report/<expires>/<token>/<session>/combined/<file>: one token opens a combined/ folder
METHOD_FOLDER = "GET-FOLDER"
REPORT_FILE = "report.html"
UPLOAD_ROUTE = "/upload/"
METHOD_GET = "GET"
METHOD_PUT = "PUT"
OUTPUT_SUBDIRS = ("combined", "decrypted")
UPLOADS_DIR = "uploads"
INCOMING_DIR = "incoming"  # <capture root>/incoming/<id>/uploads/<file>: SIP pcaps uploaded through serve
_KEY_CHARS = re.compile(r"[^a-z0-9]+")
MAX_KEY_LENGTH = 100  # Prefect artifact keys: lowercase letters, digits, dashes; keep them readable


@dataclass(frozen=True, slots=True)
class OutputLink:
    """One output file and the URL a browser opens it with."""

    name: str         # session-relative path, e.g. combined/media_raw.pcap
    url: str
    kind: str         # "serve", "s3" or "file"


def artifact_key(kind: str, session: str | Path) -> str:
    """`<kind>-<folder>-<timestamp>`: Prefect artifact keys per session (lowercase letters, digits, dashes only)."""
    parts = [p for p in PurePosixPath(str(session).rstrip("/")).parts[-2:] if p not in ("/", "s3:")]
    return key_of(kind, "-".join(parts))


def key_of(kind: str, text: str) -> str:
    """`<kind>-<text as a slug>`, cut in the middle when too long: the session's timestamp at the end survives."""
    slug = _KEY_CHARS.sub("-", text.lower()).strip("-")
    head = _KEY_CHARS.sub("-", kind.lower()).strip("-")
    room = MAX_KEY_LENGTH - len(head) - 1
    if len(slug) > room:
        slug = slug[-room:].lstrip("-")
    return f"{head}-{slug}".strip("-")


def signature(secret: str, method: str, relative: str, expires: int) -> str:
    """HMAC-SHA256 of method, path and expiry: a link opens one file, one way, until it expires."""
    if not secret:
        raise ConfigError("RTPHELPER_SERVE_SECRET is not set: set it (the same value on the worker and the laptops) "
                          "to sign serve links and uploads")
    message = f"{method}\n{relative}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def unsafe_relative(relative: str) -> bool:
    """True for an empty path or one with an empty, '.', '..' or hidden segment (it could leave its folder)."""
    return not relative or any(p in ("", ".", "..") or p.startswith(".") for p in relative.split("/"))


def check_relative(relative: str) -> str:
    """A path below the capture root: no absolute path, no '..', no empty or hidden segment."""
    if unsafe_relative(relative.strip("/")):
        raise InputError(f"{relative!r}: not a file path below the capture root")
    return relative.strip("/")


def signed_url(base_url: str, route: str, relative: str, secret: str, expires_in: int, *,
               method: str = METHOD_GET, now: float | None = None) -> str:
    """`<base><route><relative>?expires=…&token=…` valid for expires_in seconds."""
    relative = check_relative(relative)
    expires = int(now if now is not None else time.time()) + int(expires_in)
    token = signature(secret, method, relative, expires)
    query = urlencode({"expires": expires, "token": token})
    return f"{base_url.rstrip('/')}{route}{quote(relative)}?{query}"


def report_url(base_url: str, combined: str, secret: str, expires_in: int, *, now: float | None = None) -> str:
    """A link to a session's report.html whose relative links (audio/, the pcaps) open with the same token.

    The token sits in the path, not the query, so the browser keeps it when it resolves `audio/x.wav` against
    the page; it opens only files below that one combined/ folder, read-only, until it expires.
    """
    combined = check_relative(combined)
    expires = int(now if now is not None else time.time()) + int(expires_in)
    token = signature(secret, METHOD_FOLDER, combined, expires)
    return f"{base_url.rstrip('/')}{REPORT_ROUTE}{expires}/{token}/{quote(combined)}/{REPORT_FILE}"


def verify(secret: str, method: str, relative: str, expires: str, token: str, *, now: float | None = None) -> str | None:
    """None when the token is valid and unexpired; else why not (never echoes the token)."""
    if not expires.isdigit():
        return "the link has no valid expiry"
    if int(expires) < int(now if now is not None else time.time()):
        return "the link has expired: regenerate it (rtphelper links SESSION, or the get-links flow)"
    if not hmac.compare_digest(signature(secret, method, relative, int(expires)), token):
        return "the link's token does not match (wrong secret, or the link was altered)"
    return None


def output_files(session_dir: Path) -> list[Path]:
    """combined/*.pcap finals and decrypted/* of a session (hidden and intermediate files stay out)."""
    files: list[Path] = []
    for sub in OUTPUT_SUBDIRS:
        folder = Path(session_dir) / sub
        if folder.is_dir():
            files += sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return files


def serve_links(files: list[Path], capture_root: Path, settings: Settings, *, now: float | None = None) -> list[OutputLink]:
    """Signed `rtphelper serve` links for files under the capture root (RTPHELPER_SERVE_URL + SECRET)."""
    if not settings.serve_url:
        raise ConfigError("RTPHELPER_SERVE_URL is not set: set it to the address browsers reach `rtphelper serve` at")
    root = Path(capture_root).resolve()
    links = []
    for path in files:
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(root):
            raise InputError(f"{path}: not under the capture root {root}; serve links reach only files below it")
        relative = resolved.relative_to(root).as_posix()
        if resolved.name == REPORT_FILE and resolved.parent.name == OUTPUT_SUBDIRS[0]:
            url = report_url(settings.serve_url, resolved.parent.relative_to(root).as_posix(),
                             settings.serve_secret or "", settings.link_expires_seconds, now=now)
        else:
            url = signed_url(settings.serve_url, FILES_ROUTE, relative, settings.serve_secret or "",
                             settings.link_expires_seconds, now=now)
        links.append(OutputLink(_session_relative(resolved), url, "serve"))
    return links


def file_links(files: list[Path]) -> list[OutputLink]:
    """file:// links (the worker's disk): what a local-only deployment without serve offers."""
    return [OutputLink(_session_relative(Path(p).resolve()), Path(p).resolve().as_uri(), "file") for p in files]


def local_links(files: list[Path], capture_root: Path, settings: Settings) -> list[OutputLink]:
    """Serve links when RTPHELPER_SERVE_URL is set and the files lie under the capture root, else file:// links."""
    root = Path(capture_root).resolve()
    if settings.serve_url and all(Path(p).resolve().is_relative_to(root) for p in files):
        return serve_links(files, root, settings)
    return file_links(files)


def _session_relative(path: Path) -> str:
    """`combined/x.pcap` for a file in a session's combined/ or decrypted/ (its name otherwise)."""
    if path.parent.name in OUTPUT_SUBDIRS:
        return f"{path.parent.name}/{path.name}"
    if path.parent.parent.name in OUTPUT_SUBDIRS:
        return f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
    return path.name


def s3_links(url: str, settings: Settings) -> list[OutputLink]:
    """Fresh presigned links (RTPHELPER_LINK_EXPIRES_SECONDS) to the outputs of an S3 session."""
    from rtpcore.storage.download import parse_s3_url, storage_for_url

    parsed = parse_s3_url(url)
    storage = storage_for_url(url, settings)
    links = []
    for sub in OUTPUT_SUBDIRS:
        for obj in storage.list(f"{parsed.key}/{sub}/"):
            relative = obj.key[len(parsed.key) + 1:]
            if relative.count("/") == 1 and not relative.rsplit("/", 1)[1].startswith("."):
                links.append(OutputLink(relative, storage.presigned_url(obj.key, settings.link_expires_seconds), "s3"))
    return links


def session_links(root: Path | None, url: str | None, capture_root: Path, settings: Settings) -> list[OutputLink]:
    """Links to a session's outputs: presigned when it lives in S3, else serve (or file://) links to the local files."""
    if url is not None:
        links = s3_links(url, settings)
        if links or root is None:
            return links
    assert root is not None
    files = output_files(root)
    if not files:
        raise InputError(f"{root}: no outputs yet (combined/, decrypted/); run the correlation first")
    return local_links(files, capture_root, settings)


def links_markdown(links: list[OutputLink], session: str, expires_in: int) -> str:
    """The links as a markdown list for a run's artifact."""
    valid = {"serve": f"valid {expires_in} s", "s3": f"presigned, valid {expires_in} s", "file": "worker disk"}
    lines = [f"# Outputs of `{session}`", ""]
    lines += [f"- [{link.name}]({link.url}) ({valid[link.kind]})" for link in links]
    return "\n".join(lines) + "\n"


def discard_incoming(sip_pcap: str, capture_root: Path) -> bool:
    """Remove a serve upload (<root>/incoming/<id>/) once its run has its own copy in the session's uploads/."""
    path = Path(sip_pcap).expanduser()
    incoming = Path(capture_root).resolve() / INCOMING_DIR
    try:
        resolved = path.resolve()
    except OSError:
        return False
    if "://" in sip_pcap or not resolved.is_relative_to(incoming) or resolved.parent.name != UPLOADS_DIR:
        return False
    folder = resolved.parent.parent
    if folder.parent != incoming:
        return False
    resolved.unlink(missing_ok=True)
    for leftover in (resolved.parent, folder):
        try:
            leftover.rmdir()  # only when empty
        except OSError:
            return False
    return True
