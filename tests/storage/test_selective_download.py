"""Correlating from S3 fetches only what the call touched (issue 12), against a real moto_server: range reads of
indexed chunks, 40-byte reads to bound unindexed ones; outputs byte-identical to a local full scan."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtpcore.pcap.index import INDEX_SUFFIX
from rtpcore.pipeline import correlate
from rtpcore.settings import load_settings
from rtpcore.storage.download import RANGES_DIR
from tests.small_session import small_session
from tests.storage.conftest import ACCESS_KEY, BUCKET, SECRET_KEY, MotoServer, point_cli_at

SESSION = "captures/prod-eu/ticket-12/20260115_100000"


@pytest.fixture
def session(tmp_path: Path):  # noqa: ANN201 - bench.session_gen.Session
    """40 MB on 2 hosts in 4 MB chunks with their sidecars, the call in the middle (as in test_select)."""
    return small_session(tmp_path / "session")


def upload(server: MotoServer, files: list[Path], session: str = SESSION) -> None:
    client = server.client()
    for path in files:
        client.put_object(Bucket=BUCKET, Key=f"{session}/raw/{path.name}", Body=path.read_bytes())


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("combined", "decrypted")
            for p in sorted((out / sub).glob("*.pcap"))}


def fetched(out: Path) -> dict[str, int]:
    """Every capture file the run wrote locally (range-read parts and whole downloads), with its size."""
    return {p.relative_to(out).as_posix(): p.stat().st_size for sub in ("raw", RANGES_DIR)
            for p in (out / sub).glob("*.pcap")}


def test_indexed_s3_session_is_range_read_and_equals_a_local_full_scan(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    point_cli_at(monkeypatch, moto_server.endpoint)
    upload(moto_server, [*session.chunks, *(c.with_name(c.name + INDEX_SUFFIX) for c in session.chunks)])
    full = correlate(session.sip, "inbound", [session.root / "raw"], tmp_path / "full",
                     settings=load_settings({}).model_copy(update={"media_select": False}))
    report = correlate(session.sip, "inbound", [f"s3://{BUCKET}/{SESSION}/"], tmp_path / "s3", settings=load_settings())

    assert outputs(tmp_path / "s3") == outputs(tmp_path / "full")
    media = report.to_json()["media_read"]
    parts = fetched(tmp_path / "s3")
    assert parts and all(name.startswith(f"{RANGES_DIR}/") for name in parts)  # no whole chunk came down
    read = [f for f in media["files"] if f["how"] != "skipped"]
    assert sum(parts.values()) == sum(f["bytes_read"] + 24 for f in read)     # header + the ranges, nothing more
    assert sum(parts.values()) < session.bytes / 2
    assert all(f["source"].startswith(f"s3://{BUCKET}/{SESSION}/raw/") for f in media["files"])
    skipped = [f for f in media["files"] if f["how"] == "skipped"]
    assert skipped and all("outside the call's windows" in f["why"] for f in skipped)
    assert len(media["files"]) == len(session.chunks) and not report.to_json()["warnings"]
    assert [leg["packets"] for leg in report.to_json()["legs"]] == [leg["packets"] for leg in full.to_json()["legs"]]


def test_unindexed_s3_session_is_bounded_by_first_timestamps_and_says_so(
    session, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    point_cli_at(monkeypatch, moto_server.endpoint)
    upload(moto_server, list(session.chunks), f"{SESSION}-noindex")  # an imported session: chunks only
    full = correlate(session.sip, "inbound", [session.root / "raw"], tmp_path / "full",
                     settings=load_settings({}).model_copy(update={"media_select": False}))
    report = correlate(session.sip, "inbound", [f"s3://{BUCKET}/{SESSION}-noindex/"], tmp_path / "s3",
                       settings=load_settings())

    assert outputs(tmp_path / "s3") == outputs(tmp_path / "full")
    media = report.to_json()["media_read"]
    downloaded = fetched(tmp_path / "s3")
    read = [Path(f["source"]).name for f in media["files"] if f["how"] != "skipped"]
    assert sorted(Path(n).name for n in downloaded) == sorted(read)          # only those, whole
    assert len(read) < len(session.chunks)
    skipped = [f for f in media["files"] if f["how"] == "skipped"]
    assert skipped and all("no index; bounded" in f["why"] for f in skipped)
    warnings = report.to_json()["warnings"]
    assert len(warnings) == len(read) and all("no index in S3" in w for w in warnings)


def test_flow_summaries_go_beside_the_s3_objects_and_a_second_call_skips_the_other_host(
    moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    two = small_session(tmp_path / "two", second_call=True)
    point_cli_at(monkeypatch, moto_server.endpoint)
    where = f"{SESSION}-two-calls"
    upload(moto_server, [*two.chunks, *(c.with_name(c.name + INDEX_SUFFIX) for c in two.chunks)], where)
    url = f"s3://{BUCKET}/{where}/"
    full = correlate(two.sip2, "inbound", [two.root / "raw"], tmp_path / "full",
                     settings=load_settings({}).model_copy(update={"media_select": False, "flow_summary": False}))
    by_time = correlate(two.sip2, "inbound", [url], tmp_path / "by-time",
                        settings=load_settings().model_copy(update={"flow_summary": False}))
    on = load_settings().model_copy(update={"flow_summary": True})   # RTPHELPER_FLOW_SUMMARY=true
    correlate(two.sip, "inbound", [url], tmp_path / "first", settings=on)
    listed = moto_server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{where}/raw/")["Contents"]
    summaries = [o["Key"] for o in listed if o["Key"].endswith(".flows.json")]
    assert summaries and not list((two.root / "raw").glob("*.flows.json"))   # uploaded beside the objects
    second = correlate(two.sip2, "inbound", [url], tmp_path / "second", settings=on)

    assert outputs(tmp_path / "second") == outputs(tmp_path / "full") == outputs(tmp_path / "by-time")
    def host1(report) -> int:  # noqa: ANN001
        return sum(f["bytes_read"] for f in report.to_json()["media_read"]["files"] if "media-1-" in f["source"])
    assert host1(second) < host1(by_time) / 10
    assert sum(fetched(tmp_path / "second").values()) < sum(fetched(tmp_path / "by-time").values())
    assert any("flow summary: no packet of the call's endpoints" in f["why"]
               for f in second.to_json()["media_read"]["files"] if "media-1-" in f["source"])
    assert not second.to_json()["warnings"]
    assert SECRET_KEY not in json.dumps(second.to_json())


def test_read_only_credentials_keep_summaries_out_of_s3_and_the_run_succeeds(
    session, moto_private: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    iam = boto3.client("iam", endpoint_url=moto_private.endpoint, region_name="us-east-1",
                       aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    iam.create_user(UserName="reader")
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(policy))
    reader = iam.create_access_key(UserName="reader")["AccessKey"]
    upload(moto_private, [*session.chunks, *(c.with_name(c.name + INDEX_SUFFIX) for c in session.chunks)])
    moto_private.enable_auth()
    point_cli_at(monkeypatch, moto_private.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader["SecretAccessKey"])
    full = correlate(session.sip, "inbound", [session.root / "raw"], tmp_path / "full",
                     settings=load_settings({}).model_copy(update={"media_select": False}))
    report = correlate(session.sip, "inbound", [f"s3://{BUCKET}/{SESSION}/"], tmp_path / "s3",
                       settings=load_settings().model_copy(update={"flow_summary": True}))

    assert outputs(tmp_path / "s3") == outputs(tmp_path / "full")
    listed = moto_private.client(reader["AccessKeyId"], reader["SecretAccessKey"]).list_objects_v2(
        Bucket=BUCKET, Prefix=f"{SESSION}/raw/")["Contents"]
    assert listed and not [o["Key"] for o in listed if o["Key"].endswith(".flows.json")]   # PutObject refused
    assert reader["SecretAccessKey"] not in json.dumps(report.to_json())
