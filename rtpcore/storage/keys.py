"""Object keys that mirror the session layout: <prefix>/<environment>/<folder>/<timestamp>/{raw,uploads,…}/file."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "SESSION_SUBDIRS",
    "SessionLocation",
    "check_key",
    "key_for_path",
    "path_for_key",
    "split_key",
]

SESSION_SUBDIRS = ("raw", "uploads", "decrypted", "combined")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def check_key(key: str) -> str:
    """The key itself when it is a clean relative '/'-path (no '..', '.', empty parts or leading '/')."""
    if not key or key.startswith("/") or "\\" in key:
        raise ValueError(f"object key {key!r}: must be a non-empty relative '/'-separated path")
    bad = [part for part in key.split("/") if part in ("", ".", "..")]
    if bad:
        raise ValueError(f"object key {key!r}: contains an empty, '.' or '..' component")
    return key


def _check_segment(what: str, value: str) -> str:
    if not _SEGMENT.match(value) or value in (".", ".."):
        raise ValueError(f"{what} {value!r}: use letters, digits, '.', '_' and '-' only")
    return value


@dataclass(frozen=True, slots=True)
class SessionLocation:
    """Where one session lives in a bucket; the prefix and the folder are optional."""

    prefix: str
    environment: str
    folder: str | None
    timestamp: str

    def __post_init__(self) -> None:
        if self.prefix:
            check_key(self.prefix)
        _check_segment("environment", self.environment)
        _check_segment("session timestamp", self.timestamp)
        if self.folder:
            for part in self.folder.split("/"):
                _check_segment(f"output folder {self.folder!r} part", part)

    @property
    def key_prefix(self) -> str:
        """The session's key prefix, without a trailing slash."""
        return "/".join(p for p in (self.prefix, self.environment, self.folder, self.timestamp) if p)

    def key_for(self, relative: str) -> str:
        """The key of a file given by its '/'-path relative to the session folder."""
        return check_key(f"{self.key_prefix}/{check_key(relative)}")

    def relative_of(self, key: str) -> str:
        """The session-relative path of a key of this session."""
        head = self.key_prefix + "/"
        if not key.startswith(head) or len(key) == len(head):
            raise ValueError(f"object key {key!r} is not inside session {self.key_prefix!r}")
        return check_key(key[len(head):])

    @classmethod
    def for_session_dir(
        cls, session_dir: Path, capture_root: Path, *, environment: str, prefix: str = ""
    ) -> SessionLocation:
        """The location of <capture_root>/<optional folder>/<timestamp>: folder and timestamp come from the path."""
        session_dir, capture_root = Path(session_dir).resolve(), Path(capture_root).resolve()
        try:
            parts = session_dir.relative_to(capture_root).parts
        except ValueError:
            raise ValueError(f"session folder {session_dir} is not inside the capture root {capture_root}") from None
        if not parts:
            raise ValueError(f"session folder {session_dir} is the capture root itself; expected <root>/<timestamp>")
        folder = "/".join(parts[:-1]) or None
        return cls(prefix.strip("/"), environment, folder, parts[-1])

    @classmethod
    def parse(cls, key_prefix: str, *, prefix: str = "") -> SessionLocation:
        """The location named by a session key prefix ('<prefix>/<env>/<folder…>/<timestamp>')."""
        rest = _strip_prefix(key_prefix.strip("/"), prefix.strip("/"))
        parts = rest.split("/") if rest else []
        if len(parts) < 2:
            raise ValueError(f"session path {key_prefix!r}: expected <environment>/<optional folder>/<timestamp> "
                             f"after the prefix {prefix!r}")
        return cls(prefix.strip("/"), parts[0], "/".join(parts[1:-1]) or None, parts[-1])


def _strip_prefix(text: str, prefix: str) -> str:
    if not prefix:
        return text
    if text == prefix:
        return ""
    if not text.startswith(prefix + "/"):
        raise ValueError(f"{text!r} does not start with the configured prefix {prefix!r}")
    return text[len(prefix) + 1:]


def split_key(key: str, *, prefix: str = "") -> tuple[SessionLocation, str]:
    """(session location, session-relative path) of a full object key; the first raw/uploads/… part ends the session."""
    parts = _strip_prefix(check_key(key), prefix.strip("/")).split("/")
    for i in range(2, len(parts) - 1):
        if parts[i] in SESSION_SUBDIRS:
            location = SessionLocation(prefix.strip("/"), parts[0], "/".join(parts[1:i - 1]) or None, parts[i - 1])
            return location, "/".join(parts[i:])
    raise ValueError(f"object key {key!r}: no {'/'.join(SESSION_SUBDIRS)} folder after <environment>/<timestamp>")


def key_for_path(path: Path, session_dir: Path, location: SessionLocation) -> str:
    """The key of a file inside a local session folder (hidden files such as the upload queue are refused)."""
    path, session_dir = Path(path).resolve(), Path(session_dir).resolve()
    try:
        relative = path.relative_to(session_dir)
    except ValueError:
        raise ValueError(f"{path} is not inside the session folder {session_dir}") from None
    if not relative.parts or any(part.startswith(".") for part in relative.parts):
        raise ValueError(f"{path}: hidden or empty paths inside the session are not uploaded")
    return location.key_for(PurePosixPath(*relative.parts).as_posix())


def path_for_key(key: str, location: SessionLocation, session_dir: Path) -> Path:
    """The local file of a key of this session, inside session_dir."""
    return Path(session_dir).joinpath(*location.relative_of(key).split("/"))
