"""Flow `capture-session`: capture RTP/SRTP from media hosts over RPCAP into rolling chunks.

Stop it early with the `stop-capture` flow (cooperative: chunks closed, manifest and summary written);
a hard cancel leaves every chunk valid up to its last second, and `rtphelper repair` fixes the rest.
"""
from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path
from typing import Annotated, Literal, cast
from uuid import UUID

from pydantic import Field

from tasks.runtime import install_redaction  # first: process defaults before prefect loads
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from rtpcore.capture.runner import CaptureRequest
from rtpcore.capture.verdict import capture_verdict, verdict_markdown
from rtpcore.hosts import load_hosts
from tasks import capture as t
from tasks import session as s

COUNTERS_EVERY_S = 5.0


def _hosts_choices() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Environments and host ids from hosts.yaml for the UI's dropdowns (frozen at deploy time)."""
    path = Path(os.environ.get("RTPHELPER_HOSTS_FILE", "config/hosts.yaml"))
    try:
        cfg = load_hosts(path)
    except Exception:  # noqa: BLE001 - no hosts.yaml at deploy time: free text, validated in the flow
        return (), ()
    envs = tuple(cfg.environments_names())
    ids = tuple(sorted({h.id for e in envs for h in cfg.hosts(e)}))
    return envs, ids


_ENVS, _IDS = _hosts_choices()
Environment = Literal[_ENVS] if _ENVS else str
HostId = Literal[_IDS] if _IDS else str


@flow(name="capture-session", log_prints=True)
def capture_session(
    environment: Environment,  # type: ignore[valid-type]
    duration_minutes: Annotated[float, Field(gt=0, le=24 * 60)],
    hosts: list[HostId] | None = None,  # type: ignore[valid-type]
    regions: list[str] | None = None,
    sub_regions: list[str] | None = None,
    capture_filter: str = "",
    output_folder: str | None = None,
    storage_mode: Literal["local", "s3"] | None = None,
    capture_root: str | None = None,
    hosts_file: str | None = None,
) -> dict | State:
    """Capture media on the chosen hosts for a duration, or until the stop-capture flow stops it.

    Args:
        environment: Environment from hosts.yaml (PRD, QA, …).
        duration_minutes: How long to capture; the stop-capture flow ends it earlier.
        hosts: Host ids to capture on; empty = every host of the environment (and regions).
        regions: Limit to these regions of the environment.
        sub_regions: Limit to these sub-regions.
        capture_filter: BPF capture filter; empty captures all UDP.
        output_folder: Optional folder under the capture root for the session (e.g. a ticket number).
        storage_mode: local, or s3 (with automatic local fallback); default RTPHELPER_STORAGE_MODE.
        capture_root: Root of the sessions; default RTPHELPER_CAPTURE_ROOT, hosts.yaml settings, ~/Downloads.
        hosts_file: hosts.yaml to use; default RTPHELPER_HOSTS_FILE or config/hosts.yaml.

    The run ends Failed when a host failed or nothing was captured, and Completed with a warning (state
    message and a `capture-warning` artifact) when files are still waiting for S3; the summary artifact
    carries the S3 session URL.
    """
    install_redaction()
    log = get_run_logger()
    settings, cfg = t.load_configuration(hosts_file)
    targets = t.resolve_targets(cfg, environment, regions, sub_regions, hosts)
    paths = s.create_session(capture_root or str(cfg.capture_root(settings)), output_folder)
    request = CaptureRequest(targets=tuple(targets), session_dir=paths.root, duration=duration_minutes * 60,
                             filter_expression=capture_filter, storage_mode=storage_mode, environment=environment,
                             folder=output_folder)
    snapshots: queue.SimpleQueue = queue.SimpleQueue()
    running = t.start(request, settings, snapshots.put)
    log.info("capturing %s into %s for %.1f min; run the stop-capture flow to stop earlier",
             ", ".join(x.label for x in targets), paths.root, duration_minutes)
    watchers = t.capture_host.map(unmapped(running), [x.label for x in targets])
    run_id = str(flow_run.get_id())
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # type: ignore[no-untyped-def]
        running.stop()  # close chunks and the manifest before Prefect's own handling ends the process
        running.session.wait(timeout=5)  # not running.wait(): that would also run the upload flush in the handler
        if callable(previous):
            previous(signum, frame)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (a flow called from another flow's thread): nothing to install
        previous = None
    progress_id = cast(UUID, create_progress_artifact(0.0, description="capture progress (time elapsed)"))  # sync call
    last_table = 0.0
    started = time.monotonic()
    while running.wait(timeout=1.0) is None:
        if t.stop_requested(run_id):
            log.info("stop requested: ending the capture")
            running.stop()
        latest = {}
        while not snapshots.empty():
            snap = snapshots.get()
            latest[snap.label] = snap
        if latest and time.monotonic() - last_table >= COUNTERS_EVERY_S:
            last_table = time.monotonic()
            for snap in latest.values():
                log.info("%s", snap.line())
            create_table_artifact([_row(p) for p in running.progress()], key="capture-counters",
                                  description="live counters per host (updated every ~5 s)")
        update_progress_artifact(progress_id, min(100.0, 100 * (time.monotonic() - started) / request.duration))
    result = t.finish(running)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
    update_progress_artifact(progress_id, 100.0)
    for w in watchers:
        w.wait()
    t.clear_stop(run_id)
    final = running.progress()
    for snap in final:
        log.info("final: %s", snap.line())
    create_table_artifact([_row(p) for p in final], key="capture-counters", description="final counters per host")
    doc = result.to_json()
    verdict = capture_verdict(doc)
    create_markdown_artifact(verdict_markdown(verdict) + _summary_md(doc), key="capture-summary",
                             description="capture session summary")
    if verdict.warnings:
        create_markdown_artifact(verdict_markdown(verdict), key="capture-warning",
                                 description="the capture needs attention")
    if verdict.failed:
        log.error("%s", verdict.message)
        return Failed(message=verdict.message, data=doc)
    if verdict.warnings:
        log.warning("%s", verdict.message)
        return Completed(message=verdict.message, data=doc)
    log.info("%s", verdict.message)
    return doc


def _row(p) -> dict:  # type: ignore[no-untyped-def]
    return {"host": p.host, "interface": p.interface, "state": p.state, "packets": p.packets, "bytes": p.bytes,
            "drops client": p.drops.client, "drops server": p.drops.server, "drops interface": p.drops.interface,
            "chunks": p.chunks, "gaps": p.gaps}


def _summary_md(doc: dict) -> str:
    lines = [f"# Capture session `{doc['session']}`", "", "| host | interface | packets | bytes | drops c/s/i | gaps | files | error |",
             "|---|---|---|---|---|---|---|---|"]
    for h in doc["hosts"]:
        d = h["drops"]
        lines.append(f"| {h['host']} | {h['interface']} | {h['packets']} | {h['bytes']} | {d['client']}/{d['server']}/"
                     f"{d['interface']} | {len(h['gaps'])} | {len(h['files'])} | {h['error'] or ''} |")
    st = doc.get("storage") or {}
    if st:
        lines += ["", f"Storage: {st.get('status')} (mode {st.get('mode')}); pending uploads: {len(st.get('pending') or [])}"]
        if st.get("why"):
            lines.append(f"Fallback: {st['why']} at {st.get('switched_at')}")
    gaps = [(h["host"], g) for h in doc["hosts"] for g in h["gaps"]]
    if gaps:
        lines += ["", "## Gaps", ""] + [f"- {host}: {g['from']} → {g['to']}: {g['why']}" for host, g in gaps]
    return "\n".join(lines) + "\n"
