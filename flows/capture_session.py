"""Flow `capture-session`: capture RTP/SRTP from media hosts over RPCAP into rolling chunks, then (optionally)
pause for the call's SIP pcap and correlate it against this session in the same run.

Stop it early with the `stop-capture` flow (cooperative: chunks closed, manifest and summary written);
a hard cancel leaves every chunk valid up to its last second, and `rtphelper repair` fixes the rest.
"""
from __future__ import annotations

import os
import queue
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from uuid import UUID

from pydantic import Field, WithJsonSchema

from tasks.runtime import begin_flow_run, fail_run  # first: process defaults before prefect loads
from flows.correlate_call import Direction, run_correlation
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, State

from rtpcore.capture.runner import CaptureRequest
from rtpcore.capture.verdict import capture_verdict, verdict_markdown
from rtpcore.errors import RtpCoreError
from rtpcore.hosts import load_hosts
from rtpcore.pipeline import SessionPaths
from rtpcore.session import SESSION_FORMAT
from rtpcore.storage.download import is_s3_url
from tasks import capture as t
from tasks import session as s

COUNTERS_EVERY_S = 5.0
PAUSE_POLL_SECONDS = 2  # how soon a Resume in the UI is noticed (Prefect's default is 10 s)
DEFAULT_HOSTS_FILE = "config/hosts.yaml"
REMOTE_PREFIXES = ("https://", "http://")


def _hosts_choices() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Dropdown choices from hosts.yaml when the module loads (deploy time); every run validates them again."""
    path = Path(os.environ.get("RTPHELPER_HOSTS_FILE", DEFAULT_HOSTS_FILE))
    try:
        cfg = load_hosts(path)
    except Exception as exc:  # noqa: BLE001 - no/bad hosts.yaml at deploy time: free text, validated in the run
        print(f"capture-session: warning: cannot read {path} ({str(exc).splitlines()[0]}): environment, region, "
              "sub-region and host are free text in the run form; each run checks them against the worker's "
              "hosts.yaml (set RTPHELPER_HOSTS_FILE before `prefect deploy` for dropdowns)", file=sys.stderr)
        return (), (), (), ()
    envs = tuple(cfg.environments_names())
    regions = tuple(dict.fromkeys(r for e in envs for r in cfg.regions_names(e)))
    subs = tuple(dict.fromkeys(x for e in envs for x in cfg.sub_regions_names(e)))
    ids = tuple(sorted({h.id for e in envs for h in cfg.hosts(e)}))
    return envs, regions, subs, ids


def _choice(names: tuple[str, ...]) -> Any:
    """A plain str shown as a dropdown of `names` (also with one name); the run checks it against its hosts.yaml."""
    return Annotated[str, WithJsonSchema({"type": "string", "enum": list(names)})] if names else str


_ENVS, _REGIONS, _SUBS, _IDS = _hosts_choices()
Environment, Region, SubRegion, HostId = (_choice(n) for n in (_ENVS, _REGIONS, _SUBS, _IDS))


class PostCaptureInput(RunInput):
    """The form a paused capture-session shows: the call's SIP pcap to correlate against this session, or skip."""

    action: Literal["correlate", "skip"] = Field("correlate", title="Action",
                                                 description="correlate the call now, or end the run")
    sip_pcap: str = Field("", title="SIP pcap", description="SIP pcap of the call: a path on the worker, s3://… or https://…")
    direction: Direction = Field(title="Direction",
                                 description="inbound — the carrier sent the first INVITE; outbound — the core did")
    call_id: str = Field("", title="Call-ID", description="pick the call by Call-ID when the SIP pcap holds several")
    number: str = Field("", title="Number", description="or by caller/callee number")


def _run_name() -> str:
    """capture-{env}-{folder}; without a folder the session's timestamp (the run is renamed to the exact one)."""
    params = flow_run.get_parameters()
    folder = params.get("output_folder") or datetime.now(timezone.utc).strftime(SESSION_FORMAT)
    return f"capture-{params.get('environment')}-{folder}"


@flow(name="capture-session", log_prints=True, flow_run_name=_run_name)
def capture_session(
    environment: Environment,  # type: ignore[valid-type]
    duration_minutes: Annotated[float, Field(gt=0, le=24 * 60)],
    hosts: list[HostId] = [],  # type: ignore[valid-type]  # noqa: B006 - Prefect copies parameters per run
    regions: list[Region] = [],  # type: ignore[valid-type]  # noqa: B006
    sub_regions: list[SubRegion] = [],  # type: ignore[valid-type]  # noqa: B006
    capture_filter: str = "",
    output_folder: str = "",
    storage_mode: Literal["default", "local", "s3"] = "default",
    capture_root: str = "",
    hosts_file: str = "",
    post_capture: Literal["ask", "skip"] = "ask",
) -> dict | State:
    """Capture media on the chosen hosts for a duration, or until the stop-capture flow stops it; then correlate.

    Args:
        environment: Environment from hosts.yaml (PRD, QA, …); checked against the worker's hosts.yaml.
        duration_minutes: How long to capture; the stop-capture flow ends it earlier.
        hosts: Host ids to capture on; empty = every host of the environment (and regions).
        regions: Limit to these regions of the environment; empty = all.
        sub_regions: Limit to these sub-regions; empty = all.
        capture_filter: BPF capture filter; empty captures all UDP.
        output_folder: Folder under the capture root for the session (e.g. a ticket number); empty = none.
        storage_mode: local, or s3 (with automatic local fallback); default = RTPHELPER_STORAGE_MODE.
        capture_root: Root of the sessions; empty = RTPHELPER_CAPTURE_ROOT, hosts.yaml settings, ~/Downloads.
        hosts_file: hosts.yaml to use; empty = RTPHELPER_HOSTS_FILE or config/hosts.yaml.
        post_capture: ask — pause after the capture for the call's SIP pcap and correlate it (Resume in the UI);
            skip — end when the capture ends (schedules).

    The run ends Failed when a host failed or nothing was captured, and Completed with a warning (state
    message and a `capture-warning-…` artifact) when files are still waiting for S3; the summary artifact
    carries the S3 session URL.
    """
    begin_flow_run()
    log = get_run_logger()
    run_id = str(flow_run.get_id())
    try:
        settings, cfg, hosts_path = t.load_configuration(hosts_file)
        targets = t.resolve_targets(cfg, hosts_path, environment, regions, sub_regions, hosts)
        paths = s.create_session(capture_root or str(cfg.capture_root(settings)), output_folder or None)
    except RtpCoreError as exc:
        return fail_run(str(exc))
    session = f"{output_folder}-{paths.root.name}" if output_folder else paths.root.name
    t.label_run(run_id, f"capture-{environment}-{output_folder or paths.root.name}", output_folder or paths.root.name)
    request = CaptureRequest(targets=tuple(targets), session_dir=paths.root, duration=duration_minutes * 60,
                             filter_expression=capture_filter,
                             storage_mode=None if storage_mode == "default" else storage_mode,
                             environment=environment, folder=output_folder or None)
    doc = _capture(request, settings, run_id, t.artifact_key("capture-counters", session))
    verdict = capture_verdict(doc)
    create_markdown_artifact(verdict_markdown(verdict) + _summary_md(doc), key=t.artifact_key("capture-summary", session),
                             description="capture session summary")
    if verdict.warnings:
        create_markdown_artifact(verdict_markdown(verdict), key=t.artifact_key("capture-warning", session),
                                 description="the capture needs attention")
    if verdict.failed:
        return fail_run(verdict.message, doc)
    if verdict.warnings:
        log.warning("%s", verdict.message)
    else:
        log.info("%s", verdict.message)
    captured: dict | State = Completed(message=verdict.message, data=doc) if verdict.warnings else doc
    if post_capture == "skip":
        return captured
    return _post_capture(paths, doc, captured, settings.post_capture_wait_seconds)


def _capture(request: CaptureRequest, settings: Any, run_id: str, counters_key: str) -> dict:
    """Run the capture with live counters and progress; a SIGTERM (cancel) still closes every chunk."""
    log = get_run_logger()
    snapshots: queue.SimpleQueue = queue.SimpleQueue()
    running = t.start(request, settings, snapshots.put)
    log.info("capturing %s into %s for %.1f min; run the stop-capture flow to stop earlier",
             ", ".join(x.label for x in request.targets), request.session_dir, request.duration / 60)
    watchers = t.capture_host.map(unmapped(running), [x.label for x in request.targets])
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
            create_table_artifact([_row(p) for p in running.progress()], key=counters_key,
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
    create_table_artifact([_row(p) for p in final], key=counters_key, description="final counters per host")
    return result.to_json()


def _post_capture(paths: SessionPaths, doc: dict, captured: dict | State, wait_s: int) -> dict | State:
    """Pause for the SIP pcap form; Resume with it correlates this session, skip or no answer keeps the capture."""
    log = get_run_logger()
    form = PostCaptureInput.with_initial_data(
        description=f"## Capture finished: session `{paths.root}`\n\nGive the call's SIP pcap and direction to "
                    f"correlate it against this session's `raw/`, or choose *skip*. Without an answer in "
                    f"{wait_s} s the run completes with the capture.")
    log.info("capture done: waiting up to %d s for the SIP pcap (Resume this run in the UI, or choose skip)", wait_s)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=wait_s, poll_interval=PAUSE_POLL_SECONDS)
    except FlowPauseTimeout:
        t.end_pause(str(flow_run.get_id()))
        log.info("no SIP pcap given within %d s: the run ends with the capture's result", wait_s)
        return captured
    if answer.action == "skip":
        log.info("post-capture correlation skipped")
        return captured
    if not answer.sip_pcap.strip():
        return fail_run(f"the SIP pcap field is empty: the capture is kept in {paths.root}; run correlate-call with "
                     f"media {paths.raw} to correlate it", doc)
    remote = answer.sip_pcap.startswith(REMOTE_PREFIXES) or is_s3_url(answer.sip_pcap)
    if not remote and not Path(answer.sip_pcap).expanduser().is_file():
        return fail_run(f"SIP pcap {answer.sip_pcap}: no such file on the worker; the capture is kept in {paths.root} "
                     f"(run correlate-call with media {paths.raw} and a path the worker can read, s3://… or https://…)",
                     doc)
    log.info("correlating %s (%s) against session %s", answer.sip_pcap, answer.direction, paths.root)
    try:
        sip: Any = answer.sip_pcap if remote else s.import_sip(paths, Path(answer.sip_pcap).expanduser())
        correlated = run_correlation(sip, answer.direction, [str(paths.raw)], paths.root, answer.call_id or None,
                                     answer.number or None, None, False, publish_to=_uploaded_to(doc))
    except RtpCoreError as exc:
        return fail_run(f"correlation failed: {exc}; the capture is kept in {paths.root} (run correlate-call with media "
                     f"{paths.raw} to try again)", doc)
    if isinstance(correlated, State):  # completed with a warning (outputs not uploaded)
        return Completed(message=correlated.message, data={**doc, "correlation": correlated.data})
    return {**doc, "correlation": correlated}


def _uploaded_to(doc: dict) -> str | None:
    """The S3 session of a capture that stored there (no fallback): the correlation's outputs go beside its chunks."""
    storage = doc.get("storage") or {}
    location = storage.get("location")
    return location if storage.get("status") == "s3" and is_s3_url(location) else None


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
