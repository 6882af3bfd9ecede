"""Sessions first-class: a session from its folder, raw/ or S3 URL; states from manifest and outputs; no orphans."""
from __future__ import annotations

from pathlib import Path

import pytest

from rtpcore.capture.manifest import Manifest
from rtpcore.desk.sessions import (
    STATE_CAPTURED, STATE_CAPTURING, STATE_CORRELATED, STATE_FAILED, folder_hint, list_local_sessions,
    list_s3_sessions, recent_sessions, resolve_session, sessions_table,
)
from rtpcore.errors import InputError
from rtpcore.pcap.rolling import ChunkInfo
from rtpcore.pipeline import SessionPaths
from rtpcore.session import discard_if_unused, find_raw, new_session, ref_for_url, session_from_summary
from rtpcore.settings import load_settings
from tests.storage.conftest import BUCKET, MotoServer, moto_server, point_cli_at  # noqa: F401


def _chunk(name: str) -> ChunkInfo:
    return ChunkInfo(name, Path(name), 1, 10, 1000, 1, 2, "0" * 64, "stop")


def _capture(root: Path, folder: str, stamp: str, *, finished: bool, chunks: int, error: str = "") -> Path:
    s = root / folder / stamp
    (s / "raw").mkdir(parents=True)
    with Manifest.for_session(s) as m:
        m.start(hosts=["mh1"])
        for i in range(chunks):
            (s / "raw" / f"mh1-{i:04d}.pcap").write_bytes(b"x")
            m.append_chunk("mh1", "eth0", _chunk(f"mh1-{i:04d}.pcap"))
        if finished:
            m.finish(ended="deadline", hosts=[{"host": "mh1", "error": error or None}])
    return s


def test_states_newest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "captures"
    running = _capture(root, "ticket-1", "20260103_090000", finished=False, chunks=1)
    done = _capture(root, "ticket-1", "20260102_090000", finished=True, chunks=2)
    dead = _capture(root, "a/b", "20260101_090000", finished=True, chunks=0, error="mh1: connection refused (rpcapd)")
    correlated = _capture(root, "ticket-2", "20260104_090000", finished=True, chunks=1)
    (correlated / "combined").mkdir()
    (correlated / "combined" / "SIP_plus_media_decrypted.pcap").write_bytes(b"x")
    imported = new_session(root, "ticket-3", now=None)
    (imported.raw / "media.pcap").write_bytes(b"x")
    (root / "incoming" / "x" / "uploads").mkdir(parents=True)  # serve's upload area is no session
    rows = list_local_sessions(root)
    assert [(Path(r.location), r.state) for r in rows] == [
        (imported.root, STATE_CAPTURED), (correlated, STATE_CORRELATED), (running, STATE_CAPTURING),
        (done, STATE_CAPTURED), (dead, STATE_FAILED)]
    assert rows[-1].folder == "a/b" and "connection refused" in rows[-1].why
    assert "connection refused" in sessions_table(rows)
    assert [r.location for r in recent_sessions(root, load_settings({"RTPHELPER_STORAGE_MODE": "local"}), limit=2)] \
        == [str(imported.root), str(correlated)]


def test_a_session_from_its_root_raw_or_url(tmp_path: Path) -> None:
    root = tmp_path / "captures"
    s = _capture(root, "ticket-9", "20260101_101010", finished=True, chunks=1)
    assert find_raw(s) == s / "raw" and find_raw(s / "raw") == s / "raw"
    other = tmp_path / "media"
    other.mkdir()
    assert find_raw(other) == other
    for spec in (str(s), str(s / "raw"), f"{s}/"):
        ref = resolve_session(spec, root)
        assert (ref.root, ref.folder, ref.stamp, ref.media) == (s, "ticket-9", "20260101_101010", str(s / "raw"))
    url = resolve_session(f"s3://{BUCKET}/captures/PRD/ticket-9/20260101_101010/raw", root)
    assert url.url == f"s3://{BUCKET}/captures/PRD/ticket-9/20260101_101010/" and url.folder == "ticket-9"
    assert url.local_root(root) == root / "ticket-9" / "20260101_101010"
    with pytest.raises(InputError, match="not a capture run name"):
        resolve_session(str(tmp_path / "nope" / "x"), root)
    with pytest.raises(InputError, match="no raw/ inside"):
        resolve_session(str(other), root)
    with pytest.raises(InputError, match="name the session folder"):
        ref_for_url(f"s3://{BUCKET}/")
    assert session_from_summary("ok\n# Capture session `/srv/c/t/20260101_101010`\n") == "/srv/c/t/20260101_101010"


def test_run_names_from_parameters() -> None:
    assert folder_hint("", "/srv/captures/ticket-123/20260101_101010") == "ticket-123"
    assert folder_hint("/srv/captures/ticket-123/20260101_101010/raw") == "ticket-123"
    assert folder_hint("s3://b/captures/PRD/ticket-9/20260101_101010/") == "ticket-9"
    assert folder_hint("capture-prd-ticket-9") == "capture-prd-ticket-9"
    assert folder_hint("", "/tmp/out") == "out"


def test_failed_run_leaves_no_orphan_but_keeps_outputs(tmp_path: Path) -> None:
    paths = new_session(tmp_path, "ticket-4")
    (paths.uploads / "sip.pcap").write_bytes(b"x")
    assert discard_if_unused(paths, tmp_path / "ticket-4")
    assert not (tmp_path / "ticket-4").exists()
    kept = new_session(tmp_path, "ticket-5")
    (kept.combined / "media_raw.pcap").write_bytes(b"x")
    assert not discard_if_unused(kept, tmp_path / "ticket-5") and kept.root.is_dir()
    sibling = new_session(tmp_path, "ticket-5")
    assert discard_if_unused(SessionPaths(sibling.root), tmp_path / "ticket-5")
    assert kept.root.is_dir(), "another session of the same ticket stays"


def test_s3_sessions_are_listed_from_one_listing(moto_server: MotoServer, tmp_path: Path,  # noqa: F811
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    point_cli_at(monkeypatch, moto_server.endpoint)
    monkeypatch.chdir(tmp_path)
    client = moto_server.client()
    base = "captures/listing/PRD"
    client.put_object(Bucket=BUCKET, Key=f"{base}/t1/20260101_000000/raw/a.pcap", Body=b"x")
    client.put_object(Bucket=BUCKET, Key=f"{base}/t1/20260102_000000/raw/a.pcap", Body=b"x")
    client.put_object(Bucket=BUCKET, Key=f"{base}/t1/20260102_000000/combined/media_raw.pcap", Body=b"x")
    from rtpcore.storage.s3 import S3Storage

    rows = list_s3_sessions(S3Storage.from_settings(load_settings()), BUCKET, "captures/listing")
    assert [(r.location, r.state) for r in rows] == [
        (f"s3://{BUCKET}/{base}/t1/20260102_000000/", STATE_CORRELATED),
        (f"s3://{BUCKET}/{base}/t1/20260101_000000/", STATE_CAPTURED)]


def test_cli_sessions_and_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from rtpcore.cli import main

    monkeypatch.chdir(tmp_path)
    for key in ("RTPHELPER_STORAGE_MODE", "RTPHELPER_SERVE_URL", "PREFECT_API_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RTPHELPER_STORAGE_MODE", "local")
    root = tmp_path / "captures"
    s = _capture(root, "ticket-6", "20260101_101010", finished=True, chunks=1)
    assert main(["sessions", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0] == {"session": str(s), "folder": "ticket-6", "started": s.name,
                                                      "state": STATE_CAPTURED, "raw files": 1, "note": "1 chunk(s)"}
    assert main(["sessions", "--root", str(tmp_path / "none")]) == 2
    assert "no such capture root" in capsys.readouterr().err
    assert main(["links", str(s)]) == 2
    assert "no outputs yet" in capsys.readouterr().err
    (s / "combined").mkdir()
    (s / "combined" / "media_raw.pcap").write_bytes(b"x")
    monkeypatch.setenv("RTPHELPER_CAPTURE_ROOT", str(root))
    monkeypatch.setenv("RTPHELPER_SERVE_URL", "http://worker:8765")
    monkeypatch.setenv("RTPHELPER_SERVE_SECRET", "cli-secret-0001")
    assert main(["links", str(s), "--json"]) == 0
    url = json.loads(capsys.readouterr().out)["combined/media_raw.pcap"]
    assert url.startswith("http://worker:8765/files/ticket-6/20260101_101010/combined/media_raw.pcap?expires=")
