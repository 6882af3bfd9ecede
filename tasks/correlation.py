"""The correlation core's steps as Prefect tasks (generated from rtpcore.pipeline.STEPS), and the flow's artifacts."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import tasks.runtime  # noqa: F401  (process defaults before prefect loads)
from prefect import task, unmapped
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from rtpcore import pipeline
from rtpcore.desk.links import OutputLink, artifact_key, local_links
from rtpcore.pipeline import CorrelationOutcome
from tasks import distributed

T = TypeVar("T")

# No task tags: a tagged task run first negotiates tag concurrency slots with the server, which
# measured ~2 s per task here (prefect.concurrency acquire_concurrency_slots_with_lease).
# The plan holds SDES keys: never cache or persist it, and never hash it into a cache key.
TASK_NAMES: dict[Callable[..., Any], str] = {
    pipeline.plan_call: "resolve-legs",
    pipeline.open_results: "prepare-outputs",
    pipeline.list_media: "list-media",
    pipeline.select_media: "select-media",
    pipeline.filter_one: "filter-raw-file",
    pipeline.learn: "learn-peers",
    pipeline.merge_raw: "merge-raw",
    pipeline.decrypt: "decrypt-media",
    pipeline.combine: "combine-sip-and-media",
    pipeline.analyze: "analyze-call",
    pipeline.commit: "commit-results",
    pipeline.report: "build-report",
    pipeline.publish: "publish-outputs",
}
# Steps that read from the network or a flaky disk get a retry (attempts, delay s); the others fail at once.
_RETRIES: dict[Callable[..., Any], tuple[int, int]] = {
    pipeline.list_media: (1, 10),
    pipeline.select_media: (1, 10),
    pipeline.filter_one: (1, 2),
}


def _task_of(step: Callable[..., Any]) -> Any:
    """The step as a private task: never cached, never persisted (the plan carries SDES keys)."""
    retries, delay = _RETRIES.get(step, (0, 0))
    return task(name=TASK_NAMES[step], cache_policy=NO_CACHE, persist_result=False, retries=retries,
                retry_delay_seconds=delay)(step)


TASKS: dict[Callable[..., Any], Any] = {step: _task_of(step) for step in pipeline.STEPS}


class PrefectRunner:
    """Each step a task run; the mapped step (filter) one task run per raw file."""

    def run(self, step: Callable[..., T], *args: Any) -> T:
        # quote(): Prefect walks every argument of a task run looking for upstream futures; the decrypt result and the
        # analysis carry one tuple per packet, and that walk cost 1.7-3.6 s between tasks on the bench call.
        return TASKS[step](*(quote(a) for a in args))

    def map(self, step: Callable[..., T], items: Sequence[Any], *args: Any) -> list[T]:
        placement = distributed.choose_placement(items, distributed.settings_of(args))  # issue 12: large work → Dask
        distributed.log.info("%s: %s", TASK_NAMES[step], placement.reason)
        if placement.address is not None:
            return distributed.map_on_cluster(TASKS[step], items, args, placement.address)
        futures = TASKS[step].map(list(items), *(unmapped(a) for a in args))
        return list(futures.result())


@task(name="publish-artifacts", cache_policy=NO_CACHE, persist_result=False)
def publish_artifacts(outcome: CorrelationOutcome) -> None:
    """The report as markdown + table, links to the local outputs and (when uploaded) their presigned URLs."""
    report = outcome.report
    plan = report.plan
    session = Path(report.outputs[0]).resolve().parent.parent if report.outputs else Path(plan.call_id)
    slug = artifact_key("", session).lstrip("-")  # per session: concurrent correlations never share a key
    summary = report.markdown() + (f"\nS3 session: `{outcome.session_url}`\n" if outcome.session_url else "")
    # Backticks: the UI turns a bare Call-ID (user@host) into a mailto: link.
    create_markdown_artifact(summary, key=f"correlation-{slug}", description=f"Correlation of call `{plan.call_id}`")
    create_table_artifact(report.stream_rows(), key=f"streams-{slug}", description="Streams of the call")
    if report.insight is not None:  # issue 11: the verdicts and the per-stream quality figures
        create_table_artifact(report.verdict_rows(), key=f"verdicts-{slug}", description="Verdicts per leg and direction")
        create_table_artifact(report.quality_rows(), key=f"stream-quality-{slug}", description="Stream statistics and MOS")
    extra = [report.report_file] if report.report_file is not None else []   # the call report: ladder, timeline, audio
    for link in output_links([Path(p) for p in report.outputs] + extra):
        where = "served by rtphelper serve" if link.kind == "serve" else "local file"
        create_link_artifact(link.url, link_text=Path(link.name).name, description=f"{Path(link.name).name} ({where})")
    published = outcome.published
    if published is None:
        return
    for relative, url in published.urls.items():
        if relative.startswith("combined/") and relative.count("/") == 1:  # the WAVs: players in report.html
            create_link_artifact(url, link_text=Path(relative).name, description=f"{Path(relative).name} (S3, presigned)")
    if published.error:
        create_markdown_artifact(f"# Outputs not uploaded\n\n{published.error}\n\nThe local outputs are complete; "
                                 "rerun the correlation when S3 answers to upload them.",
                                 key=f"upload-warning-{slug}", description="Output upload to S3 failed")


def output_links(files: list[Path]) -> list[OutputLink]:
    """Serve links to local outputs when RTPHELPER_SERVE_URL is set (else file://), so a browser can open them."""
    from rtpcore.settings import load_settings
    from tasks.session import default_capture_root

    return local_links(files, default_capture_root(), load_settings())
