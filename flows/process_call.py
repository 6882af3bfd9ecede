"""Flow `process-call`: import media from a local folder into a new session, then correlate the call."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from tasks.runtime import begin_flow_run  # first: process defaults before prefect loads
from flows.correlate_call import Direction, run_correlation
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State
from rtpcore.desk.sessions import run_name
from rtpcore.errors import InputError
from rtpcore.session import discard_if_unused
from rtpcore.storage.download import is_s3_url
from rtpcore.storage.fetch import is_http_url
from tasks import session as s

RUN_PREFIX = "correlate"


def process_run_name() -> str:
    """`correlate-{output folder}`: a process-call is the correlation of a ticket's call too."""
    return run_name(RUN_PREFIX, str((flow_run.parameters or {}).get("output_folder") or ""))


def check_inputs(sip_pcap: str, media_directory: str) -> None:
    """Refuse missing local inputs before a session folder exists (no orphan folder per failed try)."""
    if not sip_pcap.strip():
        raise InputError("sip_pcap is empty: give a worker path, an s3:// or an https:// URL of the SIP pcap")
    if not (is_s3_url(sip_pcap) or is_http_url(sip_pcap)) and not Path(sip_pcap).expanduser().is_file():
        raise InputError(f"{sip_pcap}: SIP pcap not found on the worker; give a path the worker can read, an s3:// "
                         "or https:// URL, or upload it with `rtphelper submit`")
    if not is_s3_url(media_directory) and not Path(media_directory).expanduser().exists():
        raise InputError(f"{media_directory}: media folder not found on the worker; give a session folder, a folder "
                         "of raw captures or an s3:// session URL")


@flow(name="process-call", log_prints=True, flow_run_name=process_run_name, timeout_seconds=s.job_timeout())
def process_call(
    sip_pcap: str,
    direction: Direction,
    media_directory: str,
    output_folder: str = "",
    capture_root: str = "",
    call_id: str = "",
    number: str = "",
    min_packets: Annotated[int, Field(ge=0)] = 0,
) -> dict[str, Any] | State:
    """Create <root>/<folder>/<timestamp>/{raw,uploads,decrypted,combined}, import, and run the correlation.

    Args:
        sip_pcap: The SIP pcap/pcapng of the call: a path on the worker, an s3://bucket/key or an https:// URL.
        direction: inbound — the carrier sent the first INVITE; outbound — the core did.
        media_directory: A session folder (its raw/ is used), a folder or file of raw media captures, or an s3:// session.
        output_folder: Folder under the capture root for the session, e.g. a ticket number (empty: none).
        capture_root: Root of the sessions (empty: RTPHELPER_CAPTURE_ROOT, hosts.yaml settings, ~/Downloads).
        call_id: Select the call by Call-ID when the SIP pcap holds several calls (empty: not set).
        number: Or select it by caller/callee number (empty: not set).
        min_packets: Keep a leg's packets from a raw file only above this count (0: RTPHELPER_MIN_LEG_PACKETS).
    """
    begin_flow_run()
    check_inputs(sip_pcap, media_directory)
    s.tag_run(output_folder)
    root = Path(capture_root) if capture_root else s.default_capture_root()
    ticket = root / output_folder if output_folder else None
    new_ticket = ticket is not None and not ticket.exists()
    paths = s.create_session(str(root), output_folder)
    try:
        sip = s.fetch_sip(sip_pcap, paths.uploads)
        s.import_media(paths, [media_directory])   # the task finds a session folder's raw/
        get_run_logger().info("session %s", paths.root)
        result = run_correlation(sip, direction, [str(paths.raw)], paths.root, call_id, number, min_packets or None,
                                 False, extra={"session": str(paths.root)})
    except BaseException:
        discard_if_unused(paths, ticket if new_ticket else None)
        raise
    s.discard_incoming(sip_pcap)
    return result
