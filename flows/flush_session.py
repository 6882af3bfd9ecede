"""Flow `flush-session`: upload whatever a capture session still has pending (resume flush after an S3 outage)."""
from __future__ import annotations

from pathlib import Path

from tasks.runtime import begin_flow_run  # first: process defaults before prefect loads
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from rtpcore.errors import StorageError
from rtpcore.storage.policy import flush_session as flush


@task(name="flush", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)
def _flush(session_dir: str, timeout: float) -> dict:
    report = flush(Path(session_dir), timeout=timeout)
    doc = {"uploaded": report.uploaded, "left": list(report.left), "failed": list(report.failed),
           "storage": report.storage.as_dict(), "errors": list(report.errors)}
    if report.left:
        raise StorageError(f"{session_dir}: {len(report.left)} files still pending upload ({', '.join(report.left[:5])}…)")
    return doc


@flow(name="flush-session")
def flush_session(session_dir: str, timeout_seconds: float = 1800) -> dict:
    """Upload a session's pending files to S3; fails (and lists them) when anything is left.

    Args:
        session_dir: The local session folder (<root>/<folder>/<timestamp>).
        timeout_seconds: How long to keep uploading before giving up for now.
    """
    begin_flow_run()
    doc = _flush(session_dir, timeout_seconds)
    get_run_logger().info("uploaded %d files; nothing left", doc["uploaded"])
    return doc
