"""Selective reading (issue 12): a 40 MB session of 4 MB chunks gives byte-identical outputs to a full scan while
reading a fraction of it; a wrong skip, a missing or a corrupt index shows in the report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtpcore.errors import NoMediaMatchError
from rtpcore.pcap.index import index_path, read_index
from rtpcore.pipeline import correlate
from rtpcore.report import CorrelationReport
from rtpcore.settings import load_settings

from tests.small_session import HOSTS, small_session


@pytest.fixture
def session(tmp_path: Path):  # noqa: ANN201 - bench.session_gen.Session
    """A fresh generated session (rolling chunks with the sidecars a capture writes), the call mid-session."""
    return small_session(tmp_path / "session")


def run(session, out: Path, *, select: bool, margin: float = 10.0) -> CorrelationReport:  # noqa: ANN001
    settings = load_settings({}).model_copy(update={"media_select": select, "media_select_margin_seconds": margin})
    return correlate(session.sip, "inbound", [session.root / "raw"], out, settings=settings)


def outputs(out: Path) -> dict[str, bytes]:
    """Every committed output file (combined finals, per-file decrypted) by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("combined", "decrypted")
            for p in sorted((out / sub).glob("*.pcap"))}


def decisions(report: CorrelationReport) -> dict[str, dict]:
    media = report.to_json()["media_read"]
    return {Path(f["source"]).name: f for f in media["files"]}


@pytest.mark.parametrize("margin", [10.0, 0.0])  # 0: the windows alone must hold every packet the demux keeps
def test_selective_outputs_are_byte_identical_to_a_full_scan_and_read_a_fraction(
    session, tmp_path: Path, margin: float,
) -> None:
    full = run(session, tmp_path / "full", select=False)
    selective = run(session, tmp_path / "selective", select=True, margin=margin)

    assert outputs(tmp_path / "selective") == outputs(tmp_path / "full")
    assert len(outputs(tmp_path / "full")) >= 4
    assert [leg["packets"] for leg in selective.to_json()["legs"]] == [leg["packets"] for leg in full.to_json()["legs"]]
    media = selective.to_json()["media_read"]
    assert media["bytes_total"] == sum(p.stat().st_size for p in session.chunks)
    assert media["bytes_read"] < media["bytes_total"] / 2
    read = [n for n, f in decisions(selective).items() if f["how"] != "skipped"]
    skipped = [n for n, f in decisions(selective).items() if f["how"] == "skipped"]
    assert skipped and all("outside the call's windows" in decisions(selective)[n]["why"] for n in skipped)
    per_host: dict[str, int] = {}
    for name in read:
        per_host[name.rsplit("-", 1)[0]] = per_host.get(name.rsplit("-", 1)[0], 0) + 1
    assert set(per_host) == {f"eu-west-1-media-{h + 1}" for h in range(HOSTS)} and max(per_host.values()) <= 2
    text = selective.text()
    assert f"media read: {len(read)} of {len(session.chunks)} raw file(s)" in text
    assert all(f"media skipped: {session.root / 'raw' / n}" in text for n in skipped)
    assert full.to_json()["media_read"]["bytes_read"] == media["bytes_total"]


def test_a_wrong_skip_is_visible_in_the_report(session, tmp_path: Path) -> None:
    full = run(session, tmp_path / "full", select=False)
    carrying = [f.source.name for f in full.files if f.kept_packets]
    victim = session.root / "raw" / carrying[0]
    doc = json.loads(index_path(victim).read_text())
    hour = 3600 * 10**9  # a lying index (same size, so trusted): its times one hour early
    doc.update(first_ns=doc["first_ns"] - hour, last_ns=doc["last_ns"] - hour,
               seeks=[[ts - hour, off] for ts, off in doc["seeks"]])
    index_path(victim).write_text(json.dumps(doc))

    try:
        selective = run(session, tmp_path / "selective", select=True)
    except NoMediaMatchError as exc:  # the call was all in that chunk: the error lists the skip and its reason
        lines = str(exc).splitlines()
    else:
        assert selective.leg_packets("carrier") < full.leg_packets("carrier")
        decision = decisions(selective)[victim.name]
        assert decision["how"] == "skipped"
        lines = selective.text().splitlines() + selective.markdown().splitlines()
    assert any(victim.name in line and "skipped" in line and "indexed: packets" in line
               and "outside the call's windows" in line for line in lines), lines


def test_missing_and_corrupt_indexes_fall_back_and_stay_identical(session, tmp_path: Path) -> None:
    full = run(session, tmp_path / "full", select=False)
    host1 = [p for p in session.chunks if "media-1-" in p.name]
    host2 = [p for p in session.chunks if "media-2-" in p.name]
    for chunk in host1:  # an imported folder: no sidecars at all
        index_path(chunk).unlink()
    corrupt = next(f.source for f in full.files if f.kept_packets and "media-2-" in f.source.name) \
        if any(f.kept_packets and "media-2-" in f.source.name for f in full.files) else host2[len(host2) // 2]
    index_path(corrupt).write_text('{"version": 1, "chunk": ')

    selective = run(session, tmp_path / "selective", select=True)
    assert outputs(tmp_path / "selective") == outputs(tmp_path / "full")
    found = decisions(selective)
    warnings = selective.to_json()["warnings"]
    assert any(str(index_path(corrupt)) in w and "corrupt index" in w and "rebuilt" in w for w in warnings)
    assert found[corrupt.name]["warning"] and "rebuilt by reading the whole chunk" in found[corrupt.name]["warning"]
    bounded = [p.name for p in host1 if found[p.name]["how"] == "skipped"]
    assert bounded and all("no index; bounded" in found[n]["why"] for n in bounded)
    indexed_now = [p for p in host1 if found[p.name]["how"] == "bounded"]
    assert indexed_now and all("no index: built by reading the whole chunk" in found[p.name]["why"]
                               for p in indexed_now)
    for chunk in indexed_now:  # cached next to the chunk for the next correlation
        cached = read_index(chunk)
        assert cached is not None and cached.built == "lazy"
    assert not any(index_path(p).exists() for p in host1 if p.name in bounded)
