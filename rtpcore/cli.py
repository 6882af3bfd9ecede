"""`rtphelper`: the in-process command line (no Prefect server needed)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from rtpcore.errors import RtpCoreError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


def _legs(args: argparse.Namespace) -> int:
    from rtpcore.sip.legs import resolve_legs

    plan = resolve_legs(Path(args.sip), args.direction, call_id=args.call_id, number=args.number)
    if args.json:
        print(json.dumps(plan.to_json()))
        return EXIT_OK
    print(f"call {plan.call_id}  ({args.direction})")
    if len(plan.call_ids) > 1:
        print(f"dialogs: {', '.join(plan.call_ids)}")
    for leg in plan.legs:
        print(f"  {leg.name:8} media host {leg.media_host:<16} peer {leg.peer:<16} srtp {leg.srtp_suite or '-'}")
        for n in leg.negotiations:
            print(f"           peer {str(n.peer.rtp):<24} host {str(n.host.rtp):<24} {n.proto}")
    return EXIT_OK


def _correlate(args: argparse.Namespace) -> int:
    from rtpcore.pipeline import correlate
    from rtpcore.settings import load_settings

    min_packets = args.min_packets if args.min_packets is not None else load_settings().min_leg_packets
    report = correlate(Path(args.sip), args.direction, [Path(m) for m in args.media], Path(args.out),
                       call_id=args.call_id, number=args.number, min_packets=min_packets, overwrite=args.overwrite)
    print(json.dumps(report.to_json()) if args.json else report.text())
    return EXIT_OK


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
                  f"auth failed {s.auth_failed}")
        print(out.resolve())
    return EXIT_OK if any(s.decrypted for s in result.streams) or not result.streams else EXIT_USAGE


def _calls(args: argparse.Namespace) -> int:
    from rtpcore.sip.capture import read_sip
    from rtpcore.sip.legs import list_calls

    calls = list_calls(read_sip(Path(args.sip)))
    if args.json:
        print(json.dumps([{"call_id": c.call_id, "call_ids": list(c.call_ids), "from": c.from_user,
                           "to": c.to_user, "start_ns": c.start_ns} for c in calls]))
    else:
        for c in calls:
            print(c.line())
    return EXIT_OK


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
                                     "address": h.address, "port": h.port, "interfaces": list(h.interfaces)}
                                    for h in entries]}, default=str))
        return EXIT_OK
    for key, value in settings.redacted_dict().items():
        print(f"{key}={value}")
    print(f"# {hosts_path}: {len(entries)} hosts in {len(hosts.environments_names())} environments")
    for h in entries:
        print(f"{h.env:6} {h.region:6} {h.sub_region:12} {h.id:24} {h.address}:{h.port}  {','.join(h.interfaces)}")
    return EXIT_OK


class UsageError(RtpCoreError):
    """A command-line mistake argparse cannot see (unknown variant, conflicting flags)."""


def _usage(message: str) -> UsageError:
    return UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtphelper", description="Find, filter and decrypt the media of one call.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    legs = sub.add_parser("legs", help="print the call's media legs (from the SIP pcap)")
    _call_args(legs)
    legs.add_argument("--json", action="store_true", help="print one JSON object")
    legs.set_defaults(handler=_legs)

    cor = sub.add_parser("correlate", help="filter, decrypt and merge the call's media (in-process, no Prefect)")
    _call_args(cor)
    cor.add_argument("--media", required=True, nargs="+", metavar="PATH", help="raw media captures or folders of them")
    cor.add_argument("--out", required=True, metavar="DIR", help="output folder (decrypted/, combined/)")
    cor.add_argument("--min-packets", dest="min_packets", type=int, default=None,
                     help="keep a leg's packets from a file only above this count (RTPHELPER_MIN_LEG_PACKETS, 10)")
    cor.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --out")
    cor.add_argument("--json", action="store_true", help="print one JSON object")
    cor.set_defaults(handler=_correlate)

    dec = sub.add_parser("decrypt", help="decrypt one SRTP capture with a key given by hand")
    dec.add_argument("--in", dest="input", required=True, metavar="FILE")
    dec.add_argument("--crypto", required=True, help="'a=crypto:1 SUITE inline:KEY' or 'SUITE inline:KEY'")
    dec.add_argument("--out", required=True, metavar="FILE")
    dec.add_argument("--overwrite", action="store_true")
    dec.add_argument("--json", action="store_true")
    dec.set_defaults(handler=_decrypt)

    calls = sub.add_parser("calls", help="list the calls in a SIP pcap")
    calls.add_argument("--sip", required=True, metavar="FILE")
    calls.add_argument("--json", action="store_true")
    calls.set_defaults(handler=_calls)

    gen = sub.add_parser("generate", help="write a synthetic call (SIP + media pcaps + truth.json)")
    gen.add_argument("--variant", default="inbound-proxy")
    gen.add_argument("--out", default="demo-output/call")
    gen.add_argument("--list", action="store_true", help="list the variants")
    gen.set_defaults(handler=_generate)

    cfg = sub.add_parser("config", help="validate and print config/runtime.env and config/hosts.yaml")
    cfg.add_argument("--config", metavar="HOSTS_YAML", help="hosts file (default RTPHELPER_HOSTS_FILE or config/hosts.yaml)")
    cfg.add_argument("--env-file", dest="env_file", metavar="FILE", help="runtime env file (default RTPHELPER_ENV_FILE or config/runtime.env)")
    cfg.add_argument("--json", action="store_true")
    cfg.set_defaults(handler=_config)

    from rtpcore.capture.cli import add_capture_parser, add_diagnose_parser
    add_capture_parser(sub)
    add_diagnose_parser(sub)
    return p


def _call_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sip", required=True, metavar="FILE", help="SIP pcap/pcapng of the call")
    p.add_argument("--direction", required=True, choices=("inbound", "outbound"))
    p.add_argument("--call-id", dest="call_id", help="select the call by Call-ID")
    p.add_argument("--number", help="select the call by caller or callee number")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="rtphelper: %(levelname)s: %(message)s",
                        stream=sys.stderr)
    handler: Handler = args.handler
    try:
        return handler(args)
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
    except KeyboardInterrupt:
        print(f"rtphelper {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last resort: one line, the traceback only with --debug
        if args.debug:
            traceback.print_exc()
        print(f"rtphelper {args.command}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
