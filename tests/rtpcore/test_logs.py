"""Logging: the seed's line format in logs/app.log, correlation ids, redaction, rotation and idempotence."""
from __future__ import annotations

import contextvars
import inspect
import logging
import logging.handlers
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtpcore.logs import (
    APP_LOGGERS,
    CONSOLE_HANDLER_NAME,
    FILE_HANDLER_NAME,
    correlation,
    current_correlation_id,
    redact_secrets,
    setup_logging,
    teardown_logging,
)
from rtpcore.settings import Settings

SDES_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # RFC 4568's example inline key
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS documentation's example secret
LINE_RE = re.compile(
    r"^(?P<asctime>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \| (?P<level>\w+) \| (?P<category>[^|]+) \| "
    r"cid=(?P<cid>[^|]+) \| (?P<name>[^|]+) \| (?P<file>[^:|]+):(?P<line>\d+) (?P<func>\w+)\(\) \| (?P<message>.*)$"
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in APP_LOGGERS}
    yield
    teardown_logging()
    assert root.handlers == handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def lines(tmp_path: Path) -> list[re.Match[str]]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = (tmp_path / "app.log").read_text(encoding="utf-8")
    matches = [LINE_RE.match(line) for line in text.splitlines()]
    assert all(matches), text
    return matches  # type: ignore[return-value]


def test_file_lines_have_every_field_of_the_seed_format(tmp_path: Path) -> None:
    log_file = setup_logging(Settings(), log_dir=tmp_path, console=False)
    assert log_file == tmp_path / "app.log"
    log = logging.getLogger("rtpcore.sip.legs")
    with correlation("a84b4c76e66710@pc33.example.com") as cid:
        log.info("leg %s has %d packets", "carrier", 42)
        lineno = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
    log.warning("outside")
    first, second = lines(tmp_path)
    assert cid == "a84b4c76e66710@pc33.example.com"
    assert first["level"] == "INFO" and first["category"] == "sip"
    assert first["cid"] == cid and first["name"] == "rtpcore.sip.legs"
    assert (first["file"], int(first["line"]), first["func"]) == (Path(__file__).name, lineno, inspect.currentframe().f_code.co_name)  # type: ignore[union-attr]
    assert first["message"] == "leg carrier has 42 packets"
    assert second["cid"] == "-" and second["level"] == "WARNING"


def test_category_defaults_and_override(tmp_path: Path) -> None:
    setup_logging(Settings(), log_dir=tmp_path, console=False)
    logging.getLogger("rtpcore.storage.s3").info("a")
    logging.getLogger("flows").warning("b")
    logging.getLogger("rtpcore.media").info("c", extra={"category": "decrypt"})
    assert [m["category"] for m in lines(tmp_path)] == ["storage", "flows", "decrypt"]


def test_correlation_generates_short_ids_and_nests(tmp_path: Path) -> None:
    assert current_correlation_id() is None
    with correlation() as outer:
        assert re.fullmatch(r"[0-9a-f]{8}", outer)
        with correlation("inner-call-id"):
            assert current_correlation_id() == "inner-call-id"
        assert current_correlation_id() == outer
        seen: list[str | None] = []
        context = contextvars.copy_context()
        thread = threading.Thread(target=lambda: seen.append(context.run(current_correlation_id)))
        thread.start()
        thread.join()
        assert seen == [outer]
    assert current_correlation_id() is None


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    setup_logging(Settings(), log_dir=tmp_path, console=False)
    log = logging.getLogger("rtpcore.sip.sdp")
    log.info("offer a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|1:32", SDES_KEY)
    log.info("env AWS_SECRET_ACCESS_KEY=%s", AWS_SECRET)
    log.info("url https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAEXAMPLE%%2F20240101&X-Amz-Signature=%s", "ab12" * 16)
    try:
        raise RuntimeError(f"aws_session_token={AWS_SECRET}")
    except RuntimeError:
        log.exception("upload failed")
    text = (tmp_path / "app.log").read_text(encoding="utf-8")
    assert SDES_KEY not in text and SDES_KEY[4:12] not in text
    assert AWS_SECRET not in text and "ab12ab12" not in text
    assert f"inline:{SDES_KEY[:4]}…(redacted)|2^20|1:32" in text
    assert "AWS_SECRET_ACCESS_KEY=(redacted)" in text
    assert "X-Amz-Signature=(redacted)" in text and "X-Amz-Credential=AKIAEXAMPLE%2F20240101" in text
    assert "aws_session_token=(redacted)" in text and "Traceback" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"SecretAccessKey": "abc+/=", "SessionToken": "tok"}', '{"SecretAccessKey": "(redacted)", "SessionToken": "(redacted)"}'),
        ("{'aws_secret_access_key': 'abc'}", "{'aws_secret_access_key': '(redacted)'}"),
        ("GET /k?AWSAccessKeyId=AKIA&Signature=abc%2Fdef&Expires=1", "GET /k?AWSAccessKeyId=AKIA&Signature=(redacted)&Expires=1"),
        ("Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature=fe5f80f7",
         "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature=(redacted)"),
        ("X-Amz-Security-Token=FwoGZX&x=1", "X-Amz-Security-Token=(redacted)&x=1"),
        ("http://admin:pw@minio:9000/b", "http://admin:(redacted)@minio:9000/b"),
        ("endpoint http://admin:s3cr/et+p@ss@127.0.0.1:9/ down", "endpoint http://admin:(redacted)@127.0.0.1:9/ down"),
        ("'http://u:a:b/c@minio:9000'", "'http://u:(redacted)@minio:9000'"),
        ("https://minio.example/bucket@v2 ok", "https://minio.example/bucket@v2 ok"),
        ("rpcap password: hunter2", "rpcap password: (redacted)"),
        ("a=crypto:2 AES_256_CM_HMAC_SHA1_80 inline:abcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKLMNOPQRSTU|2^31",
         "a=crypto:2 AES_256_CM_HMAC_SHA1_80 inline:abcd…(redacted)|2^31"),
        ("nothing secret here: auth_mode password", "nothing secret here: auth_mode password"),
    ],
)
def test_redact_secrets(text: str, expected: str) -> None:
    assert redact_secrets(text) == expected
    assert redact_secrets(expected) == expected  # stable when applied twice


def test_rotation_is_ten_megabytes_times_ten(tmp_path: Path) -> None:
    setup_logging(Settings(), log_dir=tmp_path)
    ours = {h.get_name(): h for h in logging.getLogger().handlers if h.get_name() in (FILE_HANDLER_NAME, CONSOLE_HANDLER_NAME)}
    file_handler = ours[FILE_HANDLER_NAME]
    assert isinstance(file_handler, logging.handlers.RotatingFileHandler)
    assert (file_handler.maxBytes, file_handler.backupCount) == (10 * 1024 * 1024, 10)
    assert Path(file_handler.baseFilename) == tmp_path / "app.log"
    assert isinstance(ours[CONSOLE_HANDLER_NAME], logging.StreamHandler)


def test_setup_is_idempotent_and_leaves_foreign_handlers(tmp_path: Path) -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    foreign.set_name("prefect-like")
    root.addHandler(foreign)
    try:
        setup_logging(Settings(), log_dir=tmp_path)
        setup_logging(Settings(log_level="DEBUG"), log_dir=tmp_path)
        names = [h.get_name() for h in root.handlers]
        assert names.count(FILE_HANDLER_NAME) == 1 and names.count(CONSOLE_HANDLER_NAME) == 1
        assert foreign in root.handlers
        logging.getLogger("rtpcore.pcap").debug("once")
        assert [m["message"] for m in lines(tmp_path)] == ["once"]
        setup_logging(Settings(), log_dir=tmp_path, console=False)
        assert [h.get_name() for h in root.handlers].count(CONSOLE_HANDLER_NAME) == 0
    finally:
        root.removeHandler(foreign)


def test_level_comes_from_settings(tmp_path: Path) -> None:
    setup_logging(Settings(log_level="WARNING"), log_dir=tmp_path, console=False)
    log = logging.getLogger("tasks.capture")
    log.info("hidden")
    log.warning("shown")
    assert [m["message"] for m in lines(tmp_path)] == ["shown"]
    assert logging.getLogger("rtpcore").level == logging.WARNING


def test_log_dir_defaults_to_settings(tmp_path: Path) -> None:
    log_file = setup_logging(Settings(log_dir=tmp_path / "nested" / "logs"), console=False)
    logging.getLogger("rtpcore.x").info("hello")
    assert log_file == tmp_path / "nested" / "logs" / "app.log"
    assert lines(tmp_path / "nested" / "logs")[0]["message"] == "hello"
