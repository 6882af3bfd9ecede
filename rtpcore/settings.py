"""Runtime settings: the seed's RTPHELPER_* variables from config/runtime.env and the environment.

`load_settings` reads the env file (KEY=VALUE lines, `#` comments, optional quotes, `export `
prefix), then the process environment on top of it, and validates everything into one frozen
`Settings`. Every error names where the bad value came from (file and line, or "environment").
AWS credentials are deliberately not settings: boto3's credential chain reads them.
Settings is a plain dataclass with its own converters, not a pydantic model: building a pydantic
class of ~60 fields cost every CLI start ~70 ms (issue 12: imports on demand).
"""
from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, get_args

from rtpcore.errors import ConfigError
from rtpcore.literals import STORAGE_MODES, StorageMode
from rtpcore.logs import redact_secrets
from rtpcore.sizes import GIB, MIB, format_size, parse_size

ENV_PREFIX = "RTPHELPER_"
DEFAULT_ENV_FILE = Path("config/runtime.env")
ENVIRONMENT_SOURCE = "environment"
# Read by scripts/desk.sh and prefect.yaml's pull step (worker checkout, pool, queues), not settings of rtpcore.
OPERATIONS_ENV = frozenset({"RTPHELPER_HOME", "RTPHELPER_WORK_POOL", "RTPHELPER_WORK_QUEUES"})
# The seed's job runner settings: Prefect does their work now, so they are ignored with a warning saying what to use.
REPLACED_BY_PREFECT = {
    "RTPHELPER_JOB_DB_PATH": "run history lives in the Prefect server's database (PREFECT_HOME)",
    "RTPHELPER_JOB_QUEUE_SIZE": "runs wait in the Prefect work pool; limit them with the deployment's "
                                "concurrency_limit in prefect.yaml",
    "RTPHELPER_WORKER_PYTHON": "flow runs use the Python that runs `make worker` (PY=…)",
    "RTPHELPER_EMBEDDED_WORKER": "start a worker with `make worker` (or everything with `make start`)",
}
AWS_DEFAULT_S3_ENDPOINT = "s3.amazonaws.com"
S3_MIN_PART_BYTES = 5 * MIB  # S3 rejects multipart parts below 5 MiB (except the last)
MIN_ROLLING_BYTES = MIB  # below this a typo like "500" (bytes) would write one file per packet
SECRET_FIELDS = frozenset({"serve_secret"})  # printed as REDACTED_SETTING, never as their value
REDACTED_SETTING = "(set, not shown)"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_INT_RE = re.compile(r"^[+-]?\d+$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_RULE = "3-63 characters: lowercase letters, digits, dots, hyphens"
# Field metadata keys: the converter every value (defaults too) goes through, the cross-field check run after it
# with the fields validated so far, whether a relative path is anchored at load_settings' base_dir, the help text.
_CONVERT, _CHECK, _ANCHOR, _DESCRIPTION = "convert", "check", "anchor", "description"

logger = logging.getLogger(__name__)
Convert = Callable[[Any], Any]
Check = Callable[[Any, Mapping[str, Any]], Any]


class SettingsError(ValueError):
    """Every bad value of one Settings construction at once, as (field, value as shown, reason)."""

    def __init__(self, errors: Sequence[tuple[str, str, str]]) -> None:
        super().__init__(tuple(errors))  # args = (errors,): the exception pickles to a child process as it is
        self.errors = tuple(errors)

    def __str__(self) -> str:
        return "; ".join(redact_secrets(f"{name}={shown} {reason}") for name, shown, reason in self.errors)


def _to_size(minimum: int, value: Any) -> int:
    try:
        size = parse_size(value)
    except (ValueError, TypeError):
        raise ValueError("is not a size (use e.g. 500MB, 1GB or a byte count)") from None
    if size < minimum:
        raise ValueError(f"is {format_size(size)}; must be at least {format_size(minimum)}")
    return size


def _to_int(minimum: int, value: Any) -> int:
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("is not a whole number")
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    return value


def _to_seconds(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("is not a number of seconds")
    if value < 0:
        raise ValueError("must not be negative")
    return float(value)


def _to_positive_seconds(value: Any) -> float:
    seconds = _to_seconds(value)
    if seconds <= 0:
        raise ValueError("must be more than 0 seconds")
    return seconds


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _to_choice(options: tuple[str, ...], value: Any) -> str:
    text = str(value).strip()
    for option in options:
        if text.lower() == option.lower():
            return option
    raise ValueError(f"must be one of {', '.join(options)}")


def _to_text(value: Any) -> str:
    """A required text setting: taken as it is (as pydantic's str with min_length=1 did), never empty."""
    if not isinstance(value, str):
        raise ValueError("is not text")
    if not value:
        raise ValueError("must not be empty")
    return value


def _to_optional_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _to_path(value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError("is not a path")
    try:
        return Path(value)
    except TypeError:  # a PathLike whose __fspath__ gives bytes
        raise ValueError("is not a path") from None


def _to_optional_path(value: Any) -> Path | None:
    text = _to_optional_text(value)
    return None if text is None else Path(text)


def _expand_path(value: Path, base: Path | None) -> Path:
    """Expand ~ and, when load_settings passes a base_dir, anchor relative paths there."""
    path = value.expanduser()
    return path if path.is_absolute() or base is None else Path(base) / path


def split_s3_path(text: str) -> tuple[str, str]:
    """(bucket, prefix) of "<bucket>/<optional/prefix>", also accepting an s3:// URL."""
    text = text.strip()
    if text.lower().startswith("s3://"):
        text = text[len("s3://"):]
    bucket, _, prefix = text.strip("/").partition("/")
    return bucket, prefix.strip("/")


def _to_bucket(value: Any) -> str | None:
    bucket = _to_optional_text(value)
    if bucket is not None and not _BUCKET_RE.match(bucket):
        raise ValueError(f"is not a valid S3 bucket name ({_BUCKET_RULE})")
    return bucket


def _to_s3_path(value: Any) -> str | None:
    path = _to_optional_text(value)
    if path is not None and not _BUCKET_RE.match(split_s3_path(path)[0]):
        raise ValueError(f"must be <bucket>/<optional/prefix> with a valid bucket name ({_BUCKET_RULE})")
    return path


def _check_backoff(value: float, valid: Mapping[str, Any]) -> float:
    """The reconnect cap is not below the base (skipped when the base itself was bad: that error says enough)."""
    base = valid.get("rpcap_reconnect_base_seconds")
    if base is not None and value < base:
        raise ValueError(f"must be at least {env_var('rpcap_reconnect_base_seconds')} ({base:g})")
    return value


_POSITIVE_INT: Convert = partial(_to_int, 1)
_NON_NEGATIVE_INT: Convert = partial(_to_int, 0)


def _size(minimum: int) -> Convert:
    return partial(_to_size, minimum)


# --- call assembly (issue 8): number formats on both sides of an SBC, correlation headers ---------
_DIGITS_RE = re.compile(r"^\d{1,8}$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!%*_+`'~.-]+$")
MAX_COUNTRY_CODE_DIGITS = 3


def _to_country_code(value: Any) -> str | None:
    text = _to_optional_text(value)
    if text is None:
        return None
    text = text.lstrip("+")
    if not text.isdigit() or len(text) > MAX_COUNTRY_CODE_DIGITS:
        raise ValueError("is not a country code (1-3 digits, e.g. 44)")
    return text


def _to_digits(value: Any) -> str:
    text = str(value).strip()
    if not _DIGITS_RE.match(text):
        raise ValueError("must be 1-8 digits (e.g. 0 or 00)")
    return text


def _to_list(check: re.Pattern[str], what: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = []
    for position, item in enumerate(items, 1):
        text = str(item).strip()
        if not check.match(text):
            raise ValueError(f"item {position} {text!r} is not {what} (give a comma-separated list)")
        out.append(text)
    return tuple(out)


_DIGIT_LIST: Convert = partial(_to_list, _DIGITS_RE, "1-8 digits")
_HEADER_LIST: Convert = partial(_to_list, _HEADER_NAME_RE, "a SIP header name")
# --- end call assembly ----------------------------------------------------------------------------
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


def _setting(default: Any, convert: Convert, description: str = "", *, check: Check | None = None,
             anchor: bool = False, shown: bool = True) -> Any:
    """A Settings field: its default (converted too, as pydantic's validate_default did), converter and help text."""
    return field(default=default, repr=shown, metadata={
        _CONVERT: convert, _CHECK: check, _ANCHOR: anchor, _DESCRIPTION: description})


def _shown(name: str, value: Any) -> str:
    return REDACTED_SETTING if name in SECRET_FIELDS and value is not None else repr(value)


@dataclass(frozen=True, slots=True, init=False)
class Settings:
    """Every RTPHELPER_* variable of the seed, typed, with the seed's defaults (field = lower-case suffix)."""

    # {field name: description}, in field order (the name pydantic gave it: callers iterate it for the names).
    model_fields: ClassVar[Mapping[str, str]]

    storage_mode: StorageMode = _setting(
        "s3", partial(_to_choice, STORAGE_MODES),
        "s3: try S3 first and fall back to local disk on failure; local: always local")
    s3_endpoint: str = _setting(AWS_DEFAULT_S3_ENDPOINT, _to_text, "S3 host name or URL")
    s3_region: str = _setting("eu-west-1", _to_text)
    s3_path: str | None = _setting(None, _to_s3_path, "<bucket>/<optional/prefix>")
    s3_bucket: str | None = _setting(None, _to_bucket, "overrides the bucket of RTPHELPER_S3_PATH")
    s3_prefix: str | None = _setting(None, _to_optional_text, "overrides the prefix of RTPHELPER_S3_PATH")
    s3_pool_capture: int = _setting(6, _POSITIVE_INT, "S3 HTTP pool while a capture runs")
    s3_pool_post_capture: int = _setting(60, _POSITIVE_INT, "S3 HTTP pool during the final flush")
    s3_upload_workers_max: int = _setting(6, _POSITIVE_INT, "background upload workers")
    s3_upload_concurrency_capture: int = _setting(2, _POSITIVE_INT, "concurrent uploads while capturing")
    s3_upload_concurrency_post_capture: int = _setting(4, _POSITIVE_INT, "concurrent uploads after stop")
    s3_upload_max_attempts: int = _setting(5, _POSITIVE_INT, "tries per file before it is marked failed")
    s3_max_pool_connections: int = _setting(10, _POSITIVE_INT, "base botocore pool size")
    s3_maintenance_max_files_active: int = _setting(50, _POSITIVE_INT, "files per maintenance cycle")
    s3_connect_timeout_seconds: float = _setting(
        3.0, _to_positive_seconds, "S3 TCP/TLS connect deadline per request")
    s3_read_timeout_seconds: float = _setting(
        10.0, _to_positive_seconds, "S3 deadline for each response read; a black-holed endpoint fails after this")
    s3_request_max_attempts: int = _setting(3, _POSITIVE_INT, "botocore tries per S3 request (retries included)")
    s3_probe_timeout_seconds: float = _setting(
        4.0, _to_positive_seconds,
        "deadline of the S3 health probe (one request, no retry) that decides 'unavailable'")
    s3_probe_interval_seconds: float = _setting(
        30.0, _to_positive_seconds, "how often S3 is probed while in local fallback")
    s3_final_flush_seconds: float = _setting(
        10.0, _to_seconds, "after a capture, wait this long for the last uploads; the rest stays queued for flush")
    s3_stall_seconds: float = _setting(
        5.0, _to_positive_seconds, "an upload with no S3 progress for this long triggers a health probe")
    s3_multipart_threshold_bytes: int = _setting(200 * MIB, _size(S3_MIN_PART_BYTES))
    s3_multipart_chunksize_bytes: int = _setting(100 * MIB, _size(S3_MIN_PART_BYTES))
    s3_multipart_max_concurrency: int = _setting(10, _POSITIVE_INT)
    s3_multipart_use_threads: bool = _setting(True, _to_bool)
    rolling_pcap_max_bytes: int = _setting(500 * MIB, _size(MIN_ROLLING_BYTES), "raw capture chunk size per host")
    rolling_pcap_max_seconds: int = _setting(0, _NON_NEGATIVE_INT, "time rollover per chunk; 0 = off")
    local_spool_max_bytes: int = _setting(5368709120, _size(MIB), "local spool cap while S3 mode is active")
    rpcap_reconnect_base_seconds: float = _setting(2.0, _to_seconds)
    rpcap_reconnect_max_seconds: float = _setting(30.0, _to_seconds, check=_check_backoff)
    rpcap_reconnect_max_attempts: int = _setting(3, _NON_NEGATIVE_INT)
    correlation_job_timeout_seconds: int = _setting(3600, _POSITIVE_INT)
    log_level: LogLevel = _setting("INFO", partial(_to_choice, LOG_LEVELS))
    capture_root: Path | None = _setting(
        None, _to_optional_path, "overrides hosts.yaml settings.default_capture_root", anchor=True)
    env_file: Path | None = _setting(
        None, _to_optional_path, "the env file these settings were read from", anchor=True)
    hosts_file: Path = _setting(Path("config/hosts.yaml"), _to_path, anchor=True)
    min_leg_packets: int = _setting(
        10, _NON_NEGATIVE_INT, "keep a leg/file result only when it has more than this many packets")
    log_dir: Path = _setting(Path("logs"), _to_path, anchor=True)
    post_capture_wait_seconds: int = _setting(
        3600, _POSITIVE_INT, "how long a finished capture-session waits for the SIP pcap form before completing")
    # --- selective reading (issue 12) ---
    media_select: bool = _setting(
        True, _to_bool, "read only the raw chunks/byte ranges the call's time touches (false: read every byte)")
    media_select_margin_seconds: float = _setting(
        10.0, _to_seconds,
        "extra time around the call's SIP and media windows when choosing chunks (clock offsets)")
    flow_summary: bool = _setting(
        False, _to_bool, "cache a flow summary per chunk (<chunk>.flows.json) from the bytes a correlation reads, "
                         "and skip chunks whose summary shows none of a later call's endpoints (the first "
                         "correlation of a time range then costs ~2.2x: worth it for sessions with many calls)")
    # --- call assembly (issue 8) ---
    number_country_code: str | None = _setting(
        None, _to_country_code, "country code of national numbers on the core side (44: 020… is +4420…)")
    number_national_prefix: str = _setting("0", _to_digits, "trunk prefix of national numbers")
    number_international_prefix: str = _setting(
        "00", _to_digits, "prefix of international numbers (00 44… is +44…)")
    number_strip_prefixes: tuple[str, ...] = _setting(
        (), _DIGIT_LIST, "routing prefixes removed before comparing numbers")
    correlation_headers: tuple[str, ...] = _setting(
        ("X-CID",), _HEADER_LIST, "headers an SBC copies across both sides of a call (besides Session-ID and "
                                  "P-Charging-Vector)")
    # --- the desk (issue 10): files in, files out ---
    link_expires_seconds: int = _setting(
        3600, _POSITIVE_INT, "validity of presigned S3 links and of `rtphelper serve` links to outputs")
    serve_address: str = _setting("127.0.0.1:8765", _to_text, "host:port `rtphelper serve` binds to")
    serve_url: str | None = _setting(
        None, _to_optional_text, "base URL browsers reach `rtphelper serve` at; set: output links point at it")
    serve_secret: str | None = _setting(
        None, _to_optional_text,
        "HMAC secret of serve links and uploads (never logged); shared by the worker and laptops", shown=False)
    fetch_max_bytes: int = _setting(2 * 1024 * MIB, _size(1), "largest SIP pcap fetched from an https:// URL")
    fetch_timeout_seconds: float = _setting(
        30.0, _to_positive_seconds,
        "deadline of each network read when fetching a SIP pcap or calling the Prefect API")
    # issue 12: distributed
    cluster_address: str | None = _setting(
        None, _to_optional_text, "Dask scheduler (tcp://host:8786) for large correlations' per-file filter tasks; "
                                 "unset: always in-process")
    distributed_min_bytes: int = _setting(
        4 * GIB, _size(MIB), "with a cluster address: filter on the cluster from this much selected raw media")
    distributed_min_chunks: int = _setting(
        16, _POSITIVE_INT, "with a cluster address: or from this many selected raw files")

    def __init__(self, **values: Any) -> None:
        """Validated like load_settings' values (text converted, defaults too); SettingsError lists every bad one."""
        self._fill(values, None)

    def _fill(self, values: Mapping[str, Any], base: Path | None) -> None:
        valid: dict[str, Any] = {}
        errors: list[tuple[str, str, str]] = []
        for spec in _FIELDS:
            name, meta = spec.name, spec.metadata
            raw = values.get(name, spec.default)
            try:
                value = meta[_CONVERT](raw)
                if meta[_ANCHOR] and value is not None:
                    value = _expand_path(value, base)
                if meta[_CHECK] is not None:
                    value = meta[_CHECK](value, valid)
            except ValueError as exc:
                errors.append((name, _shown(name, raw), str(exc)))
            else:
                valid[name] = value
        for name in [name for name in values if name not in self.model_fields]:  # as pydantic's extra="forbid"
            hint = difflib.get_close_matches(name, self.model_fields, n=1)
            reason = "is not a setting" + (f"; did you mean {hint[0]}?" if hint else "")
            errors.append((name, _shown(name, values[name]), reason))
        if errors:
            raise SettingsError(errors)
        for name, value in valid.items():
            object.__setattr__(self, name, value)

    @classmethod
    def model_validate(cls, values: Mapping[str, Any], *, context: Mapping[str, Any] | None = None) -> Settings:
        """Settings from `values`; context {"base_dir": …} anchors relative paths there (load_settings' cwd)."""
        base = (context or {}).get("base_dir")
        settings = cls.__new__(cls)
        settings._fill(values, None if base is None else Path(base))
        return settings

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Settings:
        """A copy with `update` applied, validated (unlike pydantic's): a bad value fails here, not where it is used."""
        return type(self).model_validate({**self.model_dump(), **(update or {})})

    def model_dump(self, *, exclude: Collection[str] = ()) -> dict[str, Any]:
        """{field: value} in field order, values as they are (Path, tuple)."""
        return {name: getattr(self, name) for name in self.model_fields if name not in exclude}

    @property
    def s3_bucket_name(self) -> str | None:
        """RTPHELPER_S3_BUCKET, else the bucket part of RTPHELPER_S3_PATH; None when neither is set."""
        if self.s3_bucket:
            return self.s3_bucket
        return split_s3_path(self.s3_path)[0] if self.s3_path else None

    @property
    def s3_key_prefix(self) -> str:
        """RTPHELPER_S3_PREFIX, else the prefix part of RTPHELPER_S3_PATH, without edge slashes ("" if none)."""
        if self.s3_prefix is not None:
            return self.s3_prefix.strip("/")
        return split_s3_path(self.s3_path)[1] if self.s3_path else ""

    @property
    def s3_endpoint_url(self) -> str | None:
        """endpoint_url for boto3: None for AWS's default host (boto3 picks the regional one)."""
        endpoint = self.s3_endpoint.strip().rstrip("/")
        if endpoint.lower() in (AWS_DEFAULT_S3_ENDPOINT, f"https://{AWS_DEFAULT_S3_ENDPOINT}"):
            return None
        return endpoint if "://" in endpoint else f"https://{endpoint}"

    def redacted_dict(self) -> dict[str, str | int | float | bool | None]:
        """{RTPHELPER_NAME: value} safe to print or attach to a run (paths as text, secrets masked)."""
        out: dict[str, str | int | float | bool | None] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):  # list settings print as they are written: a,b
                value = ",".join(value)
            if name in SECRET_FIELDS and value is not None:
                value = REDACTED_SETTING
            out[env_var(name)] = redact_secrets(value) if isinstance(value, str) else value
        return out


_FIELDS = fields(Settings)
Settings.model_fields = MappingProxyType({spec.name: spec.metadata[_DESCRIPTION] for spec in _FIELDS})


def env_var(field_name: str) -> str:
    """The RTPHELPER_* variable behind a Settings field."""
    return ENV_PREFIX + field_name.upper()


def _unquote(raw: str, where: str) -> str:
    if not raw or raw[0] not in "\"'":
        # An unquoted value ends at a " #" comment, as in shell.
        return re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    quote, i = raw[0], 1
    chars: list[str] = []
    while i < len(raw):
        char = raw[i]
        if char == quote:
            rest = raw[i + 1:].strip()
            if rest and not rest.startswith("#"):
                raise ConfigError(f"{where}: unexpected text ({len(rest)} characters, not shown) after the closing "
                                  f"{quote}; quote the whole value")
            return "".join(chars)
        if quote == '"' and char == "\\" and i + 1 < len(raw):
            i += 1
            chars.append({"n": "\n", "t": "\t"}.get(raw[i], raw[i]))
        else:
            chars.append(char)
        i += 1
    raise ConfigError(f"{where}: the value opens a {quote} quote that is never closed")


def _parse_env_lines(path: Path) -> dict[str, tuple[str, int]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read env file ({exc.strerror})") from None
    entries: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export ") or stripped.startswith("export\t"):
            stripped = stripped[len("export"):].lstrip()
        key, sep, rest = stripped.partition("=")
        key = key.strip()
        where = f"{path} line {lineno}"
        if not sep or not _KEY_RE.match(key):
            start = re.match(r"[^\s=:]{0,40}", stripped)
            shown = start.group(0) if start else ""
            raise ConfigError(f"{where}: expected KEY=VALUE, got a line starting {shown!r} (the rest is not shown: "
                              "it may be a secret)")
        entries[key] = (_unquote(rest.strip(), where), lineno)
    return entries


def read_env_file(path: str | Path) -> dict[str, str]:
    """Every KEY=VALUE of an env file (not only RTPHELPER_*), e.g. AWS_* for an explicit boto3 session."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: env file not found")
    return {key: value for key, (value, _) in _parse_env_lines(path).items()}


def _choose_env_file(env_file: Path | None, environ: Mapping[str, str], base: Path) -> tuple[Path, str | None]:
    """The env file to read and who named it (None for the optional default)."""
    if env_file is not None:
        chosen, named_by = Path(env_file), "the env_file argument"
    elif environ.get(env_var("env_file"), "").strip():
        chosen, named_by = Path(environ[env_var("env_file")].strip()), f"{ENVIRONMENT_SOURCE} {env_var('env_file')}"
    else:
        chosen, named_by = DEFAULT_ENV_FILE, None
    chosen = chosen.expanduser()
    return (chosen if chosen.is_absolute() else base / chosen), named_by


def _warn_unknown(unknown: dict[str, str]) -> None:
    known = [env_var(name) for name in Settings.model_fields]
    parts = []
    for key, source in sorted(unknown.items()):
        if key in REPLACED_BY_PREFECT:
            logger.warning("ignoring %s (from %s): replaced by Prefect: %s; remove it", key, source,
                           REPLACED_BY_PREFECT[key])
            continue
        hint = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key} (from {source}" + (f"; did you mean {hint[0]}?)" if hint else ")"))
    if parts:
        logger.warning("ignoring unknown setting(s): %s", ", ".join(parts))


def _error_text(errors: Sequence[tuple[str, str, str]], raw: dict[str, tuple[str, str]]) -> str:
    lines = []
    for field, _, reason in errors:
        if field in raw:
            value, source = raw[field]
            lines.append(redact_secrets(f"{source}: {env_var(field)}={value!r} {reason}"))
        else:
            lines.append(f"settings: {env_var(field)} {reason}")
    return "; ".join(lines)


def load_settings(
    env: Mapping[str, str] | None = None, *, env_file: Path | None = None, base_dir: Path | None = None
) -> Settings:
    """Settings from the env file (config/runtime.env or RTPHELPER_ENV_FILE) overlaid by the environment."""
    environ = os.environ if env is None else env
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    path, named_by = _choose_env_file(env_file, environ, base)

    raw: dict[str, tuple[str, str]] = {}  # field -> (text, where it came from)
    unknown: dict[str, str] = {}
    sources: list[tuple[str, str, str]] = []
    loaded: Path | None = None
    if path.is_file():
        loaded = path
        sources += [(key, value, f"{path} line {lineno}") for key, (value, lineno) in _parse_env_lines(path).items()]
    elif named_by is not None:
        raise ConfigError(f"{path}: env file not found (named by {named_by})")
    sources += [(key, value, ENVIRONMENT_SOURCE) for key, value in environ.items()]

    for key, value, source in sources:
        if not key.startswith(ENV_PREFIX) or key in OPERATIONS_ENV:
            continue
        field = key[len(ENV_PREFIX):].lower()
        if field not in Settings.model_fields:
            unknown[key] = source
        elif field == "env_file":
            continue
        elif value.strip():
            raw[field] = (value.strip(), source)
        else:
            raw.pop(field, None)  # an empty value means "use the default", also over a file value
    if unknown:
        _warn_unknown(unknown)

    values: dict[str, Any] = {field: text for field, (text, _) in raw.items()}
    values["env_file"] = loaded
    try:
        return Settings.model_validate(values, context={"base_dir": base})
    except SettingsError as exc:
        raise ConfigError(_error_text(exc.errors, raw)) from None
