"""Tasks and helpers of the capture-session flow: configuration, start, a watcher per host, stop requests, run names."""
from __future__ import annotations

import re
import time
from pathlib import Path
from uuid import UUID

import tasks.runtime  # noqa: F401  (process defaults before prefect loads)
import httpx
from prefect import get_run_logger, task
from prefect.exceptions import PrefectHTTPStatusError
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.states import Failed, Running, State
from prefect.variables import Variable

from rtpcore.capture.engine import CaptureTarget, targets_for_hosts
from rtpcore.capture.runner import CaptureRequest, CaptureResult, RunningCapture, start_capture
from rtpcore.errors import CaptureError, ConfigError
from rtpcore.hosts import HostsConfig, load_hosts
from rtpcore.settings import Settings, load_settings

FINAL_STATES = ("done", "failed")
STOP_VARIABLE_PREFIX = "rtphelper-stop-"


def load_configuration(hosts_file: str) -> tuple[Settings, HostsConfig, Path]:
    """Settings and the hosts.yaml of THIS run (it may have changed since the deployment was made)."""
    settings = load_settings()
    path = Path(hosts_file) if hosts_file else Path(settings.hosts_file)
    return settings, load_hosts(path), path


def resolve_targets(
    hosts: HostsConfig, hosts_path: Path, environment: str, regions: list[str], sub_regions: list[str],
    host_ids: list[str],
) -> list[CaptureTarget]:
    """Validate the form's choices against the run's hosts.yaml: a dropdown made at deploy time may be stale."""
    if environment not in hosts.environments_names():
        raise ConfigError(f"{hosts_path}: unknown environment {environment!r}; valid: "
                          f"{', '.join(hosts.environments_names()) or '(none)'}")
    try:
        entries = hosts.hosts(environment, regions or None, sub_regions or None)
    except ConfigError as exc:
        raise ConfigError(f"{hosts_path}: {exc}") from None
    if host_ids:
        known = {e.id: e for e in entries}
        missing = [h for h in host_ids if h not in known]
        if missing:
            where = f"environment {environment}" + (f", regions {', '.join(regions)}" if regions else "")
            raise ConfigError(f"unknown host(s) {', '.join(missing)} in {where}; known: {', '.join(sorted(known)) or 'none'}")
        entries = [known[h] for h in host_ids]
    if not entries:
        raise ConfigError(f"{hosts_path}: no hosts selected in environment {environment}")
    return targets_for_hosts(entries)


@task(name="start-capture", cache_policy=NO_CACHE, persist_result=False)
def start(request: CaptureRequest, settings: Settings, progress_sink) -> RunningCapture:  # type: ignore[no-untyped-def]
    return start_capture(request, settings, on_progress=progress_sink)


@task(name="capture-host", cache_policy=NO_CACHE, persist_result=False)
def capture_host(running: RunningCapture, label: str) -> dict | State:
    """One task per host/interface: its state in the UI follows that host's capture thread."""
    while True:
        snap = next((p for p in running.progress() if p.label == label), None)
        if snap is None:
            raise CaptureError(f"{label}: not part of this capture session")
        if snap.state in FINAL_STATES:
            break
        time.sleep(0.5)
    if snap.state == "failed":  # a Failed state, not an exception: one line on the run page, no traceback
        return Failed(message=f"{label} ({snap.host}, {snap.interface}): capture failed after {snap.packets} packets; "
                              "the session summary artifact has the reason")
    return {"label": label, "packets": snap.packets, "bytes": snap.bytes, "chunks": snap.chunks, "gaps": snap.gaps}


def stop_requested(flow_run_id: str) -> bool:
    """The stop-capture flow sets this variable; a cheap read every second."""
    return bool(Variable.get(STOP_VARIABLE_PREFIX + flow_run_id, default=None))


def clear_stop(flow_run_id: str) -> None:
    Variable.unset(STOP_VARIABLE_PREFIX + flow_run_id)


@task(name="request-stop", cache_policy=NO_CACHE, persist_result=False)
def request_stop(flow_run_id: str, reason: str) -> None:
    Variable.set(STOP_VARIABLE_PREFIX + flow_run_id, reason or "stop", overwrite=True)


@task(name="finish-capture", cache_policy=NO_CACHE, persist_result=False)
def finish(running: RunningCapture) -> CaptureResult:
    result = running.wait()
    assert result is not None
    return result


def label_run(flow_run_id: str, name: str, tag: str) -> None:
    """Name the run after the session (capture-{env}-{folder}) and tag it with the folder, so it can be found."""
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            client.update_flow_run(UUID(flow_run_id), name=name, tags=sorted({*run.tags, tag}))
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:  # a name is no reason to lose a capture
        get_run_logger().warning("could not name this run %s (%s); the capture goes on", name, exc)


def artifact_key(kind: str, session: str) -> str:
    """A per-session artifact key (lowercase letters, digits, dashes): concurrent captures never share one."""
    from rtpcore.desk.links import key_of

    return key_of(kind, session)



def end_pause(flow_run_id: str) -> None:
    """Back to Running after an unanswered pause: the server fails a run that completes while still Paused."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), Running(message="no post-capture answer"), force=True)
