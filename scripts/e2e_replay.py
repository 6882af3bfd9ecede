#!/usr/bin/env python3
"""Replay local end-to-end cases: every e2e-tests/<case>/ runs the correlation again in a sandbox.

A case is a copy of a real session folder (never committed: real captures are large and private):

    e2e-tests/<case>/<timestamp>/raw/…              raw media chunks
    e2e-tests/<case>/<timestamp>/uploads/<sip>.pcap the SIP capture
    e2e-tests/<case>/<timestamp>/<run-name>.csv     the run's logs as the Prefect UI downloads them
                                                    ("Download" on the run's Logs tab; or rtp-capture-tool-logs-*.txt)

The log may also sit in <case>/. The latest timestamp folder of a case wins. The direction comes from the
log's "Direction: …" line
(and the call from a "Call-ID: …" line when present). An optional <case>/expected.json (a saved
`rtphelper correlate --json` report) is compared leg by leg and stream by stream. Every case runs on
a copy in a temporary folder, so the case folders are never written; a failing case does not stop
the others; the summary lists each case and the exit code is non-zero when any failed.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rtpcore.errors import RtpCoreError  # noqa: E402
from rtpcore.pipeline import correlate  # noqa: E402

DIRECTION = re.compile(r"\bDirection:\s*(inbound|outbound)\b", re.IGNORECASE)
CALL_ID = re.compile(r"\bCall-ID:\s*(\S+)")


@dataclass
class CaseResult:
    name: str
    ok: bool
    detail: str
    seconds: float


def _latest_session(case: Path) -> Path:
    stamps = sorted(p for p in case.iterdir() if p.is_dir() and (p / "raw").is_dir())
    if not stamps:
        raise RtpCoreError(f"{case}: no <timestamp>/raw/ folder")
    return stamps[-1]


# The header of the CSV that the Prefect UI's "Download" (GET /api/flow_runs/{id}/logs/download) returns.
PREFECT_LOG_EXPORT_HEADER = ["timestamp", "level", "flow_run_id", "task_run_id", "message"]
LOG_PATTERNS = ("*.csv", "rtp-capture-tool-logs-*.txt")


def _log_text(path: Path) -> str | None:
    """A log's lines: a Prefect UI export (CSV, messages may span lines) or the seed's text export; else None."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if path.suffix != ".csv":
        return text
    rows = csv.reader(io.StringIO(text))
    if next(rows, None) != PREFECT_LOG_EXPORT_HEADER:
        return None  # some other CSV in the case folder
    return "\n".join(row[-1] for row in rows if len(row) == len(PREFECT_LOG_EXPORT_HEADER))


def _from_logs(session: Path) -> tuple[str, str | None]:
    found = [p for folder in (session, session.parent) for pattern in LOG_PATTERNS for p in sorted(folder.glob(pattern))]
    texts = [(p, t) for p in found if (t := _log_text(p)) is not None]
    if not texts:
        raise RtpCoreError(f"{session}: no log to read the direction from: put the run's log export there "
                           "(the Prefect UI's Download on the run's Logs tab, a .csv) or rtp-capture-tool-logs-*.txt")
    direction = call_id = None
    for _, text in texts:
        direction = direction or (m.group(1).lower() if (m := DIRECTION.search(text)) else None)
        call_id = call_id or (m.group(1) if (m := CALL_ID.search(text)) else None)
    if direction is None:
        raise RtpCoreError(f"{texts[0][0]}: no 'Direction: inbound|outbound' line")
    return direction, call_id


def _compare(expected: dict, got: dict) -> list[str]:
    problems = []
    for key in ("call_id", "direction"):
        if expected.get(key) != got.get(key):
            problems.append(f"{key}: expected {expected.get(key)!r}, got {got.get(key)!r}")
    want = {leg["name"]: leg for leg in expected.get("legs", [])}
    have = {leg["name"]: leg for leg in got.get("legs", [])}
    for name, leg in want.items():
        if name not in have:
            problems.append(f"leg {name} missing")
            continue
        if leg.get("endpoints") != have[name].get("endpoints"):
            problems.append(f"leg {name}: endpoints {have[name].get('endpoints')} != {leg.get('endpoints')}")
        ws = {(s["src"], s["dst"], s["kind"]): s for s in leg.get("streams", [])}
        hs = {(s["src"], s["dst"], s["kind"]): s for s in have[name].get("streams", [])}
        for k, s in ws.items():
            h = hs.get(k)
            if h is None or (h["packets"], h["decrypted"]) != (s["packets"], s["decrypted"]):
                problems.append(f"leg {name} stream {k}: {h and (h['packets'], h['decrypted'])} != {(s['packets'], s['decrypted'])}")
    return problems


def run_case(case: Path) -> CaseResult:
    started = time.monotonic()
    try:
        session = _latest_session(case)
        direction, call_id = _from_logs(session)
        with tempfile.TemporaryDirectory(prefix=f"e2e-{case.name}-") as tmp:
            sandbox = Path(tmp) / session.name
            shutil.copytree(session, sandbox)
            sips = sorted(p for p in (sandbox / "uploads").iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))
            if len(sips) != 1:
                raise RtpCoreError(f"{session}/uploads: expected one SIP capture, found {len(sips)}")
            report = correlate(sips[0], direction, [sandbox / "raw"], sandbox / "out", call_id=call_id)
            doc = report.to_json()
            expected = case / "expected.json"
            problems = _compare(json.loads(expected.read_text()), doc) if expected.is_file() else []
            if problems:
                return CaseResult(case.name, False, "; ".join(problems), time.monotonic() - started)
            streams = sum(len(leg["streams"]) for leg in doc["legs"])
            decrypted = sum(s["decrypted"] for leg in doc["legs"] for s in leg["streams"])
            return CaseResult(case.name, True, f"{direction}, {len(doc['legs'])} legs, {streams} streams, "
                              f"{decrypted} packets decrypted", time.monotonic() - started)
    except RtpCoreError as exc:
        return CaseResult(case.name, False, str(exc).splitlines()[0], time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others
        traceback.print_exc()
        return CaseResult(case.name, False, f"{type(exc).__name__}: {exc}", time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(REPO / "e2e-tests"), help="folder of cases (default e2e-tests/)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    cases = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not cases:
        print(f"e2e: no cases in {root} — see scripts/e2e_replay.py for how to make one")
        return 0
    results = []
    for case in cases:
        r = run_case(case)
        results.append(r)
        print(f"{'PASS' if r.ok else 'FAIL'}  {r.name}  ({r.seconds:.1f} s)  {r.detail}", flush=True)
    failed = sum(not r.ok for r in results)
    print(f"e2e: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
