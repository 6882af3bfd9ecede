"""`rtphelper`: the in-process command line (no Prefect server needed)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rtpcore.analysis.cli import add_analyze_arguments, analyze_command
from rtpcore.desk.cli import add_desk_parsers
from rtpcore.errors import RtpCoreError
from rtpcore.literals import DIRECTIONS

if TYPE_CHECKING:
    from rtpcore.plan import Leg
    from rtpcore.sip.assembly import AssembledCall, AssemblyConfig

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130                # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143                 # 128 + SIGTERM (Prefect cancel, timeout(1), systemd stop)
AWS_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")

Handler = Callable[[argparse.Namespace], int]
_UNTOUCHED = {"correlate": "; the previous results in --out are untouched"}
QUICK_EXIT = frozenset({"correlate"})  # one-shot commands whose program exit skips the interpreter's teardown


def _legs(args: argparse.Namespace) -> int:
    from rtpcore.sip.assembly import load_assembly_config
    from rtpcore.sip.legs import resolve_legs

    assembly = load_assembly_config()
    plan = resolve_legs(Path(args.sip), args.direction, call_id=args.call_id, number=args.number, assembly=assembly)
    explained = _explain(args, assembly) if args.explain else None
    if args.json:
        doc = plan.to_json()
        if explained is not None:
            doc["assembly"] = explained.to_json()
        print(json.dumps(doc))
        return EXIT_OK
    if explained is not None:
        print("\n".join(explained.explain()) + "\n")
    print(f"call {plan.call_id}  ({args.direction})")
    if len(plan.call_ids) > 1:
        print(f"dialogs: {', '.join(plan.call_ids)}")
    for leg in plan.legs:
        print(f"  {leg.name:8} media host {leg.media_host:<16} peer {leg.peer:<16} srtp {leg.srtp_suite or '-'}")
        for n in leg.negotiations:
            print(f"           peer {str(n.peer.rtp):<24} host {str(n.host.rtp):<24} {n.proto}")
        for line in _key_lines(leg):
            print(f"           {line}")
    return EXIT_OK


def _key_lines(leg: Leg) -> list[str]:
    """wt-keys: a leg's unusable a=crypto lines, and whether its SRTP can be decrypted at all (never key bytes)."""
    from rtpcore.plan import KEYS_NONE, KEYS_PARTIAL, SIDE_PEER

    lines = []
    for p in leg.key_problems:
        who = f"{leg.name} peer" if p.side == SIDE_PEER else "media host"
        lines.append(f"key problem: {p.message} from the {who}: {p.detail}")
    if leg.srtp_keys == KEYS_NONE:
        lines.append("keys: no usable SDES key — this leg's SRTP will not be decrypted")
    elif leg.srtp_keys == KEYS_PARTIAL:
        lines.append("keys: only some directions have a usable SDES key — the others will stay encrypted")
    return lines


def _correlate(args: argparse.Namespace) -> int:
    from rtpcore.pipeline import InProcessRunner, make_job, run_steps

    _install_sigterm()
    job = make_job(args.sip, args.direction, args.media, args.out, call_id=args.call_id, number=args.number,
                   min_packets=args.min_packets, overwrite=args.overwrite)
    outcome = run_steps(job, InProcessRunner())
    doc = outcome.to_json()
    if outcome.upload_warning:
        print(f"rtphelper correlate: warning: {outcome.upload_warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(doc))
    else:
        print(outcome.report.text())
        for relative in doc.get("urls", {}):
            print(f"uploaded {outcome.session_url}{relative}")
    return EXIT_OK


def _flush(args: argparse.Namespace) -> int:
    from rtpcore.settings import load_settings
    from rtpcore.storage import SessionLocation, flush_session
    from rtpcore.storage.queue import QueueStore

    session_dir = Path(args.session).expanduser()
    if not session_dir.is_dir():
        raise _usage(f"{session_dir}: not a session folder")
    if args.timeout is not None and args.timeout < 0:
        raise _usage(f"--timeout {args.timeout:g}: must be 0 or more seconds")
    settings = load_settings()
    if settings.storage_mode != "s3":  # flushing means uploading: the mode only governs new captures
        settings = settings.model_copy(update={"storage_mode": "s3"})
    location = None
    if args.env:
        try:
            location = SessionLocation(settings.s3_key_prefix, args.env, (args.folder or "").strip("/") or None,
                                       session_dir.resolve().name)
        except ValueError as exc:
            raise _usage(f"--env/--folder: {exc}") from None
    elif QueueStore(session_dir).load_location() is None:
        raise _usage(f"{session_dir}: no upload queue here (captured in local mode?); give --env ENV "
                     "[--folder NAME] so its files can be placed in the bucket")
    report = flush_session(session_dir, settings=settings, location=location, timeout=args.timeout)
    status = report.storage
    if args.json:
        print(json.dumps({"session": str(session_dir.resolve()), "ok": report.ok, "uploaded": report.uploaded,
                          "left": list(report.left), "failed": list(report.failed), "errors": list(report.errors),
                          "storage": status.as_dict()}))
    else:
        print(f"uploaded {report.uploaded}, left {len(report.left)} (storage: {status.storage})")
        for path in report.left:
            print(f"  left: {path}{' (failed)' if path in report.failed else ''}")
        for error in report.errors:
            print(f"  error: {error}")
        if status.storage != "s3" and status.why:
            print(f"  S3 unavailable: {status.why}")
    return EXIT_OK if report.ok else EXIT_INTERNAL


def _decrypt(args: argparse.Namespace) -> int:
    from rtpcore.fsutil import OutputExistsError
    from rtpcore.media.decrypt import decrypt_capture
    from rtpcore.sip.crypto import CryptoAttribute

    text = args.crypto.strip()
    for prefix in ("a=crypto:", "crypto:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):].strip()
    if not text.split(" ", 1)[0].isdigit():
        text = "1 " + text
    try:
        crypto = CryptoAttribute.parse(text)
    except ValueError as exc:
        raise _usage(f"--crypto: {exc} (give 'a=crypto:1 SUITE inline:KEY' or 'SUITE inline:KEY')") from None
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    result = decrypt_capture(Path(args.input), crypto, out)
    if args.json:
        print(json.dumps({"output": str(out.resolve()), "packets": result.packets,
                          "streams": [s.to_json() for s in result.streams]}))
    else:
        for s in result.streams:
            print(f"{s.kind:4} {s.src:>24} → {s.dst:<24} 0x{s.ssrc:08x} packets {s.packets} decrypted {s.decrypted} "
                  f"auth failed {s.auth_failed} key: {s.key}")
        print(out.resolve())
    if result.streams and not any(s.decrypted for s in result.streams):
        print(f"rtphelper decrypt: error: the key authenticates none of the {len(result.streams)} RTP/RTCP streams in "
              f"{args.input} (wrong key or suite, or the capture of another call); written undecrypted to {out}",
              file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _repair(args: argparse.Namespace) -> int:
    from rtpcore.capture.repair import repair_session

    session = Path(args.session)
    if not (session / "manifest.jsonl").is_file():
        raise _usage(f"{session}: no manifest.jsonl here; give the --out folder of a capture")
    report = repair_session(session)
    if args.json:
        print(json.dumps({"session": str(report.session), "changed": report.changed, "problems": list(report.problems),
                          "actions": [{"file": str(a.file), "action": a.action, "packets": a.packets,
                                       "bytes_cut": a.bytes_cut, "detail": a.detail} for a in report.actions]}))
    else:
        for a in report.actions:
            print(f"{a.action:16} {a.file.name}: {a.packets} packets kept, {a.bytes_cut} bytes cut {a.detail}".rstrip())
        for problem in report.problems:
            print(f"problem: {problem}")
        print("nothing to repair" if not report.changed else f"repaired {report.session}")
    return EXIT_OK if not report.problems else EXIT_INTERNAL


# --- call assembly (issue 8): `calls` with evidence, `legs --explain` ---------------------------
def _explain(args: argparse.Namespace, assembly: AssemblyConfig) -> AssembledCall:
    """The selected call's assembly (hops, links, evidence), read again from the SIP pcap."""
    from rtpcore.sip.capture import read_sip
    from rtpcore.sip.legs import select_call

    return select_call(read_sip(Path(args.sip)), source=str(args.sip), call_id=args.call_id, number=args.number,
                       assembly=assembly)


def _calls(args: argparse.Namespace) -> int:
    from rtpcore.sip.assembly import load_assembly_config
    from rtpcore.sip.capture import read_sip
    from rtpcore.sip.legs import assemble_calls, list_calls

    packets = read_sip(Path(args.sip))
    assembly = load_assembly_config()
    if args.json:
        print(json.dumps([c.to_json() for c in assemble_calls(packets, assembly)]))
    elif args.explain:
        for call in assemble_calls(packets, assembly):
            print("\n".join(call.explain()))
    else:
        for c in list_calls(packets, assembly):
            print(c.line())
    return EXIT_OK
# --- end call assembly ---------------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> int:
    from rtpcore.callgen import VARIANTS, render

    if args.list:
        for name in VARIANTS:
            print(name)
        return EXIT_OK
    if args.variant not in VARIANTS:
        raise _usage(f"unknown variant {args.variant!r}; run 'rtphelper generate --list' for the names")
    truth = render(VARIANTS[args.variant], Path(args.out))
    print(json.dumps({"variant": args.variant, "out": str(Path(args.out).resolve()), "sip": truth["sip"],
                      "media": truth["media"]}))
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    from rtpcore.hosts import load_hosts
    from rtpcore.settings import load_settings

    settings = load_settings(env_file=Path(args.env_file) if args.env_file else None)
    hosts_path = Path(args.config) if args.config else settings.hosts_file
    hosts = load_hosts(hosts_path)
    entries = [h for env in hosts.environments_names() for h in hosts.hosts(env)]
    if args.json:
        print(json.dumps({"settings": settings.redacted_dict(), "hosts_file": str(hosts_path),
                          "hosts": [{"env": h.env, "region": h.region, "sub_region": h.sub_region, "id": h.id,
                                     "address": h.address, "port": h.port, "interfaces": list(h.interfaces),
                                     "sip_addresses": list(h.sip_addresses), "media_addresses": list(h.media_addresses)}
                                    for h in entries]}, default=str))
        return EXIT_OK
    for key, value in settings.redacted_dict().items():
        print(f"{key}={value}")
    print(f"# {hosts_path}: {len(entries)} hosts in {len(hosts.environments_names())} environments")
    for h in entries:
        print(f"{h.env:6} {h.region:6} {h.sub_region:12} {h.id:24} {h.address}:{h.port}  {','.join(h.interfaces)}")
    return EXIT_OK


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C/SIGTERM an error was raised while handling, if any (its __context__ chain)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception, so every cleanup (staging folder, temp files) runs as on Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _install_sigterm() -> None:
    """SIGTERM aborts cleanly like SIGINT (only from the main thread, where handlers can be set)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


class UsageError(RtpCoreError):
    """A command-line mistake argparse cannot see (unknown variant, conflicting flags)."""


def _usage(message: str) -> UsageError:
    return UsageError(message)


_LIGHT_COMMANDS = ("legs", "correlate", "flush", "repair", "decrypt", "calls", "generate", "config", "analyze")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the capture commands' module (engine, rpcap, storage: ~0.2 s of imports) loads only when needed."""
    p = argparse.ArgumentParser(prog="rtphelper", description="Find, filter and decrypt the media of one call.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    legs = sub.add_parser("legs", help="print the call's media legs (from the SIP pcap)")
    _call_args(legs)
    legs.add_argument("--json", action="store_true", help="print one JSON object")
    legs.add_argument("--explain", action="store_true",
                      help="also say which evidence tied the call's dialogs together (with --json: an 'assembly' key)")
    legs.set_defaults(handler=_legs)

    cor = sub.add_parser("correlate", help="filter, decrypt and merge the call's media (in-process, no Prefect)")
    _call_args(cor)
    cor.add_argument("--media", nargs="*", default=[], metavar="PATH",
                     help="raw media captures, folders of them, or s3://bucket/…/<env>/<folder>/<session>/ "
                          "(its raw/ is downloaded into --out/raw first); without it the SIP capture is the "
                          "media source (a full capture exported as the SIP pcap)")
    cor.add_argument("--out", required=True, metavar="DIR", help="output folder (decrypted/, combined/)")
    cor.add_argument("--min-packets", dest="min_packets", type=int, default=None,
                     help="keep a leg's packets from a file only above this count (RTPHELPER_MIN_LEG_PACKETS, 10)")
    cor.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --out")
    cor.add_argument("--json", action="store_true", help="print one JSON object")
    cor.set_defaults(handler=_correlate)

    fl = sub.add_parser("flush", help="upload what a capture session left pending (exit 1 while anything is left)")
    fl.add_argument("session", metavar="SESSION_DIR", help="the capture's session folder (--out of capture)")
    fl.add_argument("--timeout", type=float, default=300.0, metavar="S", help="give up waiting after S seconds (300)")
    fl.add_argument("--env", help="environment for the S3 keys, for a session captured without an upload queue")
    fl.add_argument("--folder", metavar="NAME", help="S3 key folder, with --env")
    fl.add_argument("--json", action="store_true", help="print one JSON object")
    fl.set_defaults(handler=_flush)

    rep = sub.add_parser("repair", help="after a crash: cut torn last records and list every chunk in the manifest")
    rep.add_argument("session", metavar="SESSION_DIR", help="the capture's session folder (--out of capture)")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(handler=_repair)

    dec = sub.add_parser("decrypt", help="decrypt one SRTP capture with a key given by hand")
    dec.add_argument("--in", dest="input", required=True, metavar="FILE")
    dec.add_argument("--crypto", required=True, help="'a=crypto:1 SUITE inline:KEY' or 'SUITE inline:KEY'")
    dec.add_argument("--out", required=True, metavar="FILE")
    dec.add_argument("--overwrite", action="store_true")
    dec.add_argument("--json", action="store_true")
    dec.set_defaults(handler=_decrypt)

    calls = sub.add_parser("calls", help="list the calls in a SIP pcap")
    calls.add_argument("--sip", required=True, metavar="FILE")
    calls.add_argument("--json", action="store_true", help="each call with all its Call-IDs and the evidence per link")
    calls.add_argument("--explain", action="store_true", help="the evidence per link in plain words")
    calls.set_defaults(handler=_calls)

    gen = sub.add_parser("generate", help="write a synthetic call (SIP + media pcaps + truth.json)")
    gen.add_argument("--variant", default="inbound-proxy")
    gen.add_argument("--out", default="demo-output/call")
    gen.add_argument("--list", action="store_true", help="list the variants")
    gen.set_defaults(handler=_generate)

    ana = sub.add_parser("analyze", help="per-stream RTP statistics (equal to tshark's rtp,streams), MOS, DTMF, WAV")
    add_analyze_arguments(ana)
    ana.set_defaults(handler=analyze_command)

    from rtpcore.analysis.report_cli import add_report_arguments, report_command

    rpt = sub.add_parser("report", help="rebuild combined/report.html, report.md, the ladder/timeline SVGs and WAVs "
                         "of a session or --out folder")
    add_report_arguments(rpt)
    rpt.set_defaults(handler=report_command)

    cfg = sub.add_parser("config", help="validate and print config/runtime.env and config/hosts.yaml")
    cfg.add_argument("--config", metavar="HOSTS_YAML", help="hosts file (default RTPHELPER_HOSTS_FILE or config/hosts.yaml)")
    cfg.add_argument("--env-file", dest="env_file", metavar="FILE", help="runtime env file (default RTPHELPER_ENV_FILE or config/runtime.env)")
    cfg.add_argument("--json", action="store_true")
    cfg.set_defaults(handler=_config)

    add_desk_parsers(sub)  # issue 10: submit, links, sessions, serve (rtpcore/desk/cli.py)
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    if not words or words[0] not in _LIGHT_COMMANDS:
        from rtpcore.capture.cli import add_capture_parser, add_diagnose_parser

        add_capture_parser(sub)
        add_diagnose_parser(sub)
    return p


def _call_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sip", required=True, metavar="FILE", help="SIP pcap/pcapng of the call")
    p.add_argument("--direction", required=True, choices=DIRECTIONS)
    p.add_argument("--call-id", dest="call_id", help="select the call by Call-ID")
    p.add_argument("--number", help="select the call by caller or callee number")


def main(argv: Sequence[str] | None = None) -> int:
    """`rtphelper ARGS`; as the program itself (argv None), correlate leaves at once when done (_quick_exit)."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    code = _run(args)
    if argv is None and args.command in QUICK_EXIT:
        _quick_exit(code)
    return code


def _quick_exit(code: int) -> None:
    """Leave without the interpreter's teardown (module and GC cleanup: ~35 ms on the bench set): the command is
    complete (outputs committed, worker pool joined, log handlers closed); only stdout/stderr are flushed."""
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stdout: the normal exit reports it
        return
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
    from rtpcore.logs import RedactFilter, correlation, setup_logging, teardown_logging
    from rtpcore.settings import load_settings

    console = logging.StreamHandler(sys.stderr)  # the terminal keeps its short format; logs/app.log gets INFO and up
    console.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    console.setFormatter(logging.Formatter("rtphelper: %(levelname)s: %(message)s"))
    console.addFilter(RedactFilter())
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, handlers=[console])
    handler: Handler = args.handler
    try:
        try:
            settings = load_settings()
            try:
                setup_logging(settings.model_copy(update={"log_level": "DEBUG"}) if args.debug else settings, console=False)
            except OSError as exc:
                print(f"rtphelper {args.command}: warning: cannot write {settings.log_dir}/app.log ({exc.strerror}); "
                      "set RTPHELPER_LOG_DIR to a writable folder", file=sys.stderr)
            for name in AWS_LOGGERS:  # at DEBUG botocore logs request signatures (a presigned URL's included)
                logging.getLogger(name).setLevel(logging.INFO if args.debug else logging.WARNING)
            with correlation():  # a short id per command, on every line of logs/app.log
                return handler(args)
        except Exception as exc:
            interrupt = _interrupt_behind(exc)
            if interrupt is not None:  # a cleanup failed because of the signal (a file closed twice): the signal counts
                raise interrupt from exc
            raise
        finally:
            teardown_logging()  # in-process callers (tests, scripts) get their logging back as it was
    except RtpCoreError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rtphelper {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"rtphelper {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print(f"rtphelper {args.command}: terminated (SIGTERM){_UNTOUCHED.get(args.command, '')}", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"rtphelper {args.command}: interrupted{_UNTOUCHED.get(args.command, '')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last resort: one line, the traceback only with --debug
        if args.debug:
            traceback.print_exc()
        print(f"rtphelper {args.command}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
