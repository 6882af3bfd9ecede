"""`rtphelper report SESSION_OR_OUT_DIR`: rebuild combined/report.html, report.md, the SVGs and WAVs from the files on disk.

What it reads: combined/media_decrypted.pcap (else media_raw.pcap); the SIP pcap from --sip, else the path a
JSON in the folder recorded ("sip" in combined/analysis.json or a correlation JSON), else the one capture in the session's uploads/, else the call's SIP inside
combined/SIP_plus_media_decrypted.pcap; the direction and Call-ID from the options or that JSON; the verdicts from
combined/analysis.json ("verdicts", absent → none).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtpcore.errors import InputError
from rtpcore.literals import DIRECTIONS, is_direction
from rtpcore.results import COMBINED_DIR, MEDIA_DECRYPTED, MEDIA_RAW, SIP_PLUS_MEDIA

EXIT_OK = 0
ANALYSIS_JSON = "analysis.json"
UPLOADS_DIR = "uploads"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
RECORDED_SIP_KEYS = ("sip", "sip_pcap")


class ReportInputError(InputError):
    """The folder, a JSON in it or an option cannot give what the report needs; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ReportInputs:
    """What the rebuild found on disk."""

    root: Path
    media: Path
    sip: Path | None
    sip_origin: str            # where the SIP pcap came from, in words
    direction: str | None
    call_id: str | None
    verdicts: tuple[Mapping[str, Any], ...]
    dtmf_relay: tuple[Mapping[str, Any], ...] = ()


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """The report subcommand's options."""
    p.add_argument("folder", metavar="SESSION_OR_OUT_DIR", type=Path,
                   help="a session folder or a correlate --out folder (the one holding combined/)")
    p.add_argument("--sip", metavar="FILE", type=Path, help="SIP pcap of the call (default: found in the folder)")
    p.add_argument("--direction", choices=DIRECTIONS, help="call direction (default: recorded in the folder)")
    p.add_argument("--call-id", dest="call_id", help="select the call by Call-ID (default: recorded, else the only one)")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from disk, or a clear error naming the file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot be read as JSON ({exc}); fix or remove the file") from None
    if not isinstance(doc, dict):
        raise ReportInputError(f"{path}: holds a JSON {type(doc).__name__}, not an object; fix or remove the file")
    return doc


def _root(folder: Path) -> Path:
    """The folder that holds combined/ (a combined/ folder given directly is accepted too)."""
    if (folder / COMBINED_DIR).is_dir():
        return folder
    if folder.name == COMBINED_DIR and folder.is_dir():
        return folder.parent
    raise ReportInputError(f"{folder}: no {COMBINED_DIR}/ folder here; give a session folder or the --out folder of "
                           f"'rtphelper correlate' (it holds {COMBINED_DIR}/{MEDIA_DECRYPTED})")


def _objects(doc: Mapping[str, Any], key: str, path: Path) -> tuple[Mapping[str, Any], ...]:
    """A list of objects of analysis.json (verdicts, dtmf_relay); absent → none."""
    found = doc.get(key) or []
    if not isinstance(found, list) or not all(isinstance(v, dict) for v in found):
        raise ReportInputError(f"{path}: \"{key}\" must be a list of objects; fix or remove the file")
    return tuple(found)


def _recorded(root: Path) -> dict[str, Any]:
    """Direction, Call-ID and SIP path recorded by a correlation JSON (one with "legs" and "direction") in the folder."""
    for path in sorted([*root.glob("*.json"), *(root / COMBINED_DIR).glob("*.json")]):
        if path.name == ANALYSIS_JSON:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not ours: other JSON files in a session folder are not the report's business
        if isinstance(doc, dict) and "legs" in doc and "direction" in doc:
            doc["_path"] = str(path)
            return doc
    return {}


def _find_sip(root: Path, given: Path | None, recorded: Sequence[Mapping[str, Any]]) -> tuple[Path | None, str]:
    """The SIP pcap and where it came from; several captures in uploads/ is an error asking for --sip."""
    if given is not None:
        if not given.is_file():
            raise ReportInputError(f"--sip {given}: no such file; give the SIP pcap of the call")
        return given, "--sip"
    for doc in recorded:
        for key in RECORDED_SIP_KEYS:
            value = doc.get(key)
            if isinstance(value, str) and Path(value).is_file():
                return Path(value), f"recorded in {doc['_path']}"
    uploads = sorted(p for p in (root / UPLOADS_DIR).glob("*") if p.suffix.lower() in CAPTURE_SUFFIXES and p.is_file())
    if len(uploads) == 1:
        return uploads[0], f"{UPLOADS_DIR}/"
    if len(uploads) > 1:
        names = ", ".join(p.name for p in uploads)
        raise ReportInputError(f"{root / UPLOADS_DIR}: {len(uploads)} captures ({names}); choose the call's SIP pcap "
                               "with --sip")
    combined_sip = root / COMBINED_DIR / SIP_PLUS_MEDIA
    if combined_sip.is_file():
        return combined_sip, f"the SIP inside {COMBINED_DIR}/{SIP_PLUS_MEDIA}"
    return None, "none"


def find_inputs(folder: Path, *, sip: Path | None = None, direction: str | None = None,
                call_id: str | None = None) -> ReportInputs:
    """Everything `rtphelper report` needs from the folder and the options, or a ReportInputError saying what to give."""
    root = _root(Path(folder))
    combined = root / COMBINED_DIR
    media = next((combined / n for n in (MEDIA_DECRYPTED, MEDIA_RAW) if (combined / n).is_file()), None)
    if media is None:
        raise ReportInputError(f"{combined}: neither {MEDIA_DECRYPTED} nor {MEDIA_RAW} is here; run 'rtphelper "
                               f"correlate --out {root}' first")
    analysis_json = combined / ANALYSIS_JSON
    analysis_doc = _read_json(analysis_json) if analysis_json.is_file() else {}
    recorded = _recorded(root)
    sip_path, origin = _find_sip(root, sip, [{**analysis_doc, "_path": str(analysis_json)}, recorded])
    chosen = direction or analysis_doc.get("direction") or recorded.get("direction")
    if sip_path is not None and not (isinstance(chosen, str) and is_direction(chosen)):
        raise ReportInputError(f"{root}: the call direction is not recorded here; give --direction "
                               f"{' or '.join(DIRECTIONS)}")
    picked_id = call_id or analysis_doc.get("call_id") or recorded.get("call_id")
    return ReportInputs(root, media, sip_path, origin, chosen if isinstance(chosen, str) else None,
                        picked_id if isinstance(picked_id, str) else None, _objects(analysis_doc, "verdicts", analysis_json),
                        _objects(analysis_doc, "dtmf_relay", analysis_json))


def report_command(args: argparse.Namespace) -> int:
    """Handler of `rtphelper report` (the analysis and SIP modules load only when the command runs)."""
    from rtpcore.analysis.call import analyze_capture
    from rtpcore.analysis.report_html import write_call_report
    from rtpcore.sip.legs import resolve_legs

    found = find_inputs(args.folder, sip=args.sip, direction=args.direction, call_id=args.call_id)
    plan = None
    if found.sip is not None and found.direction is not None:
        plan = resolve_legs(found.sip, found.direction, call_id=found.call_id)
    analysis = analyze_capture(found.media, sip=found.sip)
    written = write_call_report(found.root, analysis=analysis, verdicts=found.verdicts, plan=plan, sip_pcap=found.sip,
                                dtmf_relay=found.dtmf_relay)
    print(f"media: {found.media}")
    print(f"SIP: {found.sip if found.sip is not None else 'none found: no ladder'} ({found.sip_origin})")
    print(f"verdicts: {len(found.verdicts)}")
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK
