"""Flow `process-call`: import media from a local folder into a new session, then correlate the call."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from tasks.runtime import begin_flow_run  # first: process defaults before prefect loads
from flows.correlate_call import Direction, run_correlation
from prefect import flow, get_run_logger
from prefect.states import State
from tasks import session as s


@flow(name="process-call", log_prints=True)
def process_call(
    sip_pcap: str,
    direction: Direction,
    media_directory: str,
    output_folder: str | None = None,
    capture_root: str | None = None,
    call_id: str | None = None,
    number: str | None = None,
    min_packets: Annotated[int | None, Field(ge=0)] = None,
) -> dict[str, Any] | State:
    """Create <root>/<folder>/<timestamp>/{raw,uploads,decrypted,combined}, import, and run the correlation.

    Args:
        sip_pcap: Path of the SIP pcap/pcapng of the call.
        direction: inbound — the carrier sent the first INVITE; outbound — the core did.
        media_directory: Local folder (or file) with the raw media captures, or an s3:// session to import.
        output_folder: Optional folder under the capture root for the session (e.g. a ticket number).
        capture_root: Root of the sessions; default RTPHELPER_CAPTURE_ROOT, hosts.yaml settings, ~/Downloads.
        call_id: Select the call by Call-ID when the SIP pcap holds several calls.
        number: Or select it by caller/callee number.
        min_packets: Keep a leg's packets from a raw file only above this count (default RTPHELPER_MIN_LEG_PACKETS).
    """
    begin_flow_run()
    paths = s.create_session(capture_root, output_folder)
    sip = s.import_sip(paths, Path(sip_pcap))
    s.import_media(paths, [media_directory])
    get_run_logger().info("session %s", paths.root)
    return run_correlation(sip, direction, [str(paths.raw)], paths.root, call_id, number, min_packets, False,
                           extra={"session": str(paths.root)})
