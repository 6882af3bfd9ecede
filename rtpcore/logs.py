"""Console + rotating file logging in the seed's format, with correlation ids and secret redaction.

Our handlers are added to the root logger beside whatever is already there (Prefect installs its
own), carry the names in OUR_HANDLER_NAMES so a second setup replaces instead of duplicating them,
and set levels only on our own loggers (APP_LOGGERS), never on the root.

The correlation id lives in a contextvar: it follows asyncio tasks, but a new thread starts
without it; run pool work through `contextvars.copy_context().run` to keep it.
"""
from __future__ import annotations

import contextvars
import logging
import logging.handlers
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtpcore.settings import Settings

LOG_FORMAT = (
    "%(asctime)s | %(levelname)s | %(category)s | cid=%(correlation_id)s | %(name)s | "
    "%(filename)s:%(lineno)d %(funcName)s() | %(message)s"
)
LOG_FILE_NAME = "app.log"
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUP_COUNT = 10
FILE_HANDLER_NAME = "rtpcore.file"
CONSOLE_HANDLER_NAME = "rtpcore.console"
OUR_HANDLER_NAMES = frozenset({FILE_HANDLER_NAME, CONSOLE_HANDLER_NAME})
APP_LOGGERS = ("rtpcore", "flows", "tasks")
NO_CORRELATION_ID = "-"
REDACTED = "(redacted)"

_saved_levels: dict[str, int] = {}  # our loggers' levels before setup_logging, put back by teardown_logging
_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rtpcore_correlation_id", default=None)

# Each pattern keeps group 1 (the name and separator) and replaces the secret after it.
_SECRET_ASSIGNMENTS = re.compile(
    r"""(?ix)
    (\b[\w-]*?(?:secret_?access_?key|session_?token|security-token|password|passwd)
      ["']?\s*[=:]\s*["']?)
    [^\s"',;&]+
    """
)
_SIGNATURE = re.compile(r"(?i)(\b(?:X-Amz-)?Signature=)[^\s&\"',;]+")
# A password may hold '/', ':' or even '@' (unencoded, as people paste them): it runs to the last '@' of the authority.
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s/:@]+:)[^\s]+?(@)(?=[^\s@]*(?:[\s/\"')]|$))")
_SDES_INLINE = re.compile(r"(?i)(inline:)([A-Za-z0-9+/=]+)(…\(redacted\))?")


def _mask_inline_key(match: re.Match[str]) -> str:
    if match.group(3):  # already redacted: keep the text stable under repeated redaction
        return match.group(0)
    return f"{match.group(1)}{match.group(2)[:4]}…{REDACTED}"


def redact_secrets(text: str) -> str:
    """Mask AWS secrets, request signatures, URL passwords and SDES inline keys so logs can be shared."""
    text = _SDES_INLINE.sub(_mask_inline_key, text)
    text = _SECRET_ASSIGNMENTS.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    text = _SIGNATURE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(2)}", text)


def current_correlation_id() -> str | None:
    """The correlation id of the running context, for code that passes it on (e.g. to a subprocess)."""
    return _correlation_id.get()


def new_correlation_id() -> str:
    """A short random id for work that has no SIP Call-ID yet (the seed used uuid4 hex[:8])."""
    return uuid.uuid4().hex[:8]


def set_correlation_id(cid: str | None) -> None:
    """Tag the rest of this context's records (a flow run's body, a CLI command) with `cid`, or a new short id."""
    _correlation_id.set(cid if cid else new_correlation_id())


@contextmanager
def correlation(cid: str | None = None) -> Iterator[str]:
    """Tag every log record inside the block with `cid` (the Call-ID when known, else a short uuid)."""
    value = cid if cid else new_correlation_id()
    token = _correlation_id.set(value)
    try:
        yield value
    finally:
        _correlation_id.reset(token)


def category_for(logger_name: str) -> str:
    """Default category: the second dotted component ("rtpcore.sip.legs" → "sip"), else the name."""
    parts = logger_name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


class ContextFilter(logging.Filter):
    """Fill `category` and `correlation_id` so the seed's format string works for every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "category", None):
            record.category = category_for(record.name)
        if not getattr(record, "correlation_id", None):
            record.correlation_id = _correlation_id.get() or NO_CORRELATION_ID
        return True


class RedactFilter(logging.Filter):
    """Replace a record's message and args by their redacted merge before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let logging report it the usual way
            return True
        redacted = redact_secrets(message)
        if redacted != message or record.args:
            record.msg = redacted
            record.args = None
        return True


class RedactingFormatter(logging.Formatter):
    """The seed's format, redacted as a whole so tracebacks and extras are covered too."""

    def __init__(self, fmt: str = LOG_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        ContextFilter().filter(record)
        return redact_secrets(super().format(record))


def _our_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if h.get_name() in OUR_HANDLER_NAMES]


def teardown_logging() -> None:
    """Remove and close the handlers setup_logging added and put our loggers' levels back (in-process callers)."""
    root = logging.getLogger()
    for handler in _our_handlers(root):
        root.removeHandler(handler)
        handler.close()
    for name, level in _saved_levels.items():
        logging.getLogger(name).setLevel(level)
    _saved_levels.clear()


def _prepare(handler: logging.Handler, name: str, level: int) -> logging.Handler:
    handler.set_name(name)
    handler.setLevel(level)
    handler.setFormatter(RedactingFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter())
    return handler


def setup_logging(settings: Settings, *, log_dir: Path | None = None, console: bool = True) -> Path:
    """Install console + rotating logs/app.log handlers at settings.log_level; returns the log file path."""
    level = logging.getLevelName(settings.log_level)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {settings.log_level!r}")
    folder = Path(log_dir if log_dir is not None else settings.log_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / LOG_FILE_NAME

    teardown_logging()
    _saved_levels.update({name: logging.getLogger(name).level for name in APP_LOGGERS})
    root = logging.getLogger()
    file_handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUP_COUNT, encoding="utf-8"
    )
    root.addHandler(_prepare(file_handler, FILE_HANDLER_NAME, level))
    if console:
        root.addHandler(_prepare(logging.StreamHandler(sys.stderr), CONSOLE_HANDLER_NAME, level))
    for name in APP_LOGGERS:
        logging.getLogger(name).setLevel(level)
    return log_file
