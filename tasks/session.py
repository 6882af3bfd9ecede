"""Tasks that create sessions and import files into them."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tasks.runtime  # noqa: F401  (process defaults before prefect loads)
from prefect import task
from prefect.cache_policies import NO_CACHE

from rtpcore import session
from rtpcore.media.demux import media_files
from rtpcore.pipeline import SessionPaths
from rtpcore.storage.download import is_s3_url, materialize_media


@task(name="create-session", cache_policy=NO_CACHE)
def create_session(capture_root: str | None, folder: str | None) -> SessionPaths:
    return session.new_session(Path(capture_root) if capture_root else default_capture_root(), folder)


def default_capture_root() -> Path:
    """RTPHELPER_CAPTURE_ROOT, else hosts.yaml settings.default_capture_root, else ~/Downloads (the seed's rule)."""
    from rtpcore.hosts import capture_root, load_hosts
    from rtpcore.settings import load_settings

    settings = load_settings()
    hosts = load_hosts(settings.hosts_file) if Path(settings.hosts_file).is_file() else None
    return capture_root(settings, hosts)


@task(name="import-sip", cache_policy=NO_CACHE)
def import_sip(paths: SessionPaths, sip: Path) -> Path:
    return session.import_sip(paths, sip)


@task(name="import-media", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def import_media(paths: SessionPaths, sources: Sequence[str]) -> list[Path]:
    """Local files/folders are linked or copied into raw/; an s3:// session's raw/ is downloaded there."""
    local = [s for s in sources if not is_s3_url(s)]
    remote = [s for s in sources if is_s3_url(s)]
    imported = session.import_media(paths, media_files([Path(p) for p in local])) if local else []
    if remote:
        imported += materialize_media(remote, paths.root)  # strings: Path() would turn s3:// into s3:/
    return imported
