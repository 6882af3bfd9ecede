"""The support engineer's walk through real Prefect: an S3-mode capture session whose chunks holding the call were
removed locally after their upload (RTPHELPER_LOCAL_SPOOL_MAX_BYTES), correlated with `correlate-call
session=<folder>` and `session=<capture run name>`: whole outputs, published beside the chunks in S3 (real
moto_server, real upload queue), presigned links on the run; S3 unreachable fails the run naming the chunks.

The session is generated (bench/session_gen: 40 MB, 2 hosts, 4 MB indexed chunks, a 20 s call) with the manifest a
capture writes and uploaded by a real UploadQueue with a 1 MiB spool cap: a live rpcapd capture of a few seconds
cannot hold a call spread over chunks that the cap removes (test_s3_flow.py covers the live capture + pause)."""
from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest

from rtpcore.pipeline import correlate
from rtpcore.settings import load_settings
from tests.storage.conftest import BUCKET, SECRET_KEY, MotoServer, free_port, point_cli_at
from tests.storage.test_uploaded_session import SESSION_KEY, outputs, session, upload_and_evict  # noqa: F401

PUBLISHED = ("combined/media_raw.pcap", "combined/media_decrypted.pcap", "combined/SIP_plus_media_decrypted.pcap")


def _full_correlation(session, out: Path) -> dict[str, bytes]:  # noqa: ANN001 - bench.session_gen.Session
    """The reference: every chunk on disk, read in full."""
    copy = out.parent / f"{out.name}-raw"
    shutil.copytree(session.root / "raw", copy)
    correlate(session.sip, "inbound", [copy], out, settings=load_settings({}).model_copy(update={"media_select": False}))
    found = outputs(out)
    assert found, "the reference correlation wrote no pcaps"
    return found


def _check_published(moto_server: MotoServer, root: Path, full: dict[str, bytes], state) -> None:  # noqa: ANN001
    from tests.flows.test_correlation_flows import _artifacts_and_logs

    assert state.is_completed(), state
    doc = state.result()
    assert outputs(root) == full, "the flow's outputs differ from a correlation of the full chunks"
    assert doc["s3_session"] == f"s3://{BUCKET}/{SESSION_KEY}/"
    media = doc["media_read"]["files"]
    from_s3 = [c for c in media if c["how"] != "skipped" and c["source"].startswith("s3://")]
    assert from_s3 and all("removed locally after its upload" in c["why"] for c in from_s3), media
    client = moto_server.client()
    for relative in (*PUBLISHED, *(f"decrypted/{n.split('/', 1)[1]}" for n in full if n.startswith("decrypted/"))):
        stored = client.get_object(Bucket=BUCKET, Key=f"{SESSION_KEY}/{relative}")["Body"].read()
        assert stored == (root / relative).read_bytes(), relative
    for relative in PUBLISHED:
        assert urllib.request.urlopen(doc["urls"][relative], timeout=10).read() == (root / relative).read_bytes()
    arts, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    presigned = {a.description: a.data for a in arts if a.description and a.description.endswith("(S3, presigned)")}
    assert {f"{Path(r).name} (S3, presigned)" for r in PUBLISHED} <= set(presigned), presigned
    link = presigned["media_decrypted.pcap (S3, presigned)"]
    assert "X-Amz-Signature=" in link and f"/{SESSION_KEY}/combined/media_decrypted.pcap" in link
    text = "\n".join(log.message for log in logs)
    assert "X-Amz-Signature" not in text and SECRET_KEY not in text
    assert "removed locally after its upload" in text, "the run's log says where the call's media came from"


def test_evicted_session_correlated_by_folder_and_by_run_name_publishes_whole_outputs(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact

    from flows.correlate_call import correlate_call

    point_cli_at(monkeypatch, moto_server.endpoint)
    monkeypatch.setenv("RTPHELPER_CAPTURE_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    full = _full_correlation(session, tmp_path / "full")
    evicted = upload_and_evict(session, moto_server)
    assert len(evicted) >= len(session.chunks) - 2, evicted

    state = correlate_call(sip_pcap=str(session.sip), direction="inbound", session=str(session.root),
                           return_state=True)
    _check_published(moto_server, session.root, full, state)
    assert sorted(p.name for p in session.chunks if not p.exists()) == evicted, "no evicted chunk came back to raw/"

    # The same session by the name of its capture run, as the UI shows it (resolved through this Prefect server).
    name = "capture-prod-eu-ticket-12-evicted"

    @flow(name="capture-session-summary", flow_run_name=name)
    def summary() -> None:
        create_markdown_artifact(f"# Capture session `{session.root}`\n\nstorage: s3://{BUCKET}/{SESSION_KEY}/\n")

    summary()
    for relative in PUBLISHED:
        moto_server.client().delete_object(Bucket=BUCKET, Key=f"{SESSION_KEY}/{relative}")
    state = correlate_call(sip_pcap=str(session.sip), direction="inbound", session=name, overwrite=True,
                           return_state=True)
    _check_published(moto_server, session.root, full, state)


def test_evicted_session_with_s3_unreachable_fails_the_run_by_chunk_name_without_secrets(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from flows.correlate_call import correlate_call
    from tests.flows.test_correlation_flows import _artifacts_and_logs

    point_cli_at(monkeypatch, moto_server.endpoint)
    monkeypatch.setenv("RTPHELPER_CAPTURE_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    evicted = upload_and_evict(session, moto_server)
    for key, value in {"RTPHELPER_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                       "RTPHELPER_S3_CONNECT_TIMEOUT_SECONDS": "1", "RTPHELPER_S3_READ_TIMEOUT_SECONDS": "1",
                       "RTPHELPER_S3_REQUEST_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)

    state = correlate_call(sip_pcap=str(session.sip), direction="inbound", session=str(session.root),
                           return_state=True)
    assert state.is_failed(), state
    with pytest.raises(Exception) as raised:
        state.result()
    message = str(raised.value)
    named = [n for n in evicted if n in message]
    assert named, message
    assert "removed locally after its upload" in message and "copy the chunks back" in message
    assert "when S3 is reachable" in message and str(session.root / "raw") in message
    assert SECRET_KEY not in message and SECRET_KEY not in str(state.message)
    _, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    text = "\n".join(log.message for log in logs)
    assert named[0] in text and SECRET_KEY not in text
    assert not list(session.root.glob("combined/*.pcap")), "no outputs from a run that could not read the call"
    assert (session.root / "manifest.jsonl").is_file() and (session.root / "raw").is_dir(), "the session is kept"
