"""Tasks that create, resolve and name sessions and bring files (media, the SIP pcap) into them."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tasks.runtime  # noqa: F401  (process defaults before prefect loads)
from prefect import task
from prefect.cache_policies import NO_CACHE

from rtpcore import session
from rtpcore.media.demux import media_files
from rtpcore.pipeline import SessionPaths
from rtpcore.session import SessionRef
from rtpcore.storage.download import is_s3_url, materialize_media

DEFAULT_JOB_TIMEOUT_S = 3600


@task(name="create-session", cache_policy=NO_CACHE)
def create_session(capture_root: str | None, folder: str | None) -> SessionPaths:
    return session.new_session(Path(capture_root) if capture_root else default_capture_root(), folder)


def default_capture_root() -> Path:
    """RTPHELPER_CAPTURE_ROOT, else hosts.yaml settings.default_capture_root, else ~/Downloads (the seed's rule)."""
    from rtpcore.desk.sessions import configured_capture_root
    from rtpcore.settings import load_settings

    return configured_capture_root(load_settings())


def job_timeout() -> int:
    """RTPHELPER_CORRELATION_JOB_TIMEOUT_SECONDS for the correlation flows' timeout (the default when unreadable)."""
    from rtpcore.errors import ConfigError
    from rtpcore.settings import load_settings

    try:
        return load_settings().correlation_job_timeout_seconds
    except ConfigError:  # a bad runtime.env must not break importing the flow; the run reports it
        return DEFAULT_JOB_TIMEOUT_S


@task(name="fetch-sip", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=5)
def fetch_sip(source: str, uploads: Path) -> Path:
    """A worker path, s3:// or https:// SIP pcap as a file in uploads/."""
    from rtpcore.settings import load_settings
    from rtpcore.storage.fetch import fetch_sip as fetch

    return fetch(source, uploads, load_settings())


@task(name="resolve-session", cache_policy=NO_CACHE, persist_result=False)
def resolve_session(spec: str) -> SessionRef:
    """A session from its capture run's name, its folder, or its s3:// URL (raw/ found by itself)."""
    from prefect.settings import PREFECT_API_URL

    from rtpcore.desk.prefect_api import PrefectApi
    from rtpcore.desk.sessions import resolve_session as resolve

    url = PREFECT_API_URL.value() or ""  # the run's own server: a capture run name resolves through it
    if not url:
        return resolve(spec, default_capture_root())
    with PrefectApi(url) as api:
        return resolve(spec, default_capture_root(), api)


def tag_run(folder: str) -> None:
    """Tag the running flow run with the ticket folder (find every run of a ticket in the UI by its tag)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    from uuid import UUID

    current_id = flow_run.get_id()
    if not folder or not current_id:
        return
    run_id = UUID(current_id)
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id)
        if folder not in current.tags:
            client.update_flow_run(run_id, tags=[*current.tags, folder])


@task(name="import-sip", cache_policy=NO_CACHE)
def import_sip(paths: SessionPaths, sip: Path) -> Path:
    return session.import_sip(paths, sip)


@task(name="import-media", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def import_media(paths: SessionPaths, sources: Sequence[str]) -> list[Path]:
    """Local files/folders (a session root's raw/ found by itself) are linked or copied into raw/; s3:// downloaded."""
    local = [session.find_raw(Path(s)) for s in sources if not is_s3_url(s)]
    remote = [s for s in sources if is_s3_url(s)]
    imported = session.import_media(paths, media_files(local)) if local else []
    if remote:
        imported += materialize_media(remote, paths.root)  # strings: Path() would turn s3:// into s3:/
    return imported


def discard_incoming(sip_pcap: str) -> None:
    """After a successful run: the serve upload it used is in the session's uploads/ now; drop the incoming copy."""
    from rtpcore.desk.links import discard_incoming as discard

    discard(sip_pcap, default_capture_root())
