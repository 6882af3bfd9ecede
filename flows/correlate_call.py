"""Flow `correlate-call`: SIP pcap + direction + raw media → media_raw, media_decrypted, SIP_plus_media_decrypted."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from tasks.runtime import begin_flow_run  # first: process defaults before prefect loads
from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.utilities.annotations import quote
from rtpcore.desk.sessions import folder_hint, run_name
from rtpcore.pipeline import make_job, run_steps
from rtpcore.session import discard_if_unused
from rtpcore.results import SessionPaths
from rtpcore.storage.download import is_s3_url
from rtpcore.storage.fetch import is_http_url
from tasks import correlation as t
from tasks import session as s

Direction = Literal["inbound", "outbound"]
RUN_PREFIX = "correlate"


def correlation_run_name() -> str:
    """`correlate-{ticket folder}` from the run's parameters (session, output_folder)."""
    params = flow_run.parameters or {}
    return run_name(RUN_PREFIX, folder_hint(str(params.get("session") or ""),
                                            str(params.get("output_folder") or "")))


def run_correlation(
    sip: Path | str, direction: str, media: list[str], out: Path, call_id: str | None, number: str | None,
    min_packets: int | None, overwrite: bool, *, extra: dict[str, Any] | None = None, into_uploads: bool = False,
    publish_to: str | None = None,
) -> dict[str, Any] | State:
    """The core as Prefect tasks; a remote SIP pcap (any, with into_uploads) is first brought into <out>/uploads/;
    publish_to: the S3 session the capture uploaded to (its outputs go there too)."""
    if into_uploads or (isinstance(sip, str) and (is_s3_url(sip) or is_http_url(sip))):
        sip = s.fetch_sip(str(sip), SessionPaths(Path(out)).uploads)
    job = make_job(Path(sip), direction, media, out, call_id=call_id or None, number=number or None,
                   min_packets=min_packets, overwrite=overwrite, publish_to=publish_to)
    outcome = run_steps(job, t.PrefectRunner())
    t.publish_artifacts(quote(outcome))  # type: ignore[call-overload]  # unwrapped before the call; not walked
    # for futures (it holds the packets: that walk cost seconds)
    doc = {**(extra or {}), **outcome.to_json()}
    if outcome.upload_warning:
        return Completed(message=f"outputs are local only: {outcome.upload_warning}", data=doc)
    return doc


@flow(name="correlate-call", log_prints=True, flow_run_name=correlation_run_name, timeout_seconds=s.job_timeout())
def correlate_call(
    sip_pcap: str,
    direction: Direction,
    media: list[str] = [],  # noqa: B006 - read only; a list default renders as an empty list in the form
    output_folder: str = "",
    session: str = "",
    call_id: str = "",
    number: str = "",
    min_packets: Annotated[int, Field(ge=0)] = 0,
    overwrite: bool = False,
) -> dict[str, Any] | State:
    """Find the call's media legs, filter the raw captures once per file, decrypt SRTP and merge the outputs.

    Args:
        sip_pcap: The SIP pcap/pcapng of the call: a path on the worker, an s3://bucket/key or an https:// URL.
        direction: inbound — the carrier sent the first INVITE; outbound — the core did.
        media: Raw media captures, or folders of them (rolling chunks of one or more media hosts; a session folder:
            its raw/), or an s3:// session; empty when session names the media.
        output_folder: Where decrypted/ and combined/ are written; empty with a session: the session folder.
        session: A capture session by its run name, its folder or its s3:// URL (empty: use media).
        call_id: Select the call by Call-ID when the SIP pcap holds several calls (empty: not set).
        number: Or select it by caller/callee number (+44…, 0044… and 44… match) (empty: not set).
        min_packets: Keep a leg's packets from a raw file only above this count (0: RTPHELPER_MIN_LEG_PACKETS, 10).
        overwrite: Replace earlier outputs in the output folder (only once the new ones are complete).
    """
    begin_flow_run()
    sources = list(media)   # a session folder given as media: list_media reads its raw/
    out = Path(output_folder) if output_folder else None
    if session:
        ref = s.resolve_session(session)
        sources = [ref.media]
        out = out or ref.local_root(s.default_capture_root())
    if out is None:
        from rtpcore.errors import InputError

        raise InputError("output_folder is empty: give a folder for the outputs, or name a session")
    s.tag_run(folder_hint(session, output_folder))
    created = not out.exists()
    try:
        result = run_correlation(sip_pcap, direction, sources, out, call_id, number, min_packets or None, overwrite,
                                 extra={"session": str(out)}, into_uploads=bool(session))
    except BaseException:
        if created:
            discard_if_unused(SessionPaths(out))
        raise
    if session:
        s.discard_incoming(sip_pcap)
    return result
