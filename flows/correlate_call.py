"""Flow `correlate-call`: SIP pcap + direction + raw media → media_raw, media_decrypted, SIP_plus_media_decrypted."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from tasks.runtime import begin_flow_run  # first: process defaults before prefect loads
from prefect import flow
from prefect.states import Completed, State
from rtpcore.pipeline import make_job, run_steps
from tasks import correlation as t

Direction = Literal["inbound", "outbound"]


def run_correlation(
    sip: Path, direction: str, media: list[str], out: Path, call_id: str | None, number: str | None,
    min_packets: int | None, overwrite: bool, *, extra: dict[str, Any] | None = None,
) -> dict[str, Any] | State:
    """The correlation core through Prefect tasks; Completed with a warning message when outputs were not uploaded."""
    job = make_job(sip, direction, media, out, call_id=call_id, number=number, min_packets=min_packets,
                   overwrite=overwrite)
    outcome = run_steps(job, t.PrefectRunner())
    t.publish_artifacts(outcome)
    doc = {**(extra or {}), **outcome.to_json()}
    if outcome.upload_warning:
        return Completed(message=f"outputs are local only: {outcome.upload_warning}", data=doc)
    return doc


@flow(name="correlate-call", log_prints=True)
def correlate_call(
    sip_pcap: str,
    direction: Direction,
    media: list[str],
    output_folder: str,
    call_id: str | None = None,
    number: str | None = None,
    min_packets: Annotated[int | None, Field(ge=0)] = None,
    overwrite: bool = False,
) -> dict[str, Any] | State:
    """Find the call's media legs, filter the raw captures once per file, decrypt SRTP and merge the outputs.

    Args:
        sip_pcap: Path of the SIP pcap/pcapng of the call.
        direction: inbound — the carrier sent the first INVITE; outbound — the core did.
        media: Raw media captures, or folders of them (rolling chunks of one or more media hosts), or an s3:// session.
        output_folder: Where decrypted/ and combined/ are written.
        call_id: Select the call by Call-ID when the SIP pcap holds several calls.
        number: Or select it by caller/callee number (+44…, 0044… and 44… match).
        min_packets: Keep a leg's packets from a raw file only above this count (default RTPHELPER_MIN_LEG_PACKETS, 10).
        overwrite: Replace earlier outputs in the output folder (only once the new ones are complete).
    """
    begin_flow_run()
    return run_correlation(Path(sip_pcap), direction, media, Path(output_folder), call_id, number, min_packets, overwrite)
