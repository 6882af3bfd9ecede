"""The desk's commands for `rtphelper`: submit, links, sessions, serve (argparse parsers and handlers)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from rtpcore.literals import DIRECTIONS

EXIT_OK = 0
EXIT_RUN_FAILED = 1
WAIT_MARGIN_S = 300  # follow a run this much longer than its own job timeout


def _settings() -> Any:
    from rtpcore.settings import load_settings

    return load_settings()


def _capture_root(settings: Any) -> Path:
    from rtpcore.desk.sessions import configured_capture_root

    return configured_capture_root(settings)


def _submit(args: argparse.Namespace) -> int:
    from rtpcore.desk.prefect_api import PrefectApi, api_url
    from rtpcore.desk.submit import COMPLETED, SubmitRequest, submit

    settings = _settings()
    request = SubmitRequest(args.sip, args.direction, session=args.session or "", media=args.media or "",
                            output_folder=args.output_folder, call_id=args.call_id, number=args.number,
                            deployment=_deployment(args.deployment))
    with PrefectApi(api_url(args.api), timeout=settings.fetch_timeout_seconds) as api:
        result = submit(request, api, settings, wait=args.watch, download_to=args.download,
                        wait_timeout=args.timeout or settings.correlation_job_timeout_seconds + WAIT_MARGIN_S)
    if (args.watch or args.download) and result.run.state != COMPLETED:
        return EXIT_RUN_FAILED
    return EXIT_OK


def _deployment(text: str | None) -> tuple[str, str] | None:
    """--deployment FLOW/NAME (e.g. a region's own deployment of correlate-call)."""
    from rtpcore.errors import InputError

    if not text:
        return None
    flow, sep, name = text.partition("/")
    if not sep or not flow or not name:
        raise InputError(f"--deployment {text!r}: use FLOW/DEPLOYMENT, e.g. correlate-call/correlate-call")
    return flow, name


def _links(args: argparse.Namespace) -> int:
    from rtpcore.desk.links import session_links
    from rtpcore.desk.sessions import resolve_session

    settings = _settings()
    root = _capture_root(settings)
    api = _api_or_none(args.api, settings)
    try:
        ref = resolve_session(args.session, root, api)
    finally:
        if api is not None:
            api.close()
    links = session_links(ref.root, ref.url, root, settings)
    if args.json:
        print(json.dumps({link.name: link.url for link in links}))
    for link in links if not args.json else []:
        print(f"{link.name}: {link.url}")
    return EXIT_OK


def _api_or_none(explicit: str | None, settings: Any) -> Any:
    """A Prefect API client when an address is known (to resolve run names), else None."""
    from rtpcore.desk.prefect_api import API_URL_VAR, PrefectApi, api_url

    if not explicit and not os.environ.get(API_URL_VAR):
        return None
    return PrefectApi(api_url(explicit), timeout=settings.fetch_timeout_seconds)


def _sessions(args: argparse.Namespace) -> int:
    from rtpcore.desk.sessions import recent_sessions, sessions_table

    from rtpcore.errors import InputError

    settings = _settings()
    if args.root is not None and not args.root.is_dir():
        raise InputError(f"{args.root}: no such capture root; give the folder sessions are created under")
    rows = recent_sessions(args.root or _capture_root(settings), settings, limit=args.limit)
    if args.json:
        print(json.dumps([r.row() for r in rows]))
    else:
        print(sessions_table(rows))
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from rtpcore.desk.serve import OutputServer, ServeConfig

    settings = _settings()
    root = Path(args.root) if args.root else _capture_root(settings)
    if not args.root:
        root.mkdir(parents=True, exist_ok=True)  # the default root of a fresh desk: the first capture would create it
    server = OutputServer(args.address or settings.serve_address,
                          ServeConfig(root, settings.serve_secret or "", settings.fetch_max_bytes)).start()
    print(f"serving outputs below {root.resolve()} at {server.url} (links need a token; Ctrl-C stops)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return EXIT_OK


def add_desk_parsers(sub: Any) -> None:
    """Register submit, links, sessions and serve on rtphelper's subcommands."""
    sm = sub.add_parser("submit", help="from a laptop: upload the SIP pcap, start the correlation on the worker, follow it")
    sm.add_argument("--sip", required=True, help="the SIP pcap on this computer (or an s3:// / https:// URL)")
    sm.add_argument("--direction", required=True, choices=DIRECTIONS)
    where = sm.add_mutually_exclusive_group(required=True)
    where.add_argument("--session", help="capture run name, session folder on the worker, or s3:// session URL")
    where.add_argument("--media", help="folder of raw captures on the worker (or s3:// session): a new session")
    sm.add_argument("--output-folder", default="", help="ticket folder for a new session (with --media)")
    sm.add_argument("--call-id", default="")
    sm.add_argument("--number", default="")
    sm.add_argument("--watch", action="store_true", help="follow the run to its end and print the output links")
    sm.add_argument("--download", type=Path, help="download the outputs into this folder (implies --watch)")
    sm.add_argument("--api", help="Prefect API URL (default PREFECT_API_URL)")
    sm.add_argument("--deployment", help="FLOW/DEPLOYMENT to start (default correlate-call/correlate-call with "
                                         "--session, process-call/process-call with --media)")
    sm.add_argument("--timeout", type=float, default=0, help="give up following after this many seconds")
    sm.set_defaults(handler=_submit)

    ln = sub.add_parser("links", help="fresh links to a session's outputs (presigned S3 or rtphelper serve)")
    ln.add_argument("session", help="capture run name, session folder, or s3:// session URL")
    ln.add_argument("--api", help="Prefect API URL to resolve a run name (default PREFECT_API_URL)")
    ln.add_argument("--json", action="store_true")
    ln.set_defaults(handler=_links)

    ss = sub.add_parser("sessions", help="recent sessions and their state (capturing/captured/correlated/failed)")
    ss.add_argument("--root", type=Path, help="capture root (default RTPHELPER_CAPTURE_ROOT / hosts.yaml)")
    ss.add_argument("--limit", type=int, default=20)
    ss.add_argument("--json", action="store_true")
    ss.set_defaults(handler=_sessions)

    sv = sub.add_parser("serve", help="serve outputs of local sessions to browsers, accept SIP pcap uploads (signed links)")
    sv.add_argument("--root", help="capture root to serve (default RTPHELPER_CAPTURE_ROOT / hosts.yaml)")
    sv.add_argument("--address", help="host:port (default RTPHELPER_SERVE_ADDRESS)")
    sv.set_defaults(handler=_serve)
