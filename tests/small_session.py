"""The generated session many tests share: bench/session_gen.py's 40 MB on 2 hosts in 4 MB chunks with the sidecar
indexes a capture writes, and a 20-second call in the middle of it (about 350 s of capture)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "bench"
SESSION_BYTES = 40 * 10**6
CHUNK_BYTES = 4 * 10**6
HOSTS = 2
CALL_SECONDS = 20.0
STREAMS = 5                       # ≈ 57 kB/s per host: a 4 MB chunk holds ~70 s


def small_session(folder: Path, **overrides: Any) -> Any:  # bench.session_gen.Session
    """session_gen.generate with the shared sizes; overrides (second_call=True, …) change the rest."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import session_gen

    params: dict[str, Any] = {"hosts": HOSTS, "chunk_bytes": CHUNK_BYTES, "call_seconds": CALL_SECONDS,
                              "streams": STREAMS, "log": lambda *_: None}
    return session_gen.generate(folder, overrides.pop("total_bytes", SESSION_BYTES), **{**params, **overrides})
