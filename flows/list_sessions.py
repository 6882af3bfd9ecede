"""Flow `list-sessions`: recent sessions (capture root, and the S3 prefix in S3 mode) with their state, as a table."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from tasks.runtime import begin_flow_run  # first: process defaults before prefect loads
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from rtpcore.desk.sessions import DEFAULT_LIMIT, recent_sessions
from tasks import session as s


@flow(name="list-sessions", log_prints=True)
def list_sessions(limit: Annotated[int, Field(ge=1, le=500)] = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """List the newest sessions with their state (capturing / captured / correlated / failed) in a `sessions` table.

    Args:
        limit: How many sessions to show (newest first).
    """
    from rtpcore.settings import load_settings

    begin_flow_run()
    rows = [info.row() for info in recent_sessions(s.default_capture_root(), load_settings(), limit=limit)]
    create_table_artifact(rows, key="sessions", description="recent sessions, newest first")
    get_run_logger().info("%d session(s)", len(rows))
    return rows
