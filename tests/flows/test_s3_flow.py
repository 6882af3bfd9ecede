"""correlate-call with media from an S3 session (real moto_server): outputs go back there, presigned links."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.conftest import load_truth
from tests.storage.conftest import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, MotoServer

SESSION = "captures/PRD/ticket-9/20250505_101010"


def test_correlate_call_flow_from_s3(moto_server: MotoServer, generated, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.correlate_call import correlate_call
    from tests.flows.test_correlation_flows import _artifacts_and_logs

    for key, value in {"RTPHELPER_S3_ENDPOINT": moto_server.endpoint, "RTPHELPER_S3_REGION": REGION,
                       "RTPHELPER_S3_PATH": f"{BUCKET}/captures", "RTPHELPER_STORAGE_MODE": "s3",
                       "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    folder = generated("rolling")
    truth = load_truth(folder)
    client = moto_server.client()
    for path in sorted((folder / "media").glob("*.pcap")):
        client.put_object(Bucket=BUCKET, Key=f"{SESSION}/raw/{path.name}", Body=path.read_bytes())

    state = correlate_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound",
                           media=[f"s3://{BUCKET}/{SESSION}/"], output_folder=str(tmp_path / "out"), return_state=True)
    assert state.is_completed(), state
    doc = state.result()
    got = {(s["src"], s["dst"], s["kind"]): s["packets"] for leg in doc["legs"] for s in leg["streams"]}
    assert got == {(s["src"], s["dst"], s["kind"]): s["packets"] for s in truth["streams"]}
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{SESSION}/combined/")["Contents"]}
    combined = {p.name for p in (tmp_path / "out" / "combined").iterdir() if p.is_file()}  # pcaps, analysis, report
    assert {"media_raw.pcap", "media_decrypted.pcap", "SIP_plus_media_decrypted.pcap", "report.html"} <= combined
    audio = {f"audio/{p.name}" for p in (tmp_path / "out" / "combined" / "audio").iterdir()}  # the report's players
    assert audio and keys == {f"{SESSION}/combined/{n}" for n in combined | audio}
    arts, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    presigned = [a.data.split("](", 1)[1].rstrip(")") for a in arts
                 if a.description and a.description.endswith("(S3, presigned)")]
    assert len(presigned) == len(combined)
    local = Path(doc["outputs"]["media_decrypted"]).read_bytes()
    link = next(u for u in presigned if "/combined/media_decrypted.pcap" in u)
    assert urllib.request.urlopen(link, timeout=10).read() == local
    text = "\n".join(log.message for log in logs)
    assert "Signature=" not in text and "X-Amz-Signature" not in text and SECRET_KEY not in text


def test_failed_output_upload_is_completed_with_a_visible_warning(moto_server: MotoServer, generated, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 9 (state says the truth): outputs produced but not uploaded → Completed, message + artifact say so."""
    from flows.correlate_call import correlate_call
    from rtpcore.errors import StorageError
    from rtpcore.storage.s3 import S3Storage
    from tests.flows.test_correlation_flows import _artifacts_and_logs

    for key, value in {"RTPHELPER_S3_ENDPOINT": moto_server.endpoint, "RTPHELPER_S3_REGION": REGION,
                       "RTPHELPER_S3_PATH": f"{BUCKET}/captures", "RTPHELPER_STORAGE_MODE": "s3",
                       "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    folder = generated("rolling")
    session = SESSION + "-upload-fails"
    client = moto_server.client()
    for path in sorted((folder / "media").glob("*.pcap")):
        client.put_object(Bucket=BUCKET, Key=f"{session}/raw/{path.name}", Body=path.read_bytes())

    def refuse(self, path, key, *args, **kwargs):  # the download worked; S3 now answers 503 to every upload
        raise StorageError(f"{key}: 503 Slow Down after 3 attempts")

    monkeypatch.setattr(S3Storage, "put_file", refuse)
    state = correlate_call(sip_pcap=str(folder / "sip.pcap"), direction="inbound",
                           media=[f"s3://{BUCKET}/{session}/"], output_folder=str(tmp_path / "out"), return_state=True)
    assert state.is_completed(), state
    assert state.message and "outputs are local only" in state.message and "503 Slow Down" in state.message
    doc = state.result()
    assert doc["s3_session"] == f"s3://{BUCKET}/{session}/"
    assert any("503 Slow Down" in w for w in doc["warnings"]) and doc["urls"] == {}
    assert all(Path(p).is_file() for p in doc["outputs"].values())
    arts, _ = _artifacts_and_logs(state.state_details.flow_run_id)
    assert any(a.type == "markdown" and "Outputs not uploaded" in str(a.data) for a in arts)


def test_s3_capture_paused_then_correlated_publishes_into_its_session(
        moto_server: MotoServer, rpcapd, generated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 10 point 3 in S3 mode: the capture uploads to S3, the same run correlates its local raw/ after the pause,
    and the outputs go into that S3 session with presigned links on the run (not only when media came from s3://)."""
    import asyncio
    import shutil
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.flow_runs import resume_flow_run

    from flows.capture_session import capture_session
    from tests.capture_lab import lab_hosts_yaml, send_until
    from tests.flows.test_correlation_flows import _artifacts_and_logs

    for key, value in {"RTPHELPER_S3_ENDPOINT": moto_server.endpoint, "RTPHELPER_S3_REGION": REGION,
                       "RTPHELPER_S3_PATH": f"{BUCKET}/caps", "RTPHELPER_STORAGE_MODE": "s3",
                       "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}.items():
        monkeypatch.setenv(key, value)
    call = generated("inbound-b2bua")
    truth = load_truth(call)
    lab = lab_hosts_yaml(tmp_path, rpcapd.port)
    port, name = 47041, "capture-LAB-ticket-s3pause"
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("state", capture_session(
        environment="LAB", duration_minutes=0.05, capture_filter=f"udp port {port}", hosts_file=str(lab),
        output_folder="ticket-s3pause", post_capture="ask", return_state=True)))
    stop = threading.Event()
    sender = threading.Thread(target=send_until, args=(port, b"s3p-", stop))
    runner.start()
    sender.start()

    async def paused_run_id() -> str | None:
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        return next((str(r.id) for r in runs if r.state is not None and r.state.is_paused()), None)

    try:
        deadline = time.monotonic() + 120
        while (run_id := asyncio.run(paused_run_id())) is None:
            assert runner.is_alive() and time.monotonic() < deadline, result.get("state")
            time.sleep(0.5)
    finally:
        stop.set()
        sender.join()
    (session,) = (tmp_path / "captures" / "ticket-s3pause").iterdir()
    for chunk in (call / "media").iterdir():  # the call's media, as if the capture had caught it
        shutil.copy(chunk, session / "raw" / chunk.name)
    resume_flow_run(run_id, run_input={"action": "correlate", "sip_pcap": str(call / "sip.pcap"),
                                       "direction": truth["direction"], "call_id": "", "number": ""})
    runner.join(timeout=300)
    state = result["state"]
    assert state.is_completed(), state
    doc = state.result()
    location = doc["storage"]["location"]
    assert doc["storage"]["status"] == "s3" and location.startswith(f"s3://{BUCKET}/caps/LAB/ticket-s3pause/")
    prefix = location.removeprefix(f"s3://{BUCKET}/").rstrip("/")
    urls = doc["correlation"]["urls"]
    assert {"combined/media_raw.pcap", "combined/media_decrypted.pcap", "combined/SIP_plus_media_decrypted.pcap",
            "combined/report.html"} <= set(urls)
    client = moto_server.client()
    for relative in ("combined/media_decrypted.pcap", "combined/SIP_plus_media_decrypted.pcap"):
        stored = client.get_object(Bucket=BUCKET, Key=f"{prefix}/{relative}")["Body"].read()
        assert stored == (session / relative).read_bytes(), relative
        assert urllib.request.urlopen(urls[relative], timeout=10).read() == stored
    arts, logs = _artifacts_and_logs(state.state_details.flow_run_id)
    presigned = {a.description for a in arts if a.description and a.description.endswith("(S3, presigned)")}
    assert "media_decrypted.pcap (S3, presigned)" in presigned, presigned
    text = "\n".join(log.message for log in logs)
    assert "X-Amz-Signature" not in text and SECRET_KEY not in text
