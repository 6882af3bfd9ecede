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


@task(name="import-media", cache_policy=NO_CACHE)
def import_media(paths: SessionPaths, sources: Sequence[str]) -> list[Path]:
    return session.import_media(paths, media_files([Path(p) for p in sources]))
