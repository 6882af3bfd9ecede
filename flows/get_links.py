"""Flow `get-links`: fresh links to a session's outputs (presigned S3, or `rtphelper serve`) as run artifacts."""
from __future__ import annotations

from typing import Any

from tasks.runtime import begin_flow_run  # first: process defaults before prefect loads
from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import flow_run

from rtpcore.desk.links import artifact_key, links_markdown, session_links
from rtpcore.desk.sessions import folder_hint, run_name
from tasks import session as s


def links_run_name() -> str:
    return run_name("links", folder_hint(str((flow_run.parameters or {}).get("session") or "")))


@flow(name="get-links", log_prints=True, flow_run_name=links_run_name)
def get_links(session: str) -> dict[str, Any]:
    """Regenerate the links to a session's outputs (valid RTPHELPER_LINK_EXPIRES_SECONDS) and attach them to this run.

    Args:
        session: The session: its capture run name, its folder on the worker, or its s3:// URL.
    """
    from rtpcore.settings import load_settings

    begin_flow_run()
    settings = load_settings()
    ref = s.resolve_session(session)
    links = session_links(ref.root, ref.url, s.default_capture_root(), settings)
    shown = ref.url or str(ref.root)
    for link in links:
        create_link_artifact(link.url, link_text=link.name, description=f"{link.name} ({link.kind} link)")
    create_markdown_artifact(links_markdown(links, shown, settings.link_expires_seconds),
                             key=artifact_key("links", shown), description=f"Output links of {shown}")
    get_run_logger().info("%d output link(s) for %s", len(links), shown)  # the URLs carry tokens: not logged
    return {"session": shown, "links": {link.name: link.url for link in links}}
