"""Settings: the seed's RTPHELPER_* names and defaults, env-file parsing, precedence and error messages."""
from __future__ import annotations

import logging
import pickle
import re
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from rtpcore.errors import ConfigError
from rtpcore.settings import (
    REDACTED_SETTING, REPLACED_BY_PREFECT, Settings, SettingsError, env_var, load_settings, read_env_file,
    split_s3_path,
)
from rtpcore.sizes import format_size, parse_size

REPO = Path(__file__).resolve().parents[2]
SEED_README = REPO.parent / "shared" / "seed" / "000_58531032f7d054e5.txt"
EXAMPLE_ENV = REPO / "config" / "runtime.env.example"


def write_env(base: Path, text: str) -> Path:
    path = base / "config" / "runtime.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- sizes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500MB", 500 * 1024 * 1024),
        ("1GB", 1024 ** 3),
        ("5368709120", 5 * 1024 ** 3),
        ("1.5 GiB", 3 * 1024 ** 3 // 2),
        ("200mb", 200 * 1024 * 1024),
        ("64k", 64 * 1024),
        ("2TiB", 2 * 1024 ** 4),
        (" 12 B ", 12),
        ("0.5KB", 512),
        ("1.3KB", int(1.3 * 1024)),  # fractions round down to whole bytes
        (7, 7),
    ],
)
def test_parse_size_uses_binary_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["5XB", "", "MB", "-1MB", "1e6", "1,5GB", "10 M B"])
def test_parse_size_rejects_bad_text_and_names_it(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_size(text)


def test_format_size_reads_back() -> None:
    for n in (0, 312, 1024, 1536, 500 * 1024 ** 2, 5 * 1024 ** 3, 3 * 1024 ** 4):
        text = format_size(n)
        assert abs(parse_size(text) - n) <= n * 0.05, text
    assert format_size(5368709120) == "5 GiB"
    assert format_size(500 * 1024 ** 2) == "500 MiB"
    assert format_size(312) == "312 B"


# --- defaults ----------------------------------------------------------------------------------------

SEED_DEFAULTS = {  # copied from the seed README's variable list
    "RTPHELPER_STORAGE_MODE": "s3", "RTPHELPER_S3_ENDPOINT": "s3.amazonaws.com", "RTPHELPER_S3_REGION": "eu-west-1",
    "RTPHELPER_S3_POOL_CAPTURE": "6", "RTPHELPER_S3_POOL_POST_CAPTURE": "60", "RTPHELPER_S3_UPLOAD_WORKERS_MAX": "6",
    "RTPHELPER_S3_UPLOAD_CONCURRENCY_CAPTURE": "2", "RTPHELPER_S3_UPLOAD_CONCURRENCY_POST_CAPTURE": "4",
    "RTPHELPER_S3_UPLOAD_MAX_ATTEMPTS": "5", "RTPHELPER_S3_MAX_POOL_CONNECTIONS": "10",
    "RTPHELPER_S3_MAINTENANCE_MAX_FILES_ACTIVE": "50", "RTPHELPER_S3_MULTIPART_THRESHOLD_BYTES": "200MB",
    "RTPHELPER_S3_MULTIPART_CHUNKSIZE_BYTES": "100MB", "RTPHELPER_S3_MULTIPART_MAX_CONCURRENCY": "10",
    "RTPHELPER_S3_MULTIPART_USE_THREADS": "1", "RTPHELPER_ROLLING_PCAP_MAX_BYTES": "500MB",
    "RTPHELPER_ROLLING_PCAP_MAX_SECONDS": "0", "RTPHELPER_LOCAL_SPOOL_MAX_BYTES": "5368709120",
    "RTPHELPER_RPCAP_RECONNECT_BASE_SECONDS": "2", "RTPHELPER_RPCAP_RECONNECT_MAX_SECONDS": "30",
    "RTPHELPER_RPCAP_RECONNECT_MAX_ATTEMPTS": "3", "RTPHELPER_CORRELATION_JOB_TIMEOUT_SECONDS": "3600",
}  # the seed's JOB_DB_PATH, JOB_QUEUE_SIZE, WORKER_PYTHON, EMBEDDED_WORKER: REPLACED_BY_PREFECT


def _as_setting(field: str, text: str) -> object:
    """Convert seed default text independently of the code under test."""
    if field.endswith("_bytes"):
        number, unit = re.fullmatch(r"(\d+)(MB|GB)?", text).groups()
        return int(number) * {None: 1, "MB": 2 ** 20, "GB": 2 ** 30}[unit]
    if field == "s3_multipart_use_threads":
        return text == "1"
    if field.endswith("_path"):
        return Path(text)
    if field.startswith("rpcap_reconnect") and field.endswith("_seconds"):
        return float(text)
    return int(text) if text.isdigit() else text


def test_defaults_equal_the_seed() -> None:
    settings = Settings()
    for name, text in SEED_DEFAULTS.items():
        field = name.removeprefix("RTPHELPER_").lower()
        assert getattr(settings, field) == _as_setting(field, text), name
    assert settings.log_level == "INFO"
    assert settings.min_leg_packets == 10
    assert settings.hosts_file == Path("config/hosts.yaml")
    assert settings.log_dir == Path("logs")
    assert settings.capture_root is None and settings.s3_path is None


def test_defaults_match_the_seed_readme_text() -> None:
    if not SEED_README.is_file():
        pytest.skip(f"seed README not found at {SEED_README}")
    text = SEED_README.read_text(encoding="utf-8")
    found = dict(re.findall(r"`(RTPHELPER_[A-Z0-9_]+)` \((?:optional, )?default: `([^`]+)`", text))
    assert len(found) >= 20
    settings = Settings()
    for name, default in found.items():
        if name in REPLACED_BY_PREFECT:
            continue
        field = name.removeprefix("RTPHELPER_").lower()
        assert getattr(settings, field) == _as_setting(field, default), name


def test_runtime_env_example_lists_every_variable_with_its_default(tmp_path: Path) -> None:
    lines = EXAMPLE_ENV.read_text(encoding="utf-8").splitlines()
    listed = [line.removeprefix("# ") for line in lines if line.startswith("# RTPHELPER_")]
    names = {line.split("=", 1)[0] for line in listed}
    assert names >= {env_var(f) for f in Settings.model_fields} - {"RTPHELPER_ENV_FILE"}
    # Uncommented, the example (minus the illustrative S3 path) must load to exactly the defaults.
    body = "\n".join(line for line in listed if not line.startswith("RTPHELPER_S3_PATH="))
    settings = load_settings({}, env_file=write_env(tmp_path, body), base_dir=tmp_path)
    assert settings == Settings.model_validate(
        {"env_file": tmp_path / "config" / "runtime.env"}, context={"base_dir": tmp_path})


def test_load_without_any_file_gives_defaults_with_paths_under_base_dir(tmp_path: Path) -> None:
    settings = load_settings({}, base_dir=tmp_path)
    assert settings.env_file is None
    assert settings.hosts_file == tmp_path / "config" / "hosts.yaml"
    assert settings.log_dir == tmp_path / "logs"
    assert settings.rolling_pcap_max_bytes == 500 * 2 ** 20


# --- sources and precedence ----------------------------------------------------------------------------

def test_env_file_syntax_and_environment_precedence(tmp_path: Path) -> None:
    path = write_env(tmp_path, "\ufeff# a comment\n\n"
                     "export RTPHELPER_S3_PATH='team-bucket/captures/rtp/'\n"
                     'RTPHELPER_S3_REGION="us-east-1"  # inline comment after quotes\n'
                     "RTPHELPER_ROLLING_PCAP_MAX_BYTES = 1GB   # unquoted inline comment\n"
                     "RTPHELPER_S3_MULTIPART_USE_THREADS=off\n"
                     "RTPHELPER_LOG_LEVEL=debug\n"
                     "RTPHELPER_S3_UPLOAD_MAX_ATTEMPTS=9\n"
                     'RTPHELPER_HOSTS_FILE="/opt/hosts # not a comment.yaml"\n'
                     "AWS_SECRET_ACCESS_KEY=ignored-by-settings\n")
    settings = load_settings({"RTPHELPER_S3_UPLOAD_MAX_ATTEMPTS": "3", "RTPHELPER_STORAGE_MODE": "LOCAL"},
                             base_dir=tmp_path)
    assert settings.env_file == path
    assert settings.s3_bucket_name == "team-bucket" and settings.s3_key_prefix == "captures/rtp"
    assert settings.s3_region == "us-east-1"
    assert settings.rolling_pcap_max_bytes == 2 ** 30
    assert settings.s3_multipart_use_threads is False
    assert settings.log_level == "DEBUG"
    assert settings.hosts_file == Path("/opt/hosts # not a comment.yaml")
    assert settings.s3_upload_max_attempts == 3  # environment wins over the file
    assert settings.storage_mode == "local"
    assert read_env_file(path)["AWS_SECRET_ACCESS_KEY"] == "ignored-by-settings"


def test_empty_environment_value_restores_the_default_over_the_file(tmp_path: Path) -> None:
    write_env(tmp_path, "RTPHELPER_MIN_LEG_PACKETS=9\n")
    assert load_settings({"RTPHELPER_MIN_LEG_PACKETS": ""}, base_dir=tmp_path).min_leg_packets == 10


def test_rtphelper_env_file_points_elsewhere(tmp_path: Path) -> None:
    write_env(tmp_path, "RTPHELPER_MIN_LEG_PACKETS=9\n")
    other = tmp_path / "other.env"
    other.write_text("RTPHELPER_MIN_LEG_PACKETS=17\n")
    assert load_settings({"RTPHELPER_ENV_FILE": "other.env"}, base_dir=tmp_path).min_leg_packets == 17
    assert load_settings({}, env_file=other, base_dir=tmp_path).env_file == other


@pytest.mark.parametrize("spelling", ["1", "true", "YES", "on", "0", "False", "no", "OFF"])
def test_booleans(tmp_path: Path, spelling: str) -> None:
    settings = load_settings({"RTPHELPER_S3_MULTIPART_USE_THREADS": spelling}, base_dir=tmp_path)
    assert settings.s3_multipart_use_threads is (spelling.lower() in ("1", "true", "yes", "on"))


def test_s3_bucket_and_prefix_overrides_and_endpoint_url() -> None:
    s = Settings(s3_path="s3://base-bucket/a/b", s3_bucket="other-bucket", s3_prefix="/x/y/")
    assert (s.s3_bucket_name, s.s3_key_prefix) == ("other-bucket", "x/y")
    s = Settings(s3_path="base-bucket")
    assert (s.s3_bucket_name, s.s3_key_prefix) == ("base-bucket", "")
    assert Settings().s3_bucket_name is None and Settings().s3_key_prefix == ""
    assert split_s3_path("s3://b-1/p/q/") == ("b-1", "p/q")
    assert Settings().s3_endpoint_url is None
    assert Settings(s3_endpoint="http://127.0.0.1:9000").s3_endpoint_url == "http://127.0.0.1:9000"
    assert Settings(s3_endpoint="minio.internal:9000").s3_endpoint_url == "https://minio.internal:9000"


def test_capture_root_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings({"RTPHELPER_CAPTURE_ROOT": "~/caps"}, base_dir=tmp_path / "repo")
    assert settings.capture_root == tmp_path / "caps"


def test_settings_are_frozen_and_redacted_dict_names_every_variable() -> None:
    settings = Settings(s3_endpoint="https://user:hunter2@s3.example.net")
    with pytest.raises(FrozenInstanceError):
        settings.log_level = "DEBUG"  # type: ignore[misc]
    shown = settings.redacted_dict()
    assert set(shown) == {env_var(f) for f in Settings.model_fields}
    assert "hunter2" not in str(shown)
    assert shown["RTPHELPER_LOCAL_SPOOL_MAX_BYTES"] == 5 * 2 ** 30
    assert shown["RTPHELPER_HOSTS_FILE"] == "config/hosts.yaml"


# --- the model itself (a dataclass with its own converters since pydantic left this module) ------------

def test_importing_settings_does_not_import_pydantic() -> None:
    code = "import rtpcore.settings, sys; assert 'pydantic' not in sys.modules, 'pydantic was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO)})


def test_model_fields_keep_order_and_descriptions() -> None:
    names = list(Settings.model_fields)
    assert names[:3] == ["storage_mode", "s3_endpoint", "s3_region"] and names[-1] == "distributed_min_chunks"
    assert len(names) == len(set(names)) == len(Settings().model_dump())
    assert Settings.model_fields["s3_endpoint"] == "S3 host name or URL"
    assert Settings.model_fields["s3_region"] == ""
    assert list(Settings().model_dump(exclude={"env_file", "storage_mode"})) == [
        n for n in names if n not in ("env_file", "storage_mode")]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"s3_endpoint": ""}, "s3_endpoint='' must not be empty"),
        ({"s3_region": ""}, "s3_region='' must not be empty"),
        ({"serve_address": ""}, "serve_address='' must not be empty"),
        ({"s3_region": 5}, "s3_region=5 is not text"),
        ({"hosts_file": 5}, "hosts_file=5 is not a path"),
        ({"log_level": "loud"}, "log_level='loud' must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"s3_bucktt": "x"}, "s3_bucktt='x' is not a setting; did you mean s3_bucket?"),
        ({"nonsense": 1}, "nonsense=1 is not a setting"),
    ],
)
def test_constructor_rejects_bad_values_and_unknown_keywords(values: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings(**values)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_constructor_reports_every_error_in_field_order_without_secrets() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(s3_path="https://user:hunter2@example.net/x", s3_pool_capture="lots", bogus=1,
                 rpcap_reconnect_max_seconds=1)
    assert [name for name, _, _ in info.value.errors] == [
        "s3_path", "s3_pool_capture", "rpcap_reconnect_max_seconds", "bogus"]
    assert "hunter2" not in str(info.value)
    assert "s3_pool_capture='lots' is not a whole number" in str(info.value)


def test_frozen_hashable_and_secret_kept_out_of_repr() -> None:
    settings = Settings(serve_secret="s3cret-value")
    with pytest.raises(FrozenInstanceError):
        settings.s3_region = "us-east-1"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):  # Python 3.11's frozen+slots dataclass says TypeError (super())
        settings.not_a_field = 1  # type: ignore[attr-defined]
    assert settings.s3_region == "eu-west-1"
    assert hash(settings) == hash(Settings(serve_secret="s3cret-value")) and settings != Settings()
    assert "s3cret-value" not in repr(settings)
    assert settings.redacted_dict()["RTPHELPER_SERVE_SECRET"] == REDACTED_SETTING


def test_settings_and_their_errors_pickle(tmp_path: Path) -> None:
    settings = load_settings({"RTPHELPER_NUMBER_STRIP_PREFIXES": "1, 99", "RTPHELPER_CAPTURE_ROOT": "caps"},
                             base_dir=tmp_path)
    copy = pickle.loads(pickle.dumps(settings))
    assert copy == settings and hash(copy) == hash(settings) and copy.capture_root == tmp_path / "caps"
    assert copy.number_strip_prefixes == ("1", "99")
    with pytest.raises(SettingsError) as info:
        Settings(s3_pool_capture=0)
    error = pickle.loads(pickle.dumps(info.value))
    assert error.errors == info.value.errors and str(error) == "s3_pool_capture=0 must be at least 1"


def test_model_copy_converts_and_validates_the_update(tmp_path: Path) -> None:
    settings = load_settings({}, base_dir=tmp_path)
    copy = settings.model_copy(update={"log_level": "debug", "rolling_pcap_max_bytes": "2MB"})
    assert (copy.log_level, copy.rolling_pcap_max_bytes) == ("DEBUG", 2 * 2 ** 20)
    assert copy.hosts_file == tmp_path / "config" / "hosts.yaml"  # anchored once, kept
    assert settings.model_copy() == settings
    with pytest.raises(SettingsError, match=re.escape("s3_pool_capture=0 must be at least 1")):
        settings.model_copy(update={"s3_pool_capture": 0})
    with pytest.raises(SettingsError, match="is not a setting"):
        settings.model_copy(update={"s3_buckets": "b"})
    assert settings.s3_pool_capture == 6 and settings.log_level == "INFO"


def test_defaults_go_through_the_converters(tmp_path: Path) -> None:
    anchored = Settings.model_validate({}, context={"base_dir": tmp_path})
    assert (anchored.hosts_file, anchored.log_dir) == (tmp_path / "config" / "hosts.yaml", tmp_path / "logs")
    assert Settings(log_dir="~/x").log_dir == Path("~/x").expanduser()
    assert Settings(s3_connect_timeout_seconds=2).s3_connect_timeout_seconds == 2.0
    assert isinstance(Settings(s3_connect_timeout_seconds=2).s3_connect_timeout_seconds, float)


def test_unknown_variables_warn_with_a_suggestion(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_env(tmp_path, "RTPHELPER_MIN_LEGS_PACKETS=5\n")
    with caplog.at_level(logging.WARNING, logger="rtpcore.settings"):
        settings = load_settings({"RTPHELPER_S3_BUCKT": "x", "OTHER": "1"}, base_dir=tmp_path)
    assert settings.min_leg_packets == 10
    text = caplog.text
    assert "RTPHELPER_S3_BUCKT (from environment; did you mean RTPHELPER_S3_BUCKET?)" in text
    assert "RTPHELPER_MIN_LEGS_PACKETS (from" in text and "runtime.env line 1" in text
    assert "did you mean RTPHELPER_MIN_LEG_PACKETS?" in text
    assert "OTHER" not in text


@pytest.mark.parametrize("name", sorted(REPLACED_BY_PREFECT))
def test_the_seeds_job_settings_are_ignored_with_what_replaced_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str) -> None:
    path = write_env(tmp_path, f"{name}=1\n")
    with caplog.at_level(logging.WARNING, logger="rtpcore.settings"):
        settings = load_settings({}, base_dir=tmp_path)
    defaults = Settings.model_validate({}, context={"base_dir": tmp_path})
    assert settings.model_dump(exclude={"env_file"}) == defaults.model_dump(exclude={"env_file"})
    assert f"ignoring {name} (from {path} line 1): replaced by Prefect: " in caplog.text
    assert REPLACED_BY_PREFECT[name] in caplog.text and "unknown setting" not in caplog.text


def test_the_operations_variables_are_not_settings_and_do_not_warn(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rtpcore.settings"):
        load_settings({"RTPHELPER_HOME": "/srv/rtp-capture-tool", "RTPHELPER_WORK_QUEUES": "EU"}, base_dir=tmp_path)
    assert caplog.text == ""


# --- errors ------------------------------------------------------------------------------------------

def test_bad_size_in_file_names_file_line_and_variable(tmp_path: Path) -> None:
    path = write_env(tmp_path, "# 1\n# 2\n\nRTPHELPER_S3_REGION=eu-west-1\n# 5\nexport X=1\n"
                     "RTPHELPER_ROLLING_PCAP_MAX_BYTES=5XB\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, base_dir=tmp_path)
    assert str(info.value) == (f"{path} line 7: RTPHELPER_ROLLING_PCAP_MAX_BYTES='5XB' is not a size "
                               "(use e.g. 500MB, 1GB or a byte count)")


def test_bad_file_value_is_not_an_error_when_the_environment_overrides_it(tmp_path: Path) -> None:
    write_env(tmp_path, "RTPHELPER_ROLLING_PCAP_MAX_BYTES=5XB\n")
    assert load_settings({"RTPHELPER_ROLLING_PCAP_MAX_BYTES": "2MB"}, base_dir=tmp_path).rolling_pcap_max_bytes == 2 ** 21


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RTPHELPER_STORAGE_MODE", "ftp", "must be one of s3, local"),
        ("RTPHELPER_LOG_LEVEL", "loud", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("RTPHELPER_S3_MULTIPART_USE_THREADS", "maybe", "is not a boolean (use 1/0, true/false, yes/no, on/off)"),
        ("RTPHELPER_S3_POOL_CAPTURE", "12.5", "is not a whole number"),
        ("RTPHELPER_S3_POOL_CAPTURE", "0", "must be at least 1"),
        ("RTPHELPER_RPCAP_RECONNECT_BASE_SECONDS", "soon", "is not a number of seconds"),
        ("RTPHELPER_S3_MULTIPART_CHUNKSIZE_BYTES", "1MB", "is 1 MiB; must be at least 5 MiB"),
        ("RTPHELPER_ROLLING_PCAP_MAX_BYTES", "500", "is 500 B; must be at least 1 MiB"),
        ("RTPHELPER_S3_BUCKET", "My_Bucket", "is not a valid S3 bucket name"),
        ("RTPHELPER_S3_PATH", "/x", "must be <bucket>/<optional/prefix>"),
        ("RTPHELPER_RPCAP_RECONNECT_MAX_SECONDS", "1",
         "must be at least RTPHELPER_RPCAP_RECONNECT_BASE_SECONDS (2)"),
    ],
)
def test_environment_errors_name_source_variable_and_value(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value}, base_dir=tmp_path)
    assert str(info.value).startswith(f"environment: {name}={value!r} {message}")


def test_storage_mode_message_is_exact(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"RTPHELPER_STORAGE_MODE": "ftp"}, base_dir=tmp_path)
    assert str(info.value) == "environment: RTPHELPER_STORAGE_MODE='ftp' must be one of s3, local"


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    write_env(tmp_path, "RTPHELPER_S3_POOL_CAPTURE=lots\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"RTPHELPER_STORAGE_MODE": "ftp"}, base_dir=tmp_path)
    text = str(info.value)
    assert "environment: RTPHELPER_STORAGE_MODE='ftp'" in text
    assert "runtime.env line 1: RTPHELPER_S3_POOL_CAPTURE='lots' is not a whole number" in text


def test_missing_named_env_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope.env'}: env file not found (named by environment RTPHELPER_ENV_FILE)")):
        load_settings({"RTPHELPER_ENV_FILE": "nope.env"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'x.env'}: env file not found (named by the env_file argument)")):
        load_settings({}, env_file=tmp_path / "x.env", base_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("RTPHELPER_LOG_LEVEL=INFO\nthis is not an assignment\n", "line 2: expected KEY=VALUE, got a line starting 'this'"),
        ("RTPHELPER_S3_PATH='bucket/prefix\n", "line 1: the value opens a ' quote that is never closed"),
        ('RTPHELPER_S3_PATH="a" b\n', "line 1: unexpected text (1 characters, not shown) after the closing \""),
        ("1BAD=x\n", "line 1: expected KEY=VALUE, got a line starting '1BAD'"),
        ("AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG\n", "line 1: expected KEY=VALUE, got a line starting "
         "'AWS_SECRET_ACCESS_KEY' (the rest is not shown"),
    ],
)
def test_env_file_syntax_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = write_env(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings({}, base_dir=tmp_path)
    assert str(info.value).startswith(f"{path} {message}")
    assert "wJalr" not in str(info.value), "a secret on a malformed line is never echoed"
