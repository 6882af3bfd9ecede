"""Flow `correlate-call`: SIP pcap + direction + raw media → media_raw, media_decrypted, SIP_plus_media_decrypted."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from tasks.runtime import install_redaction  # first: process defaults before prefect loads
from prefect import flow, unmapped
from tasks import correlation as t

Direction = Literal["inbound", "outbound"]


def run_correlation(
    sip: Path, direction: str, media: list[str], out: Path, call_id: str | None, number: str | None,
    min_packets: int, overwrite: bool,
) -> dict:
    """The DAG, shared by correlate-call and process-call: plan → filter (mapped) → learn peers → merge → decrypt → combine."""
    plan = t.resolve_legs(sip, direction, call_id, number)
    paths = t.prepare_outputs(out, overwrite)
    sources = t.list_media(media, paths.root)
    try:
        results = t.filter_raw_file.map(unmapped(plan), sources, unmapped(paths), unmapped(min_packets)).result()
        plan, results = t.learn(plan, results, paths, min_packets)
        t.merge_raw(plan, results, paths)
        decrypted = t.decrypt(plan, results, paths)
        t.combine(sip, paths)
    except BaseException:
        t.rollback(paths)
        raise
    report = t.publish_report(plan, results, decrypted, paths, media)
    return report.to_json()


@flow(name="correlate-call", log_prints=True)
def correlate_call(
    sip_pcap: str,
    direction: Direction,
    media: list[str],
    output_folder: str,
    call_id: str | None = None,
    number: str | None = None,
    min_packets: Annotated[int, Field(ge=0)] = 10,
    overwrite: bool = False,
) -> dict:
    """Find the call's media legs, filter the raw captures once per file, decrypt SRTP and merge the outputs.

    Args:
        sip_pcap: Path of the SIP pcap/pcapng of the call.
        direction: inbound — the carrier sent the first INVITE; outbound — the core did.
        media: Raw media captures, or folders of them (rolling chunks of one or more media hosts), or an s3:// session.
        output_folder: Where decrypted/ and combined/ are written.
        call_id: Select the call by Call-ID when the SIP pcap holds several calls.
        number: Or select it by caller/callee number (+44…, 0044… and 44… match).
        min_packets: Keep a leg's packets from a raw file only above this count (the seed kept > 10).
        overwrite: Replace earlier outputs in the output folder.
    """
    install_redaction()
    return run_correlation(Path(sip_pcap), direction, media, Path(output_folder), call_id, number, min_packets, overwrite)
