"""Flow `stop-capture`: ask running capture-session runs to stop cooperatively (chunks closed, summary written)."""
from __future__ import annotations

import asyncio

from tasks.runtime import install_redaction  # first: process defaults before prefect loads
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from tasks import capture as t


async def _running_captures() -> list[tuple[str, str]]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["capture-session"])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))),
        )
    return [(str(r.id), r.name) for r in runs]


@flow(name="stop-capture")
def stop_capture(capture_run: str | None = None, reason: str = "stopped from the UI") -> list[str]:
    """Stop one running capture (by flow-run name or id) or, when empty, every running capture.

    Args:
        capture_run: The capture-session flow run's name (e.g. "vanilla-bullmastiff") or id; empty = all running captures.
        reason: Recorded in the capture's log.
    """
    install_redaction()
    log = get_run_logger()
    runs = asyncio.run(_running_captures())
    chosen = [(i, n) for i, n in runs if capture_run in (None, "", i, n)]
    if capture_run and not chosen:
        raise ValueError(f"no running capture-session run named {capture_run!r}; running: "
                         f"{', '.join(n for _, n in runs) or 'none'}")
    for run_id, name in chosen:
        t.request_stop(run_id, reason)
        log.info("asked capture %s (%s) to stop", name, run_id)
    return [n for _, n in chosen]
