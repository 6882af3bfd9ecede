"""Flow `stop-capture`: ask a running capture-session run to stop cooperatively (chunks closed, summary written)."""
from __future__ import annotations

import asyncio

from tasks.runtime import begin_flow_run, fail_run  # first: process defaults before prefect loads
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import State

from tasks import capture as t


async def _running_captures() -> list[tuple[str, str]]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["capture-session"])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))),
        )
    return [(str(r.id), r.name) for r in runs]


@flow(name="stop-capture")
def stop_capture(capture_run: str = "", all_running: bool = False, reason: str = "stopped from the UI") -> list[str] | State:
    """Stop one running capture (by flow-run name or id), or every running capture when all_running is set.

    Args:
        capture_run: The running capture-session run's name (e.g. "capture-PRD-ticket-1234") or id.
        all_running: Stop every running capture-session instead (capture_run must then be empty).
        reason: Recorded in the capture's log.
    """
    begin_flow_run()
    log = get_run_logger()
    runs = asyncio.run(_running_captures())
    running = ", ".join(n for _, n in runs) or "none"
    if all_running == bool(capture_run):
        return fail_run(f"pick one running capture in capture_run (running: {running}), or set all_running "
                       "with capture_run empty")
    chosen = runs if all_running else [(i, n) for i, n in runs if capture_run in (i, n)]
    if not chosen:
        what = "no capture-session run is running" if not runs or all_running else \
            f"no running capture-session run named {capture_run!r}; running: {running}"
        return fail_run(what)
    for run_id, name in chosen:
        t.request_stop(run_id, reason)
        log.info("asked capture %s (%s) to stop", name, run_id)
    return [n for _, n in chosen]

