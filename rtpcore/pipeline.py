"""The one correlation core: SIP pcap + direction + raw media → the three outputs, a report, published outputs.

`run_steps(job, runner)` is the only place that knows the order of the steps and their settings; the CLI
runs it in-process (`InProcessRunner`, the filter step in parallel processes) and the flows run it with a
runner that turns each step into a Prefect task (tasks/correlation.py, the filter step mapped).
"""
from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rtpcore import results as txns
from rtpcore.errors import ConfigError, InputError, NoMediaMatchError
from rtpcore.media.demux import (
    DEFAULT_MIN_PACKETS, FileResult, check_names, filter_raw_file, media_files, no_match_message,
)
from rtpcore.media.bpf import relay_endpoints
from rtpcore.media.flowcache import record_flows
from rtpcore.media.latch import adopt
from rtpcore.media.select import ChunkChoice, Endpoint, MediaSelection, Span, call_windows, select_files
from rtpcore.parallel import Beside, BesideError, beside, map_in_processes
from rtpcore.plan import LegPlan
from rtpcore.report import CorrelationOutcome, CorrelationReport
from rtpcore.results import MEDIA_DECRYPTED, MEDIA_RAW, SIP_PLUS_MEDIA, ResultTransaction, SessionPaths
from rtpcore.sip.legs import resolve_legs
from rtpcore.sip.signalling import write_signalling

if TYPE_CHECKING:
    from rtpcore.analysis.insight import CallInsight
    from rtpcore.analysis.packets import RtpPacket
    from rtpcore.analysis.stats import StreamId
    from rtpcore.media.decrypt import DecryptResult
    from rtpcore.settings import Settings
    from rtpcore.storage.download import PublishedOutputs

__all__ = [
    "MEDIA_DECRYPTED", "MEDIA_RAW", "SIP_PLUS_MEDIA", "CorrelationJob", "CorrelationOutcome", "InProcessRunner",
    "OutputSpaceError", "STEPS", "select_media", "SessionPaths", "StepRunner", "correlate", "make_job", "run_steps",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
S3_STORAGE_MODE = "s3"
DEFAULT_LINK_EXPIRES_S = 3600
NO_PUBLISH_NOTE = "outputs stay local (media did not come from an S3 session, or RTPHELPER_STORAGE_MODE is not s3)"


class OutputSpaceError(InputError):
    """The output folder's disk filled up during the run; the previous results are untouched."""


@dataclass(frozen=True, slots=True)
class CorrelationJob:
    """What a run needs, settings already applied: the same job from the CLI and the flows."""

    sip: Path
    direction: str
    media: tuple[Path | str, ...]        # as given (strings for s3:// sessions); empty: the SIP capture
    out: Path
    call_id: str | None = None
    number: str | None = None
    min_packets: int = DEFAULT_MIN_PACKETS
    overwrite: bool = False
    workers: int | None = None
    publish: bool = False                # outputs go back into the S3 session the media came from
    settings: Settings | None = field(default=None, repr=False, compare=False)
    analysis: bool = True                # issue 11: combined/analysis.json, verdicts (off only to measure its cost)
    select: bool = True                  # RTPHELPER_MEDIA_SELECT: read only what the call's time touches
    select_margin_ns: int = 10 * 10**9   # RTPHELPER_MEDIA_SELECT_MARGIN_SECONDS
    publish_to: str | None = None        # the S3 session of local media a capture uploaded: outputs go there too

    @property
    def sip_is_media(self) -> bool:
        return not self.media

    @property
    def sources(self) -> list[Path | str]:
        """No media given: the SIP capture is the media source (people export the whole capture as "the SIP pcap")."""
        return list(self.media) if self.media else [self.sip]

    @property
    def s3_source(self) -> str | None:
        from rtpcore.storage.download import is_s3_url

        return next((str(m) for m in self.media if is_s3_url(m)), None)


def make_job(
    sip: Path | str, direction: str, media: Sequence[Path | str], out: Path | str, *,
    call_id: str | None = None, number: str | None = None, min_packets: int | None = None,
    overwrite: bool = False, workers: int | None = None, settings: Settings | None = None,
    publish_to: str | None = None,
) -> CorrelationJob:
    """The job with every setting resolved in one place (RTPHELPER_MIN_LEG_PACKETS, storage mode); publish_to: the
    S3 session a capture uploaded the (local) media to, where the outputs go as well (found by itself for a session
    folder with an upload queue, in S3 mode)."""
    from rtpcore.storage.download import is_s3_url

    if settings is None:
        from rtpcore.settings import load_settings

        settings = load_settings()
    media = tuple(str(m) if is_s3_url(m) else Path(m) for m in media)
    if min_packets is None:
        min_packets = settings.min_leg_packets
    if publish_to is not None and not is_s3_url(publish_to):
        raise ConfigError(f"publish_to {publish_to!r}: not an s3://bucket/prefix/… session URL")
    if publish_to is None:  # a local session folder of an S3-mode capture: outputs go beside its chunks
        from rtpcore.storage.uploaded import uploaded_to

        publish_to = uploaded_to([m for m in media if isinstance(m, Path)], settings)
    publish = publish_to is not None or (
        any(isinstance(m, str) for m in media) and settings.storage_mode == S3_STORAGE_MODE)
    return CorrelationJob(Path(sip), direction, media, Path(out), call_id, number, min_packets, overwrite, workers,
                          publish, settings, select=settings.media_select,
                          select_margin_ns=round(settings.media_select_margin_seconds * 10**9), publish_to=publish_to)


# -- the steps: plain functions of plain dataclasses ---------------------------------------------


def plan_call(job: CorrelationJob) -> LegPlan:
    """The leg plan from the SIP capture (first: a wrong call costs no download and no output)."""
    plan = resolve_legs(job.sip, job.direction, call_id=job.call_id, number=job.number)
    log.info("Direction: %s", job.direction)
    log.info("Call-ID: %s", plan.call_id)
    log.info("call %s: %s", plan.call_id, "; ".join(f"{leg.name} {', '.join(leg.endpoints)}" for leg in plan.legs))
    return plan


def open_results(job: CorrelationJob) -> ResultTransaction:
    """A staging folder beside the results; existing results refuse the run unless --overwrite."""
    return txns.begin(job.out, overwrite=job.overwrite)


def list_media(job: CorrelationJob, txn: ResultTransaction) -> list[Path]:
    """Local files/folders as given (a session folder: its raw/); an s3:// session's raw/ downloaded (verified) into
    <out>/raw/ first, unless select_media fetches only the call's part of it."""
    from rtpcore.session import find_raw  # a session folder means its raw/, as in the flows

    sources = tuple(find_raw(m) if isinstance(m, Path) else m for m in job.sources)
    if job.s3_source is not None and job.select:
        local = [m for m in sources if isinstance(m, Path)]
        files = media_files(local) if local else []
    elif job.s3_source is not None:
        from rtpcore.storage.download import materialize_media

        files = media_files(materialize_media(sources, txn.final.root, job.settings))
    else:
        from rtpcore.storage.uploaded import emptied_session

        local = [Path(m) for m in sources]
        kept = [p for p in local if not emptied_session(p)]  # select_media reads their chunks from S3
        files = media_files(kept) if kept else []
    check_names(files)
    return files


def select_media(job: CorrelationJob, plan: LegPlan, txn: ResultTransaction, files: Sequence[Path]) -> MediaSelection:
    """Which raw chunks and byte ranges the call's time touches (indexes) and, where flow summaries exist, its media
    host endpoints; fetching only those from S3 (or leaving the ranges for cluster workers to read); every file's
    decision and reason goes into the report so a wrong skip is visible."""
    windows = call_windows(plan, job.select_margin_ns)
    if not job.select:
        return MediaSelection(windows, tuple(ChunkChoice(f, f.stat().st_size, None, "full",
                                                         "RTPHELPER_MEDIA_SELECT=false: read in full") for f in files))
    flows_on = job.settings.flow_summary if job.settings is not None else False  # RTPHELPER_FLOW_SUMMARY
    endpoints = relay_endpoints(plan) if flows_on else None
    choices = select_files(files, windows, cache=True, endpoints=endpoints) if not job.sip_is_media else [
        ChunkChoice(f, f.stat().st_size, None, "full", "the SIP capture: read in full") for f in files]
    if not job.sip_is_media:
        choices += _absent_from_sessions(job, txn, windows, endpoints)
    for n, source in enumerate(s for s in job.sources if isinstance(s, str)):
        from rtpcore.storage.download import FURTHER_IMPORT, select_from_storage, storage_for_url

        dest = txn.final.root if n == 0 else txn.final.root / FURTHER_IMPORT.format(n=n + 1)
        assert job.settings is not None
        choices += select_from_storage(storage_for_url(source, job.settings), source, dest, windows,
                                       endpoints=endpoints, defer=bool(job.settings.cluster_address))
    selection = MediaSelection(windows, tuple(choices))
    check_names([c.source for c in selection.reads])
    log.info("media: reading %d of %d file(s), %d of %d bytes", len(selection.reads), len(selection.choices),
             selection.bytes_read, selection.bytes_total)
    for warning in selection.warnings:
        log.warning("%s", warning)
    if not selection.reads:
        raise NoMediaMatchError(selection.nothing_read_message(plan.call_id))
    return selection


def _absent_from_sessions(job: CorrelationJob, txn: ResultTransaction, windows: Sequence[Span],
                          endpoints: Sequence[Endpoint] | None) -> list[ChunkChoice]:
    """The call's part of chunks a session folder's manifest lists but its raw/ lost (removed after upload): from S3."""
    from rtpcore.storage.uploaded import absent_chunks, fetch_absent

    absent = absent_chunks([s for s in job.sources if isinstance(s, Path)], windows)
    if not absent:
        return []
    defer = bool(job.settings is not None and job.settings.cluster_address)
    return fetch_absent(absent, job.settings, txn.final.root, windows, endpoints=endpoints, defer=defer)


def filter_one(
    source: Path | ChunkChoice, job: CorrelationJob, plan: LegPlan, txn: ResultTransaction
) -> FileResult:
    """One raw file (or the byte ranges select_media chose): BPF, then per-leg outputs in the staging filtered/;
    an S3 chunk left in S3 is range-read here into a temporary folder of this process (a cluster worker's own
    disk); the chunk's flow summary is cached from the bytes read when it has none yet."""
    if not isinstance(source, ChunkChoice):
        return filter_raw_file(plan, Path(source), txn.staged.filtered, min_packets=job.min_packets)
    if source.deferred:
        import tempfile

        from rtpcore.storage.remote import fetch_choice

        settings = job.settings if job.settings is not None else _settings()
        with tempfile.TemporaryDirectory(prefix="rtphelper-chunk-") as folder:
            part = fetch_choice(source, settings, Path(folder))
            result = filter_raw_file(plan, part, txn.staged.filtered, min_packets=job.min_packets)
            record_flows(source, part, settings)
        error = result.error.replace(str(part), source.origin or str(source.source)) if result.error else None
        return replace(result, source=source.source, error=error)
    result = filter_raw_file(plan, source.source, txn.staged.filtered, min_packets=job.min_packets,
                             ranges=source.read_ranges)
    record_flows(source, source.source, job.settings)
    return result


def _settings() -> Settings:
    from rtpcore.settings import load_settings

    return load_settings()


def learn(
    job: CorrelationJob, plan: LegPlan, results: Sequence[FileResult]
) -> tuple[LegPlan, list[FileResult]]:
    """Once over all files: adopt learned peers and late RTCP; say where the media came from."""
    if job.sip_is_media:
        note = (f"no raw media given: the media was taken from the SIP capture {job.sip.name} "
                "(it holds the call's media too); only its signalling went into SIP_plus_media_decrypted.pcap")
        plan = replace(plan, findings=(note, *plan.findings))
    adoption = adopt(plan, results, min_packets=job.min_packets)
    return adoption.plan, list(adoption.results)


def merge_raw(job: CorrelationJob, plan: LegPlan, results: Sequence[FileResult], txn: ResultTransaction) -> int:
    """All kept per-leg files by timestamp → media_raw.pcap; no match at all is an error that says what to give."""
    from rtpcore.pcap.merge import merge_captures

    return merge_captures(kept_raw(job, plan, results), txn.staged.media_raw)


def kept_raw(job: CorrelationJob, plan: LegPlan, results: Sequence[FileResult]) -> list[Path]:
    """merge_raw's inputs, the raw files' errors said; no match at all is the error that says what to give."""
    kept = [lf.output for r in results for lf in r.legs if lf.kept and lf.output is not None]
    for r in results:
        if r.error:
            log.warning("raw file %s: %s", r.source.name, r.error)
    if not kept:
        message = no_match_message(plan, results)
        if job.sip_is_media:
            message += ("\nno --media was given, so only the SIP capture was searched: give the raw media captures "
                        "of the call's media host with --media")
        raise NoMediaMatchError(message)
    return kept


@contextmanager
def raw_merge_beside(runner: StepRunner, job: CorrelationJob, plan: LegPlan, results: Sequence[FileResult],
                     txn: ResultTransaction) -> Iterator[None]:
    """merge_raw in another process while the block runs (the CLI's runner: a core is idle while this one decrypts)
    and waited for at its end, else as its own step first (a flow's task); its no-match error comes on entering."""
    if not hasattr(runner, "beside"):
        runner.run(merge_raw, job, plan, results, txn)
        yield
        return
    from rtpcore.pcap.merge import merge_captures

    kept = kept_raw(job, plan, results)
    with runner.beside(merge_captures, kept, txn.staged.media_raw) as running:
        yield
        try:
            running.result()   # its failure (a full disk) fails the run
        except BesideError as exc:   # killed (out of memory?): merged here, what it began removed
            log.debug("media_raw.pcap merged in this process: %s", exc)
            for part in txn.staged.combined.glob(f".{MEDIA_RAW}.*"):
                part.unlink(missing_ok=True)
            merge_captures(kept, txn.staged.media_raw)


def decrypt(plan: LegPlan, results: Sequence[FileResult], txn: ResultTransaction, collect: bool = False) -> DecryptResult:
    """Decrypt per stream across files → decrypted/<file>-… and media_decrypted.pcap; collect: keep its RTP/RTCP
    headers for the analysis step (no second read of media_decrypted.pcap)."""
    from rtpcore.media.decrypt import FilteredInput, decrypt_call

    paths = txn.staged
    inputs = [FilteredInput(lf.leg, lf.output, r.source) for r in results for lf in r.legs if lf.kept and lf.output]
    return decrypt_call(plan, inputs, paths.decrypted, paths.media_decrypted, collect=collect)


def combine(job: CorrelationJob, txn: ResultTransaction) -> int:
    """The SIP capture's signalling (not its own copy of any media) and the decrypted media by timestamp
    → SIP_plus_media_decrypted.pcap, so each media packet is there once."""
    from rtpcore.fsutil import new_temp
    from rtpcore.pcap.merge import merge_captures

    paths = txn.staged
    temp = new_temp(paths.combined, f"{job.sip.stem}.signalling")
    try:
        copy = write_signalling(job.sip, temp)
        if copy.dropped:
            log.info("%s: %d of %d frames are not signalling (media?); only the signalling goes into %s",
                     job.sip.name, copy.dropped, copy.frames, SIP_PLUS_MEDIA)
        return merge_captures([temp, paths.media_decrypted], paths.sip_plus_media)
    finally:
        temp.unlink(missing_ok=True)


def analyze(job: CorrelationJob, sdp_plan: LegPlan, plan: LegPlan, decrypted: DecryptResult,
            txn: ResultTransaction) -> CallInsight | None:
    """Statistics, MOS and verdicts of the decrypted media → combined/analysis.json, and the call report, inside
    the staged results.

    The analysis adds to the outputs; when it fails on a capture it cannot read, the correlation's outputs
    still go out and the report says why the analysis is missing.
    """
    insight = _insight(job, sdp_plan, plan, decrypted, txn)
    if insight is not None:
        write_report(job, plan, insight, txn.staged)
    return insight


def _insight(job: CorrelationJob, sdp_plan: LegPlan, plan: LegPlan, decrypted: DecryptResult,
             txn: ResultTransaction, groups: Mapping[StreamId, Sequence[RtpPacket]] | None = None,
             *, write: bool = True) -> CallInsight | None:
    """The analysis and its verdicts → combined/analysis.json (forced to disk: `rtphelper report` rebuilds from it);
    write=False: the caller writes it (_write_insight)."""
    from rtpcore.analysis.insight import call_insight

    paths = txn.staged
    try:
        insight = call_insight(job.sip, sdp_plan, plan, decrypted, paths.media_decrypted,
                               final_name=Path(MEDIA_DECRYPTED),  # beside analysis.json: the same bytes anywhere
                               groups=groups)
    except (ValueError, InputError) as exc:
        log.warning("call analysis of %s skipped: %s", paths.media_decrypted.name, exc)
        return None
    if write:
        _write_insight(job, plan, insight, paths)
    for v in insight.verdicts:
        if v.severity != "info":
            log.warning("%s %s: %s", v.leg, v.direction, v.text)
    return insight


def _write_insight(job: CorrelationJob, plan: LegPlan, insight: CallInsight, paths: SessionPaths) -> None:
    """combined/analysis.json with the facts `rtphelper report` needs to rebuild the report."""
    from rtpcore.analysis.insight import ANALYSIS_FILE

    insight.write(paths.combined / ANALYSIS_FILE,
                  facts={"sip": str(job.sip.resolve()), "direction": job.direction, "call_id": plan.call_id})


def write_report(job: CorrelationJob, plan: LegPlan, insight: CallInsight, paths: SessionPaths,
                 audio_apart: bool = False) -> bool:
    """report.html/md, ladder/timeline SVGs and WAVs beside the outputs; a report that fails is a warning only.

    audio_apart: the WAVs are written by the caller meanwhile (analysis_beside), so they are only named here.
    """
    from rtpcore.analysis.call import audio_files
    from rtpcore.analysis.report_html import write_call_report

    analysis = replace(insight.analysis, capture=paths.media_decrypted)  # the staged file: the final one is not there yet
    try:
        audio = audio_files(analysis.packets) if audio_apart and analysis.packets is not None else None
        written = write_call_report(paths.root, analysis=analysis, verdicts=[v.to_json() for v in insight.verdicts],
                                    plan=plan, sip_pcap=job.sip, dtmf_relay=[c.to_json() for c in insight.dtmf_relay],
                                    audio=audio, pcaps=(MEDIA_RAW, MEDIA_DECRYPTED, SIP_PLUS_MEDIA))
    except (ValueError, InputError, OSError) as exc:
        log.warning("call report (report.html) not written: %s", exc)
        return False
    log.info("call report: %s", ", ".join(p.name for p in written if p.parent == paths.combined))
    return True


def analyze_apart(job: CorrelationJob, sdp_plan: LegPlan, plan: LegPlan, decrypted: DecryptResult,
                  txn: ResultTransaction, groups: Mapping[StreamId, Sequence[RtpPacket]] | None = None,
                  ) -> tuple[CallInsight | None, bool]:
    """`analyze` in another process while the caller writes the WAVs (the report names them): the insight without
    the collected packets (sending them back would cost more than the analysis saves) and whether the report
    was written. groups: the collected RTP per stream, grouped once for both processes."""
    insight = _insight(job, sdp_plan, plan, decrypted, txn, groups, write=False)
    if insight is None:
        return None, False
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="analysis-json") as pool:
        written = pool.submit(_write_insight, job, plan, insight, txn.staged)  # its fsyncs wait while the report renders
        reported = write_report(job, plan, insight, txn.staged, audio_apart=groups is not None)
        written.result()   # its error (a full disk) fails the run, as in order
    return replace(insight, analysis=replace(insight.analysis, packets=None)), reported


@contextmanager
def analysis_beside(runner: StepRunner, job: CorrelationJob, sdp_plan: LegPlan, plan: LegPlan,
                    decrypted: DecryptResult, txn: ResultTransaction) -> Iterator[Callable[[], CallInsight | None]]:
    """The analysis step, answered by the callable the block gets: started now in another process when the runner
    can (the CLI's: the second core is idle while this process combines, then writes the WAVs), else run when
    asked, as its own step (a flow's task). The other process is gone when the block ends, also on a failure."""
    if not job.analysis:
        yield lambda: None
        return
    start = getattr(runner, "beside", None)
    if start is None:
        yield lambda: runner.run(analyze, job, sdp_plan, plan, decrypted, txn)
        return
    import rtpcore.analysis.insight  # noqa: F401  # loaded once, here: the other process gets them with its memory
    import rtpcore.analysis.report_html  # noqa: F401
    from rtpcore.analysis.stats import group_streams

    groups = group_streams(decrypted.media.rtp) if decrypted.media is not None else None
    with start(analyze_apart, job, sdp_plan, plan, decrypted, txn, groups) as running:
        yield lambda: _joined(running, groups, txn)


def _joined(running: Beside[tuple[CallInsight | None, bool]], groups: Mapping[StreamId, Sequence[RtpPacket]] | None,
            txn: ResultTransaction) -> CallInsight | None:
    """This process writes the WAVs while the other one analyses; the report and its audio go in together or not
    at all. If that process died (killed, out of memory), the outputs go out without the analysis."""
    from rtpcore.analysis.report_html import place_call_audio, remove_call_report, write_call_audio

    combined = txn.staged.combined
    staged: Path | None = None
    failed: Exception | None = None
    if groups is not None:   # else nothing was collected: the other process writes the WAVs with its report
        try:
            staged, _wavs = write_call_audio(combined, txn.staged.media_decrypted, groups)
        except (ValueError, InputError, OSError) as exc:   # the other process finds the same, or says it
            failed = exc
    try:
        insight, reported = running.result()
    except BesideError as exc:
        for part in combined.glob(".*.part"):   # what either process had begun to write
            if part.is_dir():
                shutil.rmtree(part, ignore_errors=True)
            else:
                part.unlink(missing_ok=True)
        log.warning("call analysis of %s skipped: %s; `rtphelper analyze` and `rtphelper report` on the committed "
                    "results give it", MEDIA_DECRYPTED, exc)
        return None
    if groups is None:
        return insight
    if reported and staged is not None:
        place_call_audio(staged, combined)
        return insight
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)
    if reported:
        remove_call_report(combined)
        log.warning("call report (report.html) not written: %s", failed)
    return insight


def commit(txn: ResultTransaction) -> None:
    """Swap the complete results in; the previous ones are replaced as a whole only now."""
    txns.commit(txn)


def abort(txn: ResultTransaction) -> None:
    """A failed or interrupted run leaves the previous results as they were and no final names of its own."""
    txns.abort(txn)


def report(
    plan: LegPlan, results: Sequence[FileResult], decrypted: DecryptResult, txn: ResultTransaction,
    insight: CallInsight | None = None,
) -> CorrelationReport:
    """The report with the committed names (never the staging folder's), and the analysis when it ran."""
    from rtpcore.analysis.insight import ANALYSIS_FILE
    from rtpcore.report import build_report

    final_outputs = tuple(txn.rebase(p) for p in decrypted.outputs)
    from rtpcore.analysis.report_md import REPORT_HTML

    analysis_file = txn.final.combined / ANALYSIS_FILE if insight is not None else None
    report_file = txn.final.combined / REPORT_HTML
    return build_report(plan, results, replace(decrypted, outputs=final_outputs), txn.final.finals,
                        insight=insight, analysis_file=analysis_file,
                        report_file=report_file if report_file.is_file() else None)


def publish(job: CorrelationJob, txn: ResultTransaction) -> PublishedOutputs | None:
    """Media from an S3 session gets its outputs back there (presigned URLs); errors are a warning, not a failure."""
    source = job.s3_source or job.publish_to
    if not job.publish or source is None:
        log.debug(NO_PUBLISH_NOTE)
        return None
    from rtpcore.storage.download import publish_outputs

    expires = job.settings.link_expires_seconds if job.settings is not None else DEFAULT_LINK_EXPIRES_S
    return publish_outputs(source, txn.final.root, job.settings, expires=expires)  # RTPHELPER_LINK_EXPIRES_SECONDS


# -- one sequence, two runners ---------------------------------------------------------------------


class StepRunner(Protocol):
    """How steps run: in-process (CLI) or as Prefect tasks (flows); `map` runs one step over many items."""

    def run(self, step: Callable[..., T], *args: Any) -> T: ...

    def map(self, step: Callable[..., T], items: Sequence[Any], *args: Any) -> list[T]: ...


@dataclass(frozen=True, slots=True)
class InProcessRunner:
    """The CLI's runner: steps are calls; the mapped step runs in parallel processes, one per core."""

    workers: int | None = None

    def run(self, step: Callable[..., T], *args: Any) -> T:
        return step(*args)

    def map(self, step: Callable[..., T], items: Sequence[Any], *args: Any) -> list[T]:
        return map_in_processes(step, items, *args, workers=self.workers, meanwhile=_load_later_steps)

    def beside(self, step: Callable[..., T], *args: Any) -> AbstractContextManager[Beside[T]]:
        """The step started in another process, while this one goes on with the next steps."""
        return beside(step, *args)


def _load_later_steps() -> None:
    """The decrypt and analysis steps' modules, loaded while the last filter worker runs (a core is free then)."""
    import rtpcore.analysis.insight, rtpcore.analysis.report_html, rtpcore.media.decrypt  # noqa: F401, E401


STEPS: tuple[Callable[..., Any], ...] = (
    plan_call, open_results, list_media, select_media, filter_one, learn, merge_raw, decrypt, combine, analyze,
    commit, report,
    publish,
)
"""Every step, in order; the flow's tasks are generated from this list."""


def run_steps(job: CorrelationJob, runner: StepRunner) -> CorrelationOutcome:
    """The correlation, in order; on any failure or interrupt the staging folder goes and old results stay."""
    plan = sdp_plan = runner.run(plan_call, job)
    txn = runner.run(open_results, job)
    try:
        sources = runner.run(list_media, job, txn)
        selection = runner.run(select_media, job, plan, txn, sources)
        results = runner.map(filter_one, selection.reads, job, plan, txn)
        plan, results = runner.run(learn, job, plan, results)
        with ExitStack() as merging:
            try:
                merging.enter_context(raw_merge_beside(runner, job, plan, results, txn))
            except NoMediaMatchError as exc:  # a wrong skip must show where the user looks: in this error
                raise NoMediaMatchError("\n".join([str(exc), *selection.lines()])) from None
            decrypted = runner.run(decrypt, plan, results, txn, job.analysis)
        with analysis_beside(runner, job, sdp_plan, plan, decrypted, txn) as analysis:
            runner.run(combine, job, txn)
            insight = analysis()
        runner.run(commit, txn)
    except OSError as exc:
        abort(txn)
        if exc.errno == errno.ENOSPC:
            raise OutputSpaceError(
                f"{job.out}: no space left on the device while writing {Path(exc.filename or txn.staged.root).name}; "
                "free some space or choose another --out (the previous results are untouched)") from exc
        raise
    except BaseException:
        abort(txn)  # directly, not as a task: a cancelled flow must still clean up
        raise
    outcome_report = replace(runner.run(report, plan, results, decrypted, txn, insight), media_read=selection)
    return CorrelationOutcome(outcome_report, runner.run(publish, job, txn))


def correlate(
    sip: Path,
    direction: str,
    media: Sequence[Path | str],
    out: Path,
    *,
    call_id: str | None = None,
    number: str | None = None,
    min_packets: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    settings: Settings | None = None,
) -> CorrelationReport:
    """The whole job in-process (library callers and tests); the CLI uses run_steps for the publishing too."""
    job = make_job(sip, direction, media, out, call_id=call_id, number=number, min_packets=min_packets,
                   overwrite=overwrite, workers=workers, settings=settings)
    job = replace(job, publish=False)
    return run_steps(job, InProcessRunner(workers)).report
