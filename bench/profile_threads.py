#!/usr/bin/env python3
"""`rtphelper` under cProfile on every thread: `python -m cProfile` sees only the main thread, the capture runs in others.

    python bench/profile_threads.py OUT.prof -- capture --address ... (rtphelper's arguments)
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile(time.thread_time)  # CPU, not time blocked in select()
    with _lock:
        _profiles.append(profile)
    profile.enable()
    try:
        _original_run(self)
    finally:
        profile.disable()


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, argv = Path(sys.argv[1]), sys.argv[3:]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    from rtpcore.cli import main as rtphelper

    profile = cProfile.Profile(time.thread_time)
    _profiles.append(profile)
    profile.enable()
    try:
        code = rtphelper(argv)
    finally:
        profile.disable()
        stats = pstats.Stats(_profiles[0])
        for other in _profiles[1:]:
            stats.add(other)
        stats.dump_stats(str(out))
    return code


if __name__ == "__main__":
    sys.exit(main())
