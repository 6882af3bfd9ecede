"""The CLI's speed-ups keep the outputs: this process filters a raw file itself while worker processes filter the
others (results in input order), and media_raw.pcap is merged in another process while this one decrypts (the same
bytes as in order; merged here when that process dies)."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rtpcore import parallel
from rtpcore.pcap import merge
from rtpcore.pipeline import InProcessRunner, make_job, run_steps
from tests.conftest import load_truth

T = TypeVar("T")


class InOrderRunner:
    """A runner without `beside` (as a flow's): every step in order."""

    def run(self, step: Callable[..., T], *args: Any) -> T:
        return step(*args)

    def map(self, step: Callable[..., T], items: Sequence[Any], *args: Any) -> list[T]:
        return [step(item, *args) for item in items]


def _where(item: int, offset: int) -> tuple[int, int]:
    return item + offset, os.getpid()


def _fail_on(item: int, bad: int) -> int:
    if item == bad:
        raise ValueError(f"item {item}")
    return item


@pytest.mark.parametrize("count, workers", [(2, 2), (5, 2), (7, 3)])
def test_this_process_takes_the_first_item_and_results_keep_input_order(count: int, workers: int) -> None:
    results = parallel.map_in_processes(_where, list(range(count)), 10, workers=workers)
    assert [value for value, _ in results] == [n + 10 for n in range(count)]
    assert results[0][1] == os.getpid()
    assert any(pid != os.getpid() for _, pid in results)   # the workers took some


@pytest.mark.parametrize("bad", [0, 1])
def test_an_item_that_raises_raises_here_whoever_ran_it(bad: int) -> None:
    with pytest.raises(ValueError, match=f"item {bad}"):
        parallel.map_in_processes(_fail_on, [0, 1], bad, workers=2)


def _slow_unless_first(item: int) -> int:
    if item:
        time.sleep(0.5)   # a worker still busy when this process has done its share
    return item


def test_meanwhile_runs_here_while_a_worker_is_still_busy() -> None:
    called: list[int] = []
    assert parallel.map_in_processes(_slow_unless_first, [0, 1], workers=2,
                                     meanwhile=lambda: called.append(os.getpid())) == [0, 1]
    assert called == [os.getpid()]
    assert parallel.map_in_processes(_slow_unless_first, [0], workers=2, meanwhile=lambda: called.append(0)) == [0]
    assert called == [os.getpid()]   # one item: done here, nothing runs beside it


def correlate(folder: Path, out: Path, runner: Any = None) -> Any:
    truth = load_truth(folder)
    job = make_job(folder / truth["sip"], truth["direction"], [folder / "media"], out)
    return run_steps(job, runner or InProcessRunner())


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.pcap"))}


def test_media_raw_merged_beside_is_the_in_order_one(generated: Callable[[str], Path], tmp_path: Path) -> None:
    folder = generated("inbound-b2bua")
    correlate(folder, tmp_path / "in-order", InOrderRunner())
    correlate(folder, tmp_path / "beside")
    expected = outputs(tmp_path / "in-order")
    assert "combined/media_raw.pcap" in expected
    assert outputs(tmp_path / "beside") == expected


def test_a_merge_process_that_dies_leaves_the_merge_to_this_one(generated: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    folder = generated("inbound-b2bua")
    correlate(folder, tmp_path / "in-order", InOrderRunner())
    parent, real = os.getpid(), merge.merge_captures

    def dies_elsewhere(inputs: Sequence[Path], output: Path) -> int:
        if os.getpid() != parent:   # the other process: killed halfway through its output
            output.with_name(f".{output.name}.dead.part").write_bytes(b"half")
            os._exit(9)
        return real(inputs, output)

    monkeypatch.setattr(merge, "merge_captures", dies_elsewhere)
    with caplog.at_level(logging.DEBUG, logger="rtpcore.pipeline"):
        correlate(folder, tmp_path / "beside")
    assert "media_raw.pcap merged in this process: the process ended without an answer (exit code 9)" in caplog.text
    assert outputs(tmp_path / "beside") == outputs(tmp_path / "in-order")
    assert not list((tmp_path / "beside" / "combined").glob(".*"))
