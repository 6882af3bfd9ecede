"""report.html / report.md: every stream, leg and verdict listed, SVGs inline, audio and pcaps linked, no key, atomic;
and `rtphelper report` rebuilding them from a folder (exit 2 with a clear message on bad input)."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rtpcore.analysis.call import analyze_capture
from rtpcore.analysis.report_html import write_call_report
from rtpcore.cli import main
from rtpcore.errors import PcapError
from rtpcore.sip.legs import resolve_legs
from tests.conftest import load_truth

INLINE_KEY = re.compile(rb"inline:([A-Za-z0-9+/=]+)")
KEY_PREFIX = 8
PCAPS = ("media_raw.pcap", "media_decrypted.pcap", "SIP_plus_media_decrypted.pcap")
TEXT_OUTPUTS = ("report.html", "report.md", "ladder.svg", "timeline.svg")


def verdicts_for_test(secret: str = "") -> list[dict[str, Any]]:
    """Three verdicts in helper D's shape, listed info first so the report must sort them."""
    return [
        {"leg": "carrier", "direction": "carrier→host", "kind": "late-start", "severity": "info",
         "text": "audio started 0.2 s after the 200 OK", "evidence": {"delay_s": 0.2}},
        {"leg": "core", "direction": "host→core", "kind": "no-relay", "severity": "error",
         "text": "carrier audio not relayed to the core" + (f" (offer a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                                                            f"inline:{secret}|2^31)" if secret else ""),
         "evidence": {"packets": 0, "sdp": f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{secret}" if secret else ""}},
        {"leg": "core", "direction": "core→host", "kind": "ssrc-change", "severity": "warning",
         "text": "SSRC changed at 4.1 s", "evidence": {"at_s": 4.1, "ssrcs": ["0x1", "0x2"]}},
    ]


class Page(HTMLParser):
    """What a reader of the HTML gets: table rows by table class, audio sources, links, inline SVG count."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.audio: list[str] = []
        self.links: list[str] = []
        self.svgs = 0
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_body = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("class") or ""
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "audio":
            self.audio.append(a.get("src") or "")
        elif tag == "a":
            self.links.append(a.get("href") or "")
        elif tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _correlate(folder: Path, out: Path) -> Path:
    from rtpcore.pipeline import correlate

    truth = load_truth(folder)
    correlate(folder / truth["sip"], truth["direction"], [folder / "media"], out)
    return out


@pytest.fixture(scope="module")
def b2bua(generated, tmp_path_factory) -> tuple[Path, Path]:
    """(variant folder, correlate --out folder) of a B2BUA call."""
    folder = generated("inbound-b2bua")
    return folder, _correlate(folder, tmp_path_factory.mktemp("report") / "out")


def _report(folder: Path, out: Path, verdicts: list[dict[str, Any]]) -> list[Path]:
    truth = load_truth(folder)
    sip = folder / truth["sip"]
    analysis = analyze_capture(out / "combined" / "media_decrypted.pcap", sip=sip)
    return write_call_report(out, analysis=analysis, verdicts=verdicts, plan=resolve_legs(sip, truth["direction"]),
                             sip_pcap=sip)


def test_report_lists_every_stream_leg_and_verdict_with_svgs_audio_and_pcaps(b2bua) -> None:
    folder, out = b2bua
    written = _report(folder, out, verdicts_for_test())
    combined = out / "combined"
    assert all(p.is_file() for p in written)
    assert {p.name for p in written} >= set(TEXT_OUTPUTS)
    analysis = analyze_capture(combined / "media_decrypted.pcap")
    page = Page((combined / "report.html").read_text())
    streams = page.tables["streams"]
    assert len(streams) == len(analysis.streams) == 4
    assert sorted(r[2] for r in streams) == sorted(f"0x{s.stats.ssrc:08X}" for s in analysis.streams)
    assert sorted(r[5] for r in streams) == sorted(str(s.stats.packets) for s in analysis.streams)
    assert {r[0] for r in streams} == {"carrier", "core"}
    assert [r[0] for r in page.tables["verdicts"]] == ["error", "warning", "info"]
    assert page.tables["verdicts"][0][4] == "carrier audio not relayed to the core"
    assert "packets=0" in page.tables["verdicts"][0][5]
    assert [r[0] for r in page.tables["legs"]] == ["carrier", "core"]
    assert page.svgs == 2
    wavs = [p for p in written if p.suffix == ".wav"]
    assert len(page.audio) == len(wavs) == 6 and all((combined / src).is_file() for src in page.audio)
    assert set(PCAPS) <= set(page.links) and all((combined / name).is_file() for name in PCAPS)
    md = (combined / "report.md").read_text()
    assert sum(1 for line in md.splitlines() if line.startswith("| ") and " → " in line and "0x" in line) == 4
    assert "](ladder.svg)" in md and "](timeline.svg)" in md and md.count("](audio/") == 6


def _keys(folder: Path) -> set[str]:
    """Every SDES key of the variant: from the SIP pcap's SDP and from the generator's truth."""
    truth = load_truth(folder)
    keys = {k.decode() for k in INLINE_KEY.findall((folder / truth["sip"]).read_bytes())}
    return keys | {s["key"] for s in truth["streams"] if s.get("key")}


@pytest.mark.parametrize("name", ["srtp-both-legs", "wrong-key", "broken-key-bad-base64"])
def test_no_key_material_in_any_report_file(name: str, generated, tmp_path: Path) -> None:
    folder = generated(name)
    out = _correlate(folder, tmp_path / "out")
    keys = _keys(folder)
    assert len(keys) >= 4
    _report(folder, out, verdicts_for_test(secret=sorted(keys)[0]))
    for name in TEXT_OUTPUTS:
        text = (out / "combined" / name).read_text()
        assert "AES_CM_128_HMAC_SHA1_80" in text or name == "timeline.svg"
        leaked = [k for k in keys if k[:KEY_PREFIX] in text]
        assert not leaked, f"{name} holds key material"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fault", ["media-unreadable", "verdict-unprintable"])
def test_a_failed_rebuild_leaves_the_previous_report_whole(fault: str, b2bua, tmp_path: Path) -> None:
    folder, out = b2bua
    work = tmp_path / "out"
    shutil.copytree(out, work)
    _report(folder, work, verdicts_for_test())
    before = _snapshot(work / "combined")
    truth = load_truth(folder)
    sip = folder / truth["sip"]
    analysis = analyze_capture(work / "combined" / "media_decrypted.pcap", sip=sip)
    verdicts = verdicts_for_test()
    if fault == "media-unreadable":             # the WAVs are read from it after the analysis
        (work / "combined" / "media_decrypted.pcap").write_bytes(b"not a pcap")
        before.pop("media_decrypted.pcap")
    else:                                       # rendering fails after the WAVs were written
        verdicts[0]["evidence"] = {"odd": Unprintable()}
    with pytest.raises((PcapError, RuntimeError)):
        write_call_report(work, analysis=analysis, verdicts=verdicts, plan=resolve_legs(sip, truth["direction"]),
                          sip_pcap=sip)
    after = _snapshot(work / "combined")
    if fault == "media-unreadable":
        after.pop("media_decrypted.pcap")
    assert after == before                        # nothing replaced, nothing half-written, no temp file left
    _report(folder, out, [])                      # a good rebuild replaces the set and leaves no temp either
    assert not [p for p in (out / "combined").rglob(".*")]


class Unprintable:
    """An evidence value whose text cannot be made: the report must fail before touching the old one."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this evidence")


# -- rtphelper report ------------------------------------------------------------------------------------------------

@pytest.fixture()
def session(b2bua, tmp_path: Path) -> Iterator[Path]:
    """A session folder: uploads/ with the SIP pcap, combined/ from the correlation, no report yet."""
    folder, out = b2bua
    root = tmp_path / "session"
    (root / "uploads").mkdir(parents=True)
    shutil.copy(folder / "sip.pcap", root / "uploads" / "call.pcap")
    shutil.copytree(out / "combined", root / "combined",
                    ignore=shutil.ignore_patterns("report.*", "*.svg", "audio", "analysis.json"))
    yield root


def test_cli_rebuilds_from_a_session_with_the_verdicts_of_analysis_json(session: Path, capsys) -> None:
    (session / "combined" / "analysis.json").write_text(json.dumps({"verdicts": verdicts_for_test()}))
    assert main(["report", str(session), "--direction", "inbound"]) == 0
    printed = capsys.readouterr().out
    assert f"SIP: {session / 'uploads' / 'call.pcap'}" in printed and "verdicts: 3" in printed
    page = Page((session / "combined" / "report.html").read_text())
    assert len(page.tables["verdicts"]) == 3 and len(page.tables["streams"]) == 4 and page.svgs == 2


def test_cli_needs_no_option_when_analysis_json_records_the_call(session: Path, capsys) -> None:
    sip = session / "uploads" / "call.pcap"
    shutil.copy(sip, session / "uploads" / "retry.pcap")     # two uploads: only the recorded path decides
    doc = {"direction": "inbound", "sip": str(sip), "verdicts": verdicts_for_test()[:1]}
    (session / "combined" / "analysis.json").write_text(json.dumps(doc))
    assert main(["report", str(session)]) == 0
    printed = capsys.readouterr().out
    assert f"SIP: {sip} (recorded in {session / 'combined' / 'analysis.json'})" in printed and "verdicts: 1" in printed


@pytest.mark.parametrize("records_sip", [True, False])
def test_cli_takes_direction_call_and_sip_from_a_recorded_correlation_json(records_sip: bool, session: Path,
                                                                           capsys) -> None:
    from rtpcore.sip.legs import resolve_legs as legs

    elsewhere = session.parent / "call-elsewhere.pcap"
    (session / "uploads" / "call.pcap").rename(elsewhere)
    (session / "combined" / "analysis.json").unlink(missing_ok=True)  # an older correlation: only its JSON was kept
    doc = legs(elsewhere, "inbound").to_json()
    if records_sip:
        doc["sip"] = str(elsewhere)
    (session / "combined" / "correlation.json").write_text(json.dumps(doc))
    assert main(["report", str(session / "combined")]) == 0
    printed = capsys.readouterr().out
    if records_sip:
        assert f"SIP: {elsewhere} (recorded in {session / 'combined' / 'correlation.json'})" in printed
    else:   # the call's SIP is inside the combined pcap
        assert "SIP: " + str(session / "combined" / "SIP_plus_media_decrypted.pcap") in printed
    page = Page((session / "combined" / "report.html").read_text())
    assert page.svgs == 2 and [r[0] for r in page.tables["legs"]] == ["carrier", "core"]


def test_without_sip_there_is_no_ladder_and_an_old_one_is_removed(b2bua, tmp_path: Path) -> None:
    folder, out = b2bua
    work = tmp_path / "out"
    shutil.copytree(out, work)
    _report(folder, work, [])
    assert (work / "combined" / "ladder.svg").is_file()
    analysis = analyze_capture(work / "combined" / "media_decrypted.pcap")
    written = write_call_report(work, analysis=analysis, verdicts=[], plan=None, sip_pcap=None)
    assert not (work / "combined" / "ladder.svg").exists() and "ladder.svg" not in {p.name for p in written}
    page = Page((work / "combined" / "report.html").read_text())
    assert page.svgs == 1 and len(page.tables["streams"]) == 4 and "legs" not in page.tables
    assert "no SIP pcap: no ladder" in (work / "combined" / "report.html").read_text()


@pytest.mark.parametrize("setup, needle", [
    ("no-direction", "give --direction inbound or outbound"),
    ("broken-analysis", "analysis.json: cannot be read as JSON"),
    ("verdicts-not-list", "\"verdicts\" must be a list of objects"),
    ("two-uploads", "2 captures (call.pcap, other.pcap); choose the call's SIP pcap with --sip"),
    ("no-combined", "no combined/ folder here"),
    ("missing-sip", "--sip"),
])
def test_cli_bad_input_exits_2_naming_what_to_fix(setup: str, needle: str, session: Path, capsys) -> None:
    args = ["report", str(session), "--direction", "inbound"]
    if setup == "no-direction":
        args = args[:2]
    elif setup == "broken-analysis":
        (session / "combined" / "analysis.json").write_text("{\"verdicts\": [")
    elif setup == "verdicts-not-list":
        (session / "combined" / "analysis.json").write_text("{\"verdicts\": \"none\"}")
    elif setup == "two-uploads":
        shutil.copy(session / "uploads" / "call.pcap", session / "uploads" / "other.pcap")
    elif setup == "no-combined":
        args[1] = str(session / "uploads")
    else:
        args += ["--sip", str(session / "absent.pcap")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("rtphelper report: error: ")
    assert not (session / "combined" / "report.html").exists()


def test_every_correlation_writes_the_report_and_report_rebuilds_it_with_no_option(generated, tmp_path: Path,
                                                                                  capsys) -> None:
    folder = generated("dead-relay")
    truth = load_truth(folder)
    out = tmp_path / "out"
    assert main(["correlate", "--sip", str(folder / truth["sip"]), "--direction", truth["direction"],
                 "--media", str(folder / "media"), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    html = out / "combined" / "report.html"
    assert doc["report_file"] == str(html)
    page = Page(html.read_text())
    kinds = sorted(v["kind"] for v in truth["verdicts"])
    assert kinds and len(page.tables["verdicts"]) == len(kinds)
    assert sorted(k for k in kinds if any(k in " ".join(row) for row in page.tables["verdicts"])) == kinds
    assert page.svgs == 2 and page.audio and all((out / "combined" / a).is_file() for a in page.audio)
    first = html.read_bytes()
    html.unlink()
    assert main(["report", str(out)]) == 0          # direction, Call-ID and SIP come from combined/analysis.json
    assert html.read_bytes() == first
