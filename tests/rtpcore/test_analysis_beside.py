"""The CLI's correlation analyses the call in another process while it combines and writes the WAVs: the files
are the same as when the analysis runs in order (forked or spawned), its log lines reach this process' logs, and
its failures never cost the correlation's outputs."""
from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rtpcore import parallel, pipeline
from rtpcore.analysis import report_html
from rtpcore.pcap.reader import open_capture
from rtpcore.pipeline import InProcessRunner, make_job, run_steps
from tests.conftest import load_truth

T = TypeVar("T")
TERMINATE_SOON_S = 3.0   # well inside parallel.TERMINATE_GRACE_S: SIGTERM itself ended it, not the kill after
REPORT_FILES = ("analysis.json", "report.html", "report.md", "ladder.svg", "timeline.svg")


class InOrderRunner:
    """A runner without `beside` (as a flow's): every step in order, the analysis after combine."""

    def run(self, step: Callable[..., T], *args: Any) -> T:
        return step(*args)

    def map(self, step: Callable[..., T], items: Sequence[Any], *args: Any) -> list[T]:
        return [step(item, *args) for item in items]


def correlate(folder: Path, out: Path, runner: Any = None) -> Any:
    truth = load_truth(folder)
    job = make_job(folder / truth["sip"], truth["direction"], [folder / "media"], out)
    return run_steps(job, runner or InProcessRunner())


def files_of(out: Path) -> dict[str, bytes]:
    """Every file the analysis leaves in combined/, the output folder's name taken out (it differs per run)."""
    combined = out / "combined"
    found = {name: (combined / name).read_bytes() for name in REPORT_FILES if (combined / name).exists()}
    found |= {f"audio/{p.name}": p.read_bytes() for p in sorted((combined / "audio").glob("*"))}
    return {name: data.replace(str(out.resolve()).encode(), b"OUT") for name, data in found.items()}


def packets(path: Path) -> int:
    with open_capture(path) as reader:
        return sum(1 for _ in reader.records())


@pytest.mark.parametrize("name", ["inbound-b2bua", "wrong-key"])
def test_analysis_beside_writes_what_the_analysis_in_order_writes(name: str, generated, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = generated(name)
    in_order = correlate(folder, tmp_path / "in-order", InOrderRunner())
    forked = correlate(folder, tmp_path / "forked")
    monkeypatch.setattr(parallel, "start_method", lambda: "spawn")   # macOS' way: nothing shared, all sent over
    spawned = correlate(folder, tmp_path / "spawned")
    expected = files_of(tmp_path / "in-order")
    assert {"analysis.json", "report.html"} <= set(expected) and any(n.endswith("-stereo.wav") for n in expected)
    assert files_of(tmp_path / "forked") == expected
    assert files_of(tmp_path / "spawned") == expected
    for report in (forked, spawned):
        assert report.report.quality_rows() == in_order.report.quality_rows()   # what the flow's artifacts show
        assert report.report.verdict_rows() == in_order.report.verdict_rows()
    leftovers = [p.name for p in (tmp_path / "forked" / "combined").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_the_analysis_log_lines_reach_this_process(generated, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outcome = correlate(generated("wrong-key"), tmp_path / "out")
    pid = os.getpid()
    verdicts = [v for v in outcome.report.insight.verdicts if v.severity != "info"]
    assert verdicts, "the wrong-key call has warning/error verdicts"
    logged = {(r.name, r.getMessage()): r.process for r in caplog.records}
    for v in verdicts:
        assert ("rtpcore.pipeline", f"{v.leg} {v.direction}: {v.text}") in logged
    report_line = next(m for (n, m) in logged if m.startswith("call report: "))
    assert "report.html" in report_line
    assert any(process != pid for process in logged.values()), "the analysis did run in another process"


def test_a_killed_analysis_process_costs_the_analysis_only(generated, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    def killed(*_args: Any) -> Any:  # runs in the other process: as the kernel's OOM killer would end it
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(pipeline, "analyze_apart", killed)
    caplog.set_level(logging.WARNING)
    outcome = correlate(generated("inbound-proxy"), tmp_path / "out")
    combined = tmp_path / "out" / "combined"
    assert all(packets(combined / name) > 500 for name in ("media_raw.pcap", "media_decrypted.pcap",
                                                           "SIP_plus_media_decrypted.pcap"))
    assert outcome.report.insight is None and outcome.report.analysis_file is None
    assert sorted(p.name for p in combined.iterdir() if not p.name.endswith(".pcap")) == ["filtered"]
    assert "call analysis of media_decrypted.pcap skipped: the process ended without an answer (exit code -9)" \
        in caplog.text


def test_wavs_that_cannot_be_written_take_the_report_with_them(generated, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    def no_space(*_args: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_html, "write_call_audio", no_space)
    caplog.set_level(logging.WARNING)
    outcome = correlate(generated("inbound-proxy"), tmp_path / "out")
    combined = tmp_path / "out" / "combined"
    assert outcome.report.insight is not None and (combined / "analysis.json").is_file()
    left = sorted(p.name for p in combined.iterdir() if not p.name.endswith(".pcap"))
    assert left == ["analysis.json", "filtered"]
    assert not (combined / "report.html").exists() and not (combined / "audio").exists()
    assert "call report (report.html) not written: [Errno 28] No space left on device" in caplog.text


def _sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def _big_answer() -> bytes:
    return bytes(1 << 20)   # more than a pipe holds: the child blocks until someone reads


@pytest.mark.parametrize("fn, args", [(_sleep, (30.0,)), (_big_answer, ())], ids=["busy", "blocked-sending"])
def test_an_interrupted_caller_stops_the_other_process_at_once(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    import time

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with parallel.beside(fn, *args) as running:
            time.sleep(0.3)
            raise KeyboardInterrupt   # as Ctrl-C in this process: the result is never asked for
    assert time.monotonic() - began < TERMINATE_SOON_S
    assert not running._process.is_alive()


def test_without_collected_packets_the_other_process_reads_the_capture_and_writes_the_wavs(
        generated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    folder = generated("inbound-b2bua")
    correlate(folder, tmp_path / "collected")
    real = pipeline.decrypt
    monkeypatch.setattr(pipeline, "decrypt", lambda *args: dataclasses.replace(real(*args), media=None))
    correlate(folder, tmp_path / "read-back")
    found = files_of(tmp_path / "read-back")
    assert any(n.startswith("audio/") for n in found) and "report.html" in found
    assert found == files_of(tmp_path / "collected")
