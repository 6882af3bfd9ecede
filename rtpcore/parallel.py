"""One function over many items in worker processes, one per core: safe against interrupts and the parent's death."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from rtpcore.results import signals_deferred

__all__ = ["default_workers", "map_in_processes"]

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def default_workers() -> int:
    """Raw files are filtered in parallel processes, one per core."""
    return max(1, os.cpu_count() or 1)


def map_in_processes(fn: Callable[..., T], items: Sequence[Any], *args: Any, workers: int | None = None) -> list[T]:
    """[fn(item, *args) for item in items], in input order; in worker processes when there are several items."""
    workers = workers if workers is not None else default_workers()
    if len(items) <= 1 or workers <= 1:
        return [fn(item, *args) for item in items]
    # An interrupt inside the pool's own bookkeeping (submit, shutdown hold its lock) would hang the exit:
    # SIGINT/SIGTERM wait outside those, and are raised while we wait for results.
    with signals_deferred():
        pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=_die_with_parent)
        futures = [pool.submit(fn, item, *args) for item in items]
    try:
        return [future.result() for future in futures]
    finally:  # on an interrupt: items not started yet are dropped, the running ones end before cleanup
        with signals_deferred():
            pool.shutdown(wait=True, cancel_futures=True)


def _die_with_parent() -> None:
    """A worker ends when rtphelper is killed (SIGKILL): no orphan keeps writing or holds the terminal."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the worker ends when its queue closes, as before
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
