"""`rtphelper flush SESSION_DIR` against a real moto_server: exit 0 / 1 / 2, what is listed, what stays on disk."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rtpcore.cli import main
from rtpcore.pcap.rolling import ChunkInfo
from rtpcore.storage.queue import QueueStore, UploadQueue
from tests.storage.conftest import (
    ACCESS_KEY,
    BUCKET,
    REGION,
    SECRET_KEY,
    MotoServer,
    new_session,
    s3_storage,
    stored_sha256,
    write_chunk,
)

KIB = 1024


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A clean environment (no developer runtime.env) pointed at a moto server with the given keys."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith(("RTPHELPER_", "AWS_")):
            monkeypatch.delenv(key)

    def point_at(server: MotoServer, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
                 mode: str = "s3") -> None:
        for key, value in {"RTPHELPER_S3_ENDPOINT": server.endpoint, "RTPHELPER_S3_REGION": REGION,
                           "RTPHELPER_S3_PATH": f"{BUCKET}/captures", "RTPHELPER_STORAGE_MODE": mode,
                           "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}.items():
            monkeypatch.setenv(key, value)

    return point_at


def queued_session(root: Path, server: MotoServer, count: int = 3) -> tuple[Path, object, list[ChunkInfo]]:
    """A session whose chunks were queued but never uploaded (the capture host lost S3, then the process ended)."""
    paths, location = new_session(root)
    chunks = [write_chunk(paths.raw, f"eu-m1-{n:04d}.pcap", 20 * KIB, index=n) for n in range(1, count + 1)]
    queue = UploadQueue(paths.root, s3_storage(server), location, start=False)
    for info in chunks:
        queue.on_chunk_closed(info)
    queue.close()
    return paths.root, location, chunks


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_flush_uploads_everything_then_nothing_is_left(moto_server: MotoServer, cli_env, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cli_env(moto_server, mode="local")  # flushing uploads whatever mode new captures use
    session, location, chunks = queued_session(tmp_path / "root", moto_server)
    code, out, _ = run(["flush", str(session), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["uploaded"] == 3 and doc["left"] == [] and doc["failed"] == []
    assert doc["storage"]["storage"] == "s3"
    for info in chunks:
        assert stored_sha256(moto_server, location.key_for(f"raw/{info.name}")) == info.sha256
        assert info.path.is_file()  # under the spool cap: local copies stay

    code, out, _ = run(["flush", str(session)], capsys)
    assert code == 0 and out.splitlines()[0] == "uploaded 0, left 0 (storage: s3)"


def test_flush_with_s3_down_exits_1_listing_what_is_left(moto_private: MotoServer, cli_env, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cli_env(moto_private)
    session, _, chunks = queued_session(tmp_path / "root", moto_private)
    moto_private.stop()
    code, out, err = run(["flush", str(session), "--json", "--timeout", "5"], capsys)
    doc = json.loads(out)
    assert code == 1, err
    assert not doc["ok"] and doc["uploaded"] == 0 and doc["left"] == [f"raw/{c.name}" for c in chunks]
    assert doc["storage"]["storage"] == "local-fallback" and moto_private.endpoint in doc["storage"]["why"]
    code, out, _ = run(["flush", str(session)], capsys)
    assert code == 1
    assert out.splitlines()[:4] == ["uploaded 0, left 3 (storage: local-fallback)"] + [
        f"  left: raw/{c.name}" for c in chunks]
    assert all(c.path.is_file() for c in chunks)


def test_flush_with_wrong_credentials_exits_2_and_keeps_files(moto_private: MotoServer, cli_env, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    session, _, chunks = queued_session(tmp_path / "root", moto_private)
    moto_private.enable_auth()
    wrong_secret = "wrong-Secret-0000000000000000000000000000"
    cli_env(moto_private, access_key="AKIAWRONGWRONGWRONG1", secret_key=wrong_secret)
    code, out, err = run(["flush", str(session)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"rtphelper flush: error: S3 rejected the credentials (InvalidAccessKeyId) for bucket "
                          f"{BUCKET} at endpoint {moto_private.endpoint}; check AWS_ACCESS_KEY_ID")
    assert wrong_secret not in err and "AKIAWRONGWRONGWRONG1" not in err
    assert all(c.path.is_file() and c.path.stat().st_size == 20 * KIB for c in chunks)
    assert [i.state for i in QueueStore(session).load_all()] == ["pending"] * 3


def test_flush_config_errors_exit_2(moto_server: MotoServer, cli_env, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cli_env(moto_server)
    session, _, _ = queued_session(tmp_path / "root", moto_server, count=1)
    monkeypatch.delenv("RTPHELPER_S3_PATH")
    code, _, err = run(["flush", str(session)], capsys)
    assert code == 2 and "no bucket is set: set RTPHELPER_S3_PATH" in err

    bare = tmp_path / "local-only" / "20250101_000000"
    (bare / "raw").mkdir(parents=True)
    code, _, err = run(["flush", str(bare)], capsys)
    assert code == 2 and "no upload queue here" in err and "--env ENV" in err


def test_flush_session_captured_locally_with_env(moto_server: MotoServer, cli_env, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A session captured in local mode has no queue: --env/--folder say where it goes, every file is found."""
    cli_env(moto_server)
    session = tmp_path / "local" / "20250303_101010"
    (session / "raw").mkdir(parents=True)
    infos = [write_chunk(session / "raw", f"h-{n:04d}.pcap", 5 * KIB, index=n) for n in (1, 2)]
    code, out, _ = run(["flush", str(session), "--env", "lab", "--folder", "case-9", "--json"], capsys)
    assert code == 0 and json.loads(out)["uploaded"] == 2
    for info in infos:
        key = f"captures/lab/case-9/20250303_101010/raw/{info.name}"
        assert stored_sha256(moto_server, key) == info.sha256
