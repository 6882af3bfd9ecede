"""Work in other processes, one per core (a map over items, or one call beside the caller's own work): safe
against interrupts and the parent's death."""
from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from rtpcore.results import signals_deferred

__all__ = ["BesideError", "Beside", "beside", "default_workers", "map_in_processes", "start_method"]

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
TERMINATE_GRACE_S = 5.0       # a stopped child that has not ended by then is killed
FORK_PLATFORMS = ("linux",)   # macOS can fork, but a forked child may crash in system frameworks: it spawns


def default_workers() -> int:
    """Raw files are filtered in parallel processes, one per core."""
    return max(1, os.cpu_count() or 1)


def map_in_processes(fn: Callable[..., T], items: Sequence[Any], *args: Any, workers: int | None = None,
                     meanwhile: Callable[[], object] | None = None) -> list[T]:
    """[fn(item, *args) for item in items], in input order; when there are several items, this process is one of
    the `workers`: it takes the first item while worker processes start on the others, then any item none of
    them has taken yet (last first), instead of waiting idle (one process start fewer).

    meanwhile: called when this process has done its share and a worker is still busy (its core is free then):
    what the caller needs next, e.g. the next steps' imports.
    """
    workers = workers if workers is not None else default_workers()
    if len(items) <= 1 or workers <= 1:
        return [fn(item, *args) for item in items]
    # An interrupt inside the pool's own bookkeeping (submit, shutdown hold its lock) would hang the exit:
    # SIGINT/SIGTERM wait outside those, and are raised while we wait for results.
    with signals_deferred():
        pool = ProcessPoolExecutor(max_workers=min(workers - 1, len(items) - 1), initializer=_die_with_parent)
        futures = [pool.submit(fn, item, *args) for item in items[1:]]
    try:
        results: list[T] = [fn(items[0], *args)]
        own: dict[int, T] = {}
        for n in reversed(range(len(futures))):
            if futures[n].cancel():   # not handed to a worker yet: done here
                own[n] = fn(items[n + 1], *args)
        if meanwhile is not None and not all(future.done() for future in futures):
            meanwhile()
        return results + [own[n] if n in own else future.result() for n, future in enumerate(futures)]
    finally:  # on an interrupt: items not started yet are dropped, the running ones end before cleanup
        with signals_deferred():
            pool.shutdown(wait=True, cancel_futures=True)


def _die_with_parent() -> None:
    """A worker ends when rtphelper is killed (SIGKILL): no orphan keeps writing or holds the terminal."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the worker ends when its queue closes, as before
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


class BesideError(RuntimeError):
    """The process running a call beside ours ended without an answer (killed, out of memory)."""


def start_method() -> str:
    """fork where it is safe (Linux: the child shares the caller's memory, nothing is copied); spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if sys.platform.startswith(FORK_PLATFORMS) and "fork" in methods else "spawn"


class Beside(Generic[T]):
    """fn(*args) running in one other process; `result()` waits for it and replays its log records here."""

    def __init__(self, fn: Callable[..., T], args: tuple[Any, ...], method: str | None = None) -> None:
        method = method or start_method()
        ctx = multiprocessing.get_context(method)
        self._recv, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(  # type: ignore[attr-defined]  # every concrete context has Process
            target=_run_beside, args=(send, fn, args, method == "fork"), daemon=True)
        with signals_deferred():
            if method == "fork":
                gc.freeze()   # the child's collections then skip our objects: touching them would copy their pages
            try:
                self._process.start()
            finally:
                if method == "fork":
                    gc.unfreeze()
        send.close()
        self._answer: tuple[str, Any] | None = None

    def result(self) -> T:
        """fn's return value; its exception is raised here; BesideError when the process died without an answer."""
        if self._answer is None:
            try:
                self._answer = self._recv.recv()
            except EOFError:
                self._process.join()
                self._answer = ("died", self._process.exitcode)
        kind, value = self._answer
        if kind == "died":
            raise BesideError(f"the process ended without an answer (exit code {value})")
        outcome, records = value
        for record in records:
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        records.clear()   # replayed once, however often the result is asked for
        if kind == "raised":
            raise outcome
        return outcome

    def close(self) -> None:
        """Wait for the process; an unanswered one (the caller failed or was interrupted) is stopped first."""
        if self._answer is None and self._process.is_alive():
            self._process.terminate()
        with signals_deferred():
            self._process.join(TERMINATE_GRACE_S)
            if self._process.is_alive():   # SIGTERM did not end it: it must not outlive the run
                self._process.kill()
                self._process.join()
        self._recv.close()


@contextmanager
def beside(fn: Callable[..., T], *args: Any, method: str | None = None) -> Iterator[Beside[T]]:
    """fn(*args) in another process while the caller goes on; the process is always gone when the block ends."""
    running = Beside(fn, args, method)
    try:
        yield running
    finally:
        running.close()


class _Records(logging.Handler):
    """The child's log records, kept to be replayed by the parent's own loggers and handlers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None   # picklable whatever the arguments were
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def _run_beside(send: Any, fn: Callable[..., Any], args: tuple[Any, ...], forked: bool) -> None:
    """In the child: fn(*args), its records captured (the parent's handlers and filters decide what shows).

    Interrupts are the parent's to handle: Ctrl-C (SIGINT to the group) is ignored here, and the parent ends
    an unanswered child with SIGTERM, which kills it quietly (no traceback on the user's terminal).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):   # forked inside signals_deferred: the parent's mask came along
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    _die_with_parent()
    kept = _Records()
    root = logging.getLogger()
    root.handlers = [kept]
    if not forked:
        root.setLevel(logging.DEBUG)   # spawned: no levels inherited; the parent filters when it replays
    try:
        answer: tuple[str, Any] = ("returned", (fn(*args), kept.records))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        answer = ("raised", (exc, kept.records))
    try:
        send.send(answer)
    except Exception as exc:  # noqa: BLE001 - an answer that does not pickle still ends the wait
        try:
            send.send(("raised", (BesideError(f"the answer could not be sent back: {exc}"), kept.records)))
        except OSError:   # the parent is gone or stopped listening: nobody to tell
            pass
    send.close()
