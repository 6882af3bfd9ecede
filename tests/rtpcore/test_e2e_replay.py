"""The replay runner: cases found, direction read from the log, failures reported, others still run."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import e2e_replay  # noqa: E402

from rtpcore.pipeline import correlate  # noqa: E402


def _case(root: Path, name: str, call: Path, log_text: str, stamp: str = "20260115_100000") -> Path:
    session = root / name / stamp
    (session / "uploads").mkdir(parents=True)
    shutil.copytree(call / "media", session / "raw")
    shutil.copy(call / "sip.pcap", session / "uploads" / "sip.pcap")
    (session / "rtp-capture-tool-logs-1.txt").write_text(log_text)
    return session


def test_replay_runs_every_case_and_keeps_going(generated, tmp_path: Path, capsys) -> None:
    inbound, outbound = generated("inbound-b2bua"), generated("outbound-proxy")
    root = tmp_path / "e2e-tests"
    _case(root, "a-inbound", inbound, "2026-01-15 10:00:00 | INFO | flow | Direction: inbound\n")
    # an older timestamp folder of the same case must be ignored
    _case(root, "b-outbound", inbound, "INFO: Direction: inbound\n", stamp="20250101_000000")
    _case(root, "b-outbound", outbound, "INFO: Direction: outbound\n")
    _case(root, "c-no-direction", inbound, "nothing useful here\n")
    report = correlate(inbound / "sip.pcap", "inbound", [inbound / "media"], tmp_path / "ref")
    (root / "a-inbound" / "expected.json").write_text(json.dumps(report.to_json()))
    before = sorted(p.name for p in (root / "a-inbound" / "20260115_100000").iterdir())

    code = e2e_replay.main([str(root)])
    out = capsys.readouterr().out
    assert code == 1
    assert "PASS  a-inbound" in out and "PASS  b-outbound" in out and "outbound, 2 legs" in out
    assert "FAIL  c-no-direction" in out and "no 'Direction: inbound|outbound' line" in out
    assert out.strip().endswith("e2e: 2 passed, 1 failed")
    assert sorted(p.name for p in (root / "a-inbound" / "20260115_100000").iterdir()) == before, "cases are never written"


def test_expected_mismatch_fails(generated, tmp_path: Path, capsys) -> None:
    call = generated("inbound-proxy")
    root = tmp_path / "e2e"
    _case(root, "x", call, "Direction: inbound\n")
    report = correlate(call / "sip.pcap", "inbound", [call / "media"], tmp_path / "ref").to_json()
    report["legs"][0]["streams"][0]["packets"] += 1
    (root / "x" / "expected.json").write_text(json.dumps(report))
    assert e2e_replay.main([str(root)]) == 1
    assert "FAIL  x" in capsys.readouterr().out


def test_no_cases(tmp_path: Path, capsys) -> None:
    assert e2e_replay.main([str(tmp_path / "none")]) == 0
    assert "no cases" in capsys.readouterr().out
