"""`rtphelper submit`: from a laptop, get the SIP pcap to the worker, start the correlation, follow it, fetch outputs.

The worker cannot read the laptop's disk. The SIP pcap travels one of three ways, simplest first:
an s3:// or https:// --sip is passed on as it is (the flow fetches it); an S3 session gets it put into its
uploads/ (the laptop's AWS credentials); otherwise it is PUT to `rtphelper serve` on the worker with a link
signed by the shared RTPHELPER_SERVE_SECRET, and the flow copies it into the session's uploads/.
"""
from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rtpcore.desk.links import INCOMING_DIR, METHOD_PUT, UPLOAD_ROUTE, UPLOADS_DIR, signed_url
from rtpcore.desk.prefect_api import Artifact, FlowRunState, PrefectApi
from rtpcore.errors import ConfigError, InputError, StorageError
from rtpcore.fsutil import atomic_output
from rtpcore.storage.download import is_s3_url, parse_s3_url
from rtpcore.storage.fetch import file_name_of, is_http_url, shown_url

if TYPE_CHECKING:
    from rtpcore.settings import Settings

CORRELATE = ("correlate-call", "correlate-call")
PROCESS = ("process-call", "process-call")
UPLOAD_LINK_SECONDS = 600  # the PUT link is used at once; a short validity is enough
STAMP = "%Y%m%d_%H%M%S"
COMPLETED = "COMPLETED"
DOWNLOAD_BLOCK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """What the engineer typed."""

    sip: str
    direction: str
    session: str = ""
    media: str = ""
    output_folder: str = ""
    call_id: str = ""
    number: str = ""
    deployment: tuple[str, str] | None = None   # override (flow, deployment) names


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The run and its output links (name → URL) once final."""

    run: FlowRunState
    links: dict[str, str] = field(default_factory=dict)
    downloaded: tuple[Path, ...] = ()


def incoming_name(sip: Path, now: datetime | None = None) -> str:
    """`incoming/<UTC time>-<random>/uploads/<file>`: a fresh upload place below the worker's capture root."""
    stamp = (now or datetime.now(timezone.utc)).strftime(STAMP)
    return f"{INCOMING_DIR}/{stamp}-{secrets.token_hex(4)}/{UPLOADS_DIR}/{file_name_of(str(sip))}"


def upload_to_serve(sip: Path, settings: Settings) -> str:
    """PUT the SIP pcap to `rtphelper serve` on the worker; the worker path it was stored at."""
    import httpx

    if not settings.serve_url:
        raise ConfigError("the worker cannot read files on this laptop: set RTPHELPER_SERVE_URL (the worker's "
                          "`rtphelper serve`) and RTPHELPER_SERVE_SECRET, give an s3:// session, or pass --sip as an "
                          "s3:// or https:// URL")
    url = signed_url(settings.serve_url, UPLOAD_ROUTE, incoming_name(sip), settings.serve_secret or "",
                     UPLOAD_LINK_SECONDS, method=METHOD_PUT)
    try:
        with sip.open("rb") as body:
            response = httpx.put(url, content=body, timeout=httpx.Timeout(settings.fetch_timeout_seconds),
                                 headers={"Content-Length": str(sip.stat().st_size)})
    except httpx.HTTPError as exc:
        raise StorageError(f"cannot upload {sip} to {shown_url(url)} ({type(exc).__name__}): is `rtphelper serve` "
                           "running on the worker and RTPHELPER_SERVE_URL right?") from None
    if response.status_code != 201:
        why = response.json().get("error", response.text) if response.headers.get("content-type") == "application/json" \
            else response.text[:200]
        raise StorageError(f"upload of {sip} to {shown_url(url)} refused ({response.status_code}): {why}")
    return str(response.json()["path"])


def upload_to_s3(sip: Path, session_url: str, settings: Settings) -> str:
    """Put the SIP pcap into the S3 session's uploads/; the s3:// URL the flow fetches it from."""
    from rtpcore.storage.base import file_digests
    from rtpcore.storage.download import storage_for_url

    parsed = parse_s3_url(session_url)
    key = f"{parsed.key}/{UPLOADS_DIR}/{file_name_of(str(sip))}"
    storage = storage_for_url(session_url, settings)
    existing = storage.head(key)
    if existing is not None and existing.sha256 != file_digests(sip).sha256:
        raise InputError(f"s3://{parsed.bucket}/{key} already exists with other content; rename {sip.name} and retry")
    storage.put_file(sip, key)
    return f"s3://{parsed.bucket}/{key}"


def place_sip(request: SubmitRequest, settings: Settings) -> str:
    """The sip_pcap parameter the worker can use (a URL as given, an S3 object, or the path serve stored it at)."""
    if is_s3_url(request.sip) or is_http_url(request.sip):
        return request.sip.strip()
    sip = Path(request.sip).expanduser()
    if not sip.is_file():
        raise InputError(f"{sip}: SIP pcap not found on this computer")
    target = request.session or request.media
    if is_s3_url(target):
        return upload_to_s3(sip, target, settings)
    return upload_to_serve(sip, settings)


def parameters(request: SubmitRequest, sip_pcap: str) -> tuple[tuple[str, str], dict[str, Any]]:
    """(flow, deployment) and its parameters: correlate-call for a session, process-call for media."""
    common: dict[str, Any] = {"sip_pcap": sip_pcap, "direction": request.direction}
    if request.call_id:
        common["call_id"] = request.call_id
    if request.number:
        common["number"] = request.number
    if request.session:
        params = {**common, "session": request.session}
        if request.output_folder:
            params["output_folder"] = request.output_folder
        return request.deployment or CORRELATE, params
    if not request.media:
        raise InputError("give --session (run name, session folder or s3:// URL) or --media (a folder on the worker)")
    params = {**common, "media_directory": request.media}
    if request.output_folder:
        params["output_folder"] = request.output_folder
    return request.deployment or PROCESS, params


def output_links(artifacts: list[Artifact]) -> dict[str, str]:
    """name → URL of the run's link artifacts (presigned S3 links win over serve/file links of the same name)."""
    links: dict[str, str] = {}
    for artifact in artifacts:
        link = artifact.link
        if link is not None and (link[0] not in links or "presigned" in artifact.description):
            links[link[0]] = link[1]
    return links


def download(links: dict[str, str], dest: Path, timeout: float) -> list[Path]:
    """Every http(s) link into dest (file:// links are the worker's disk: refused); existing files are never replaced."""
    import httpx

    dest = Path(dest).expanduser()
    targets = {name: dest / Path(name).name for name in links}
    clash = [str(p) for p in targets.values() if p.exists()]
    if clash:
        raise InputError(f"{', '.join(clash)} already exist(s); choose another --download folder or remove them")
    local = [name for name, url in links.items() if not url.startswith(("http://", "https://"))]
    if local:
        raise InputError(f"{', '.join(local)}: the run offers only file:// links to the worker's disk; run "
                         "`rtphelper serve` on the worker with RTPHELPER_SERVE_URL set, or use S3 mode")
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for name, url in links.items():
        with atomic_output(targets[name]) as tmp, tmp.open("wb") as out:
            try:
                with httpx.stream("GET", url, timeout=httpx.Timeout(timeout)) as response:
                    if response.status_code != 200:
                        raise StorageError(f"{name}: {shown_url(url)} answered {response.status_code}; regenerate the "
                                           "links (rtphelper links SESSION)")
                    for block in response.iter_bytes(DOWNLOAD_BLOCK):
                        out.write(block)
            except httpx.HTTPError as exc:
                raise StorageError(f"{name}: cannot download {shown_url(url)} ({type(exc).__name__})") from None
        done.append(targets[name])
    return done


def submit(request: SubmitRequest, api: PrefectApi, settings: Settings, *, wait: bool, download_to: Path | None,
           wait_timeout: float, out: TextIO = sys.stdout) -> SubmitResult:
    """Check the deployment, upload the SIP pcap, start the run; when asked, follow it and fetch the outputs."""
    names, _ = parameters(request, "-")
    deployment_id = api.deployment_id(*names)  # before the upload: a missing deployment costs nothing
    sip_pcap = place_sip(request, settings)
    _, params = parameters(request, sip_pcap)
    run = api.create_flow_run(deployment_id, params)
    say: Callable[[str], None] = lambda line: print(line, file=out, flush=True)  # noqa: E731
    say(f"started {names[0]}/{names[1]} run {run.name} ({run.id}) — {ui_link(api.url, run.id)}")
    if not wait and download_to is None:
        return SubmitResult(run)
    final = api.wait(run.id, timeout=wait_timeout, on_change=lambda st: say(f"{st.name}: {st.state}"))
    if final.state != COMPLETED:
        say(f"run {final.name} ended {final.state}: {final.message or 'no message; see its logs in the UI'}")
        return SubmitResult(final)
    links = output_links(api.artifacts(final.id))
    for name, url in links.items():
        say(f"{name}: {url}")
    files = download(links, download_to, settings.fetch_timeout_seconds) if download_to is not None else []
    for path in files:
        say(f"downloaded {path}")
    return SubmitResult(final, links, tuple(files))


def ui_link(api_url: str, run_id: str) -> str:
    """The run's page in the Prefect UI (the API URL without its /api)."""
    base = api_url[:-len("/api")] if api_url.endswith("/api") else api_url
    return f"{base}/runs/flow-run/{run_id}"
