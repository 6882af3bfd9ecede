"""Flow `process-call`: import media from a local folder into a new session, then correlate the call."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from tasks.runtime import install_redaction  # first: process defaults before prefect loads
from flows.correlate_call import Direction, run_correlation
from prefect import flow, get_run_logger
from tasks import session as s


@flow(name="process-call", log_prints=True)
def process_call(
    sip_pcap: Annotated[str, Field(description="Path of the SIP pcap/pcapng of the call")],
    direction: Annotated[Direction, Field(description="inbound: the carrier sent the first INVITE; outbound: the core did")],
    media_directory: Annotated[str, Field(description="Local folder (or file) with the raw media captures to import")],
    output_folder: Annotated[str | None, Field(description="Optional folder under the capture root for the session")] = None,
    capture_root: Annotated[str | None, Field(description="Default: RTPHELPER_CAPTURE_ROOT, hosts.yaml settings, ~/Downloads")] = None,
    call_id: Annotated[str | None, Field(description="Select the call by Call-ID")] = None,
    number: Annotated[str | None, Field(description="…or by caller/callee number")] = None,
    min_packets: Annotated[int, Field(ge=0, description="Keep a leg's packets from a file only above this count")] = 10,
) -> dict:
    """Create <root>/<folder>/<timestamp>/{raw,uploads,decrypted,combined}, import, and run the correlation."""
    install_redaction()
    paths = s.create_session(capture_root, output_folder)
    sip = s.import_sip(paths, Path(sip_pcap))
    s.import_media(paths, [media_directory])
    get_run_logger().info("session %s", paths.root)
    result = run_correlation(sip, direction, [str(paths.raw)], paths.root, call_id, number, min_packets, False)
    return {"session": str(paths.root), **result}
