"""`rtphelper capture` and `rtphelper diagnose`: argparse registration and the in-process handlers."""
from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from rtpcore.capture.engine import ADHOC, CaptureTarget, adhoc_target, targets_for_hosts
from rtpcore.capture.manifest import MANIFEST_NAME, Manifest
from rtpcore.capture.repair import RAW_DIR
from rtpcore.capture.runner import CaptureRequest, CaptureResult, start_capture
from rtpcore.capture.stats import STATE_FAILED, CaptureProgress, CaptureSummary
from rtpcore.errors import InputError, StorageError
from rtpcore.rpcap.protocol import RPCAP_DEFAULT_PORT

__all__ = ["add_capture_parser", "add_diagnose_parser", "diagnose_arguments", "run_capture", "run_diagnose"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_HOST_FAILED = 1
MIN_CLI_MAX_BYTES = 64 * 1024   # below this a slip ("500" for 500MB) would write one file per few packets
LINKTYPE_ETHERNET = 1
_FOLDER_PART = re.compile(r"^[A-Za-z0-9._-]+$")
HOSTS_HELP = "hosts file (default RTPHELPER_HOSTS_FILE or config/hosts.yaml)"


def add_capture_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `capture` on the rtphelper subparsers."""
    p = sub.add_parser("capture", help="capture media from rpcapd hosts into <out>/raw (in-process, no Prefect)",
                       description="Capture from hosts.yaml hosts (--env/--host) or one ad-hoc rpcapd (--address).")
    p.add_argument("--env", help="environment in hosts.yaml")
    p.add_argument("--host", dest="hosts", action="append", metavar="ID", help="host id (repeat for several)")
    p.add_argument("--address", help="ad-hoc rpcapd address (not in hosts.yaml)")
    p.add_argument("--interface", dest="interfaces", action="append", metavar="IF",
                   help="interface to capture (required with --address; narrows a configured host's interfaces)")
    p.add_argument("--port", type=int, default=RPCAP_DEFAULT_PORT, help=f"ad-hoc rpcapd port ({RPCAP_DEFAULT_PORT})")
    p.add_argument("--auth", metavar="USER[:PASSWORD]", help="RPCAP password auth (prompts for a missing password)")
    p.add_argument("--tls", action="store_true", help="ad-hoc rpcapd runs with -S (rpcaps://)")
    p.add_argument("--filter", default="", help="capture filter (tcpdump syntax; default 'udp')")
    p.add_argument("--duration", type=float, required=True, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--out", required=True, metavar="DIR", help="session folder: raw/ and manifest.jsonl go here")
    p.add_argument("--config", metavar="HOSTS_YAML", help=HOSTS_HELP)
    p.add_argument("--max-bytes", dest="max_bytes", metavar="SIZE",
                   help="chunk size (RTPHELPER_ROLLING_PCAP_MAX_BYTES)")
    p.add_argument("--max-seconds", dest="max_seconds", type=float, metavar="S",
                   help="chunk duration, 0 = off (RTPHELPER_ROLLING_PCAP_MAX_SECONDS)")
    p.add_argument("--storage", choices=("local", "s3"), default=None,
                   help="s3: upload chunks as they close, local disk while S3 is down; local: disk only "
                        "(RTPHELPER_STORAGE_MODE)")
    p.add_argument("--folder", metavar="NAME", help="S3 key folder: <prefix>/<env>/<NAME>/<session>/raw/…")
    p.add_argument("--flush-timeout", dest="flush_timeout", type=float, default=None, metavar="S",
                   help="seconds to wait for the final uploads after the capture (RTPHELPER_S3_FINAL_FLUSH_SECONDS, "
                        "10); the rest stays queued for `rtphelper flush`")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object: {hosts, session, storage}")
    p.set_defaults(handler=run_capture)
    return p


def diagnose_arguments(p: argparse.ArgumentParser) -> None:
    """The diagnose options, shared by `rtphelper diagnose` and scripts/rpcap_diagnose.py."""
    p.add_argument("--config", metavar="HOSTS_YAML", help=HOSTS_HELP)
    p.add_argument("--env", help="only this environment (default: all)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per-host connect/reply timeout (5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_diagnose)


def add_diagnose_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `diagnose` on the rtphelper subparsers."""
    p = sub.add_parser("diagnose", help="check every host in hosts.yaml: reachable, auth, interfaces, libpcap")
    diagnose_arguments(p)
    return p


# -- capture ---------------------------------------------------------------------------------------


def _parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not user:
        raise InputError("--auth: give USER:PASSWORD or USER (the password is then asked for)")
    if not sep:
        if not sys.stdin.isatty():
            raise InputError(f"--auth {user}: no password given and no terminal to ask for one; use USER:PASSWORD")
        password = getpass.getpass(f"RPCAP password for {user}: ")
    return user, password


def _targets(args: argparse.Namespace, hosts_file: Path) -> list[CaptureTarget]:
    """Configured hosts or one ad-hoc address; mixing the two, or neither, is a usage error."""
    auth = _parse_auth(args.auth)
    if args.address:
        if args.env or args.hosts:
            raise InputError("--address captures one ad-hoc host; do not combine it with --env/--host")
        if not args.interfaces or len(args.interfaces) != 1:
            raise InputError("--address needs exactly one --interface (the interface on that host)")
        if not 1 <= args.port <= 65535:
            raise InputError(f"--port {args.port}: must be 1..65535")
        return [adhoc_target(args.address, args.interfaces[0], args.port, auth=auth, tls=args.tls)]
    if not args.env or not args.hosts:
        raise InputError("give --env ENV with --host ID (repeatable), or --address IP --interface IF")
    from rtpcore.hosts import load_hosts

    config = load_hosts(hosts_file)
    entries = [config.find_host(args.env, host_id) for host_id in dict.fromkeys(args.hosts)]
    targets = targets_for_hosts(entries, args.interfaces)
    if auth is not None:
        targets = [dataclasses.replace(t, auth=auth) for t in targets]
    if args.tls:
        targets = [dataclasses.replace(t, tls=True) for t in targets]
    return targets


def _check_filter(expression: str) -> None:
    """Catch a typo before connecting anywhere; the link-type-specific compile happens per host later."""
    from rtpcore.pcap import libpcap

    if not expression.strip():
        return
    try:
        libpcap.compile_filter(expression, linktype=LINKTYPE_ETHERNET)
    except libpcap.LibpcapError as exc:
        raise InputError(f"--filter {expression!r} does not compile: {exc}") from None


def _prepare_out(out: Path) -> Path:
    """Create <out>/raw; refuse a folder that already holds a session and one we cannot write."""
    out = out.expanduser()
    if (out / MANIFEST_NAME).exists():
        _reuse_empty_session(out)
    try:
        (out / RAW_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"{out}: output folder is not writable: {exc.strerror or exc}") from None
    return out.resolve()


def _reuse_empty_session(out: Path) -> None:
    """A session that ended with nothing captured (every host failed) may be retried in place; any other is kept."""
    state = Manifest.read(out / MANIFEST_NAME)
    raw = out / RAW_DIR
    files = sorted(p.name for p in raw.iterdir() if p.is_file()) if raw.is_dir() else []
    ended = bool(state.sessions) and state.sessions[-1].get("status") != "started"
    if state.chunks or state.opened or files or not ended:
        what = f"{len(state.chunks) or len(files)} chunk(s)" if (state.chunks or files) else "a capture still running or crashed"
        raise InputError(f"{out} already holds a capture session ({MANIFEST_NAME}: {what}); choose a new --out "
                         f"folder (a session with data is never overwritten; after a crash run: rtphelper repair {out})")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = out / f"manifest.failed-{stamp}.jsonl"
    os.replace(out / MANIFEST_NAME, aside)
    log.warning("%s: the earlier capture here captured nothing; its manifest is kept as %s and the folder is reused",
                out, aside.name)


@contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """The first SIGINT/SIGTERM is a cooperative stop (chunks closed, manifest finished); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            raise KeyboardInterrupt(f"second {name}")  # open chunks are left for repair_session
        # A second signal arriving now would run its handler inside this one, between any two lines: it waits
        # (blocked) until the stop has started and said so, then aborts.
        blocked = _block(signal.SIGINT, signal.SIGTERM)
        try:
            stopping.set()
            print(f"rtphelper capture: {name}: stopping (closing chunks; send it again to abort)", file=sys.stderr)
            stop()
        finally:
            _unblock(blocked)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _block(*signals: signal.Signals) -> set[int | signal.Signals] | None:
    """Hold these signals back (POSIX); the previous mask, or None where signal masks do not exist."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, signals)


def _unblock(previous: set[int | signal.Signals] | None) -> None:
    """Restore the mask _block() replaced: a signal held back meanwhile is delivered now."""
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _print_progress(progress: CaptureProgress) -> None:
    if progress.state == STATE_FAILED:
        return  # the error itself is printed once, with the summary
    print(f"rtphelper capture: {progress.line()}", file=sys.stderr, flush=True)


def _print_summary(summary: CaptureSummary) -> None:
    for h in summary.hosts:
        if h.error:
            print(f"FAIL {h.label} {h.interface}: {h.error}")
        d = h.drops
        print(f"{'ok  ' if not h.error else '    '} {h.label} {h.interface}: {h.packets} packets, {h.bytes} bytes, "
              f"drops client {d.client} server {d.server} interface {d.interface}, {len(h.files)} files, "
              f"{len(h.gaps)} gaps")
        for g in h.gaps:
            print(f"     gap {(g.to_ns - g.from_ns) / 1e9:.3f} s: {g.why}")
    print(f"session: {summary.session} (ended: {summary.ended})")


def _print_storage(storage: dict[str, Any]) -> None:
    line = f"storage: {storage['status']}"
    if storage.get("location"):
        line += f" {storage['location']}"
    if storage["mode"] == "s3":
        line += f", {storage['uploaded']} uploaded, {len(storage['pending'])} pending"
    if storage.get("switched_at"):
        line += f" (switched to local at {storage['switched_at']}: {storage['why']}"
        line += f"; back on S3 at {storage['restored_at']})" if storage.get("restored_at") else ")"
    print(line)


def _warn_pending(result: CaptureResult) -> None:
    """Pending uploads do not fail the capture, but they must not go unnoticed."""
    pending = result.storage.get("pending") or []
    if pending:
        print(f"rtphelper capture: warning: {len(pending)} files pending upload; run: rtphelper flush "
              f"{result.summary.session}", file=sys.stderr)


def run_capture(args: argparse.Namespace) -> int:
    """Validate everything that can be checked locally (exit 2), then capture; exit 1 when a host failed."""
    from rtpcore.settings import load_settings
    from rtpcore.sizes import parse_size

    if not args.duration > 0:
        raise InputError(f"--duration {args.duration:g}: must be a positive number of seconds")
    settings = load_settings()
    hosts_file = Path(args.config) if args.config else settings.hosts_file
    targets = _targets(args, hosts_file)
    max_bytes = settings.rolling_pcap_max_bytes
    if args.max_bytes is not None:
        try:
            max_bytes = parse_size(args.max_bytes)
        except ValueError as exc:
            raise InputError(f"--max-bytes: {exc}") from None
        if max_bytes < MIN_CLI_MAX_BYTES:
            raise InputError(f"--max-bytes {args.max_bytes}: must be at least {MIN_CLI_MAX_BYTES} bytes")
    max_seconds = settings.rolling_pcap_max_seconds if args.max_seconds is None else args.max_seconds
    if max_seconds < 0:
        raise InputError(f"--max-seconds {max_seconds:g}: must be 0 (off) or positive")
    _check_filter(args.filter)
    if args.flush_timeout is not None and args.flush_timeout < 0:
        raise InputError(f"--flush-timeout {args.flush_timeout:g}: must be 0 or more seconds")
    out = _prepare_out(Path(args.out))
    request = CaptureRequest(
        tuple(targets), out, args.duration, filter_expression=args.filter, max_bytes=max_bytes,
        max_seconds=max_seconds, storage_mode=args.storage, environment=args.env or ADHOC,
        folder=_check_folder(args.folder), flush_timeout=args.flush_timeout,
    )
    running = start_capture(request, settings, on_progress=None if args.quiet else _print_progress)
    with _stop_on_signals(running.stop):
        result = running.wait()
    assert result is not None
    for h in result.summary.hosts:
        if h.error:
            print(f"rtphelper capture: error: {h.error}", file=sys.stderr)
    _warn_pending(result)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        _print_summary(result.summary)
        _print_storage(result.storage)
    return EXIT_OK if result.ok else EXIT_HOST_FAILED


def _check_folder(folder: str | None) -> str | None:
    """--folder is part of S3 keys: the same characters as session folders."""
    if folder is None:
        return None
    parts = folder.strip("/").split("/")
    if not folder.strip("/") or any(not _FOLDER_PART.match(p) or p in (".", "..") for p in parts):
        raise InputError(f"--folder {folder!r}: use letters, digits, '.', '_', '-' and '/' only")
    return "/".join(parts)


# -- diagnose --------------------------------------------------------------------------------------


def run_diagnose(args: argparse.Namespace) -> int:
    """One line per host; exit 1 when any check failed anywhere."""
    from rtpcore.capture.diagnose import diagnose_hosts
    from rtpcore.hosts import load_hosts
    from rtpcore.settings import load_settings

    hosts_file = Path(args.config) if args.config else load_settings().hosts_file
    config = load_hosts(hosts_file)
    envs = [args.env] if args.env else config.environments_names()
    entries = [h for env in envs for h in config.hosts(env)]
    if not entries:
        raise InputError(f"{hosts_file}: no hosts{' in environment ' + args.env if args.env else ''}")
    results = diagnose_hosts(entries, timeout=args.timeout)
    ok = all(r.ok for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "hosts": [r.to_json() for r in results]}))
    else:
        for r in results:
            print(r.line())
    return EXIT_OK if ok else EXIT_HOST_FAILED
