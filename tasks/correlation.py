"""Tasks of the correlate-call flow: one per pipeline step, the filter step mapped per raw file."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tasks.runtime  # noqa: F401  (process defaults before prefect loads)
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from rtpcore import pipeline
from rtpcore.media.decrypt import DecryptResult
from rtpcore.media.demux import FileResult
from rtpcore.plan import LegPlan
from rtpcore.report import CorrelationReport, build_report

# No task tags: a tagged task run first negotiates tag concurrency slots with the server, which
# measured ~2 s per task here (prefect.concurrency acquire_concurrency_slots_with_lease).
# The plan holds SDES keys: never cache or persist it, and never hash it into a cache key.
_PRIVATE = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="resolve-legs", **_PRIVATE)
def resolve_legs(sip: Path, direction: str, call_id: str | None, number: str | None) -> LegPlan:
    return pipeline.plan_call(sip, direction, call_id=call_id, number=number)


@task(name="list-media", retries=1, retry_delay_seconds=10, **_PRIVATE)
def list_media(media: Sequence[str], out: Path) -> list[Path]:
    """Local files/folders as given; an s3:// session's raw/ is downloaded (verified) into <out>/raw/ first."""
    from rtpcore.media.demux import media_files
    from rtpcore.storage.download import is_s3_url, materialize_media

    if any(is_s3_url(m) for m in media):
        return media_files(materialize_media(list(media), out))
    return media_files([Path(m) for m in media])


@task(name="prepare-outputs", **_PRIVATE)
def prepare_outputs(out: Path, overwrite: bool) -> pipeline.SessionPaths:
    return pipeline.prepare_outputs(out, overwrite=overwrite)


@task(name="filter-raw-file", retries=1, retry_delay_seconds=2, **_PRIVATE)
def filter_raw_file(plan: LegPlan, source: Path, paths: pipeline.SessionPaths, min_packets: int) -> FileResult:
    return pipeline.filter_one(plan, source, paths, min_packets=min_packets)


@task(name="learn-peers", **_PRIVATE)
def learn(
    plan: LegPlan, results: Sequence[FileResult], paths: pipeline.SessionPaths, min_packets: int
) -> tuple[LegPlan, list[FileResult]]:
    return pipeline.learn(plan, results, paths, min_packets=min_packets)


@task(name="merge-raw", **_PRIVATE)
def merge_raw(plan: LegPlan, results: Sequence[FileResult], paths: pipeline.SessionPaths) -> int:
    return pipeline.merge_raw(plan, results, paths)


@task(name="decrypt-media", **_PRIVATE)
def decrypt(plan: LegPlan, results: Sequence[FileResult], paths: pipeline.SessionPaths) -> DecryptResult:
    return pipeline.decrypt(plan, results, paths)


@task(name="combine-sip-and-media", **_PRIVATE)
def combine(sip: Path, paths: pipeline.SessionPaths) -> int:
    return pipeline.combine(sip, paths)


@task(name="publish-report", **_PRIVATE)
def publish_report(
    plan: LegPlan, results: Sequence[FileResult], decrypted: DecryptResult, paths: pipeline.SessionPaths,
    media: Sequence[str] = (),
) -> CorrelationReport:
    report = build_report(plan, results, decrypted, paths.finals)
    slug = "".join(ch if ch.isalnum() else "-" for ch in plan.call_id.lower())[:40].strip("-")
    # Backticks: the UI turns a bare Call-ID (user@host) into a mailto: link.
    create_markdown_artifact(report.markdown(), key=f"correlation-{slug}", description=f"Correlation of call `{plan.call_id}`")
    create_table_artifact(report.stream_rows(), key=f"streams-{slug}", description="Streams of the call")
    for path in paths.finals:
        create_link_artifact(path.resolve().as_uri(), link_text=path.name, description=f"{path.name} (local file)")
    from rtpcore.storage.download import is_s3_url

    remote = [m for m in media if is_s3_url(m)]
    if remote:
        _publish_to_s3(remote[0], paths)
    return report


def _publish_to_s3(source: str, paths: pipeline.SessionPaths) -> None:
    """Media that came from an S3 session gets its outputs back in that session, linked by presigned URLs."""
    from rtpcore.settings import load_settings
    from rtpcore.storage.download import publish_outputs

    settings = load_settings()
    if settings.storage_mode != "s3":
        return
    published = publish_outputs(source, paths.root, settings)
    if published.error:
        get_run_logger().warning("outputs not uploaded to S3: %s", published.error)
    for relative, url in published.urls.items():
        if relative.startswith("combined/"):
            create_link_artifact(url, link_text=Path(relative).name, description=f"{Path(relative).name} (S3, presigned)")


def rollback(paths: pipeline.SessionPaths) -> None:
    """A failed run leaves nothing under the final output names."""
    paths.discard_finals()
