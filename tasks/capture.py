"""Tasks of the capture-session flow: configuration, start, one watcher task per host, stop requests."""
from __future__ import annotations

import time
from pathlib import Path

import tasks.runtime  # noqa: F401  (process defaults before prefect loads)
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from rtpcore.capture.engine import CaptureTarget, targets_for_hosts
from rtpcore.capture.runner import CaptureRequest, CaptureResult, RunningCapture, start_capture
from rtpcore.errors import CaptureError, ConfigError
from rtpcore.hosts import HostsConfig, load_hosts
from rtpcore.settings import Settings, load_settings

FINAL_STATES = ("done", "failed")
STOP_VARIABLE_PREFIX = "rtphelper-stop-"


@task(name="load-configuration", cache_policy=NO_CACHE, persist_result=False)
def load_configuration(hosts_file: str | None) -> tuple[Settings, HostsConfig]:
    settings = load_settings()
    return settings, load_hosts(Path(hosts_file) if hosts_file else settings.hosts_file)


@task(name="resolve-targets", cache_policy=NO_CACHE, persist_result=False)
def resolve_targets(
    hosts: HostsConfig, environment: str, regions: list[str] | None, sub_regions: list[str] | None,
    host_ids: list[str] | None,
) -> list[CaptureTarget]:
    """Validate the form's choices again: hosts.yaml may have changed since the deployment was made."""
    entries = hosts.hosts(environment, regions or None, sub_regions or None)
    if host_ids:
        known = {e.id: e for e in entries}
        missing = [h for h in host_ids if h not in known]
        if missing:
            where = f"environment {environment}" + (f", regions {', '.join(regions)}" if regions else "")
            raise ConfigError(f"unknown host(s) {', '.join(missing)} in {where}; known: {', '.join(sorted(known)) or 'none'}")
        entries = [known[h] for h in host_ids]
    if not entries:
        raise ConfigError(f"no hosts selected in environment {environment}")
    return targets_for_hosts(entries)


@task(name="start-capture", cache_policy=NO_CACHE, persist_result=False)
def start(request: CaptureRequest, settings: Settings, progress_sink) -> RunningCapture:  # type: ignore[no-untyped-def]
    return start_capture(request, settings, on_progress=progress_sink)


@task(name="capture-host", cache_policy=NO_CACHE, persist_result=False)
def capture_host(running: RunningCapture, label: str) -> dict:
    """One task per host/interface: its state in the UI follows that host's capture thread."""
    while True:
        snap = next((p for p in running.progress() if p.label == label), None)
        if snap is None:
            raise CaptureError(f"{label}: not part of this capture session")
        if snap.state in FINAL_STATES:
            break
        time.sleep(0.5)
    if snap.state == "failed":
        raise CaptureError(f"{label} ({snap.host}, {snap.interface}): capture failed after {snap.packets} packets; "
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
