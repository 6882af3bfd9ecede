"""Every `rtphelper` command writes the seed's logs/app.log (category, cid); the terminal keeps its short lines."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtpcore.cli import main
from rtpcore.logs import APP_LOGGERS, teardown_logging


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    levels = {name: logging.getLogger(name).level for name in APP_LOGGERS}
    monkeypatch.setenv("RTPHELPER_LOG_DIR", str(tmp_path / "logs"))
    yield tmp_path / "logs" / "app.log"
    teardown_logging()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _read(path: Path) -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text(encoding="utf-8")


def test_correlate_writes_its_lines_to_app_log(generated, log_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    call = generated("inbound-b2bua")
    code = main(["correlate", "--sip", str(call / "sip.pcap"), "--direction", "inbound", "--media",
                 str(call / "media"), "--out", str(tmp_path / "out")])
    assert code == 0
    assert "Direction:" not in capsys.readouterr().err, "INFO lines go to the file, not the terminal"
    text = _read(log_file)
    assert re.search(r" \| INFO \| pipeline \| cid=[0-9a-f]{8} \| rtpcore\.pipeline \| pipeline\.py:\d+ plan_call\(\) "
                     r"\| Direction: inbound$", text, re.M), text


def test_unwritable_log_dir_warns_and_the_command_still_runs(generated, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log folder should be")
    monkeypatch.setenv("RTPHELPER_LOG_DIR", str(blocker / "logs"))
    call = generated("inbound-b2bua")
    try:
        assert main(["legs", "--sip", str(call / "sip.pcap"), "--direction", "inbound"]) == 0
    finally:
        teardown_logging()
    err = capsys.readouterr().err
    assert f"rtphelper legs: warning: cannot write {blocker / 'logs'}/app.log" in err
    assert "set RTPHELPER_LOG_DIR to a writable folder" in err
