"""`rtphelper correlate --media s3://…` against a real moto_server: same streams as local, outputs uploaded back."""
from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from rtpcore.cli import AWS_LOGGERS, main
from rtpcore.pipeline import correlate
from tests.conftest import load_truth
from tests.storage.conftest import BUCKET, MotoServer, point_cli_at

SESSION = "captures/prod-eu/ticket-5/20250404_111111"
LINK_ATTR = r"(?<![\w:-])(?:href|src)="  # a link of the page (not data-src= of the ladder's SVG)
OUTPUTS = {"combined/media_raw.pcap", "combined/media_decrypted.pcap", "combined/SIP_plus_media_decrypted.pcap"}


@pytest.fixture
def s3_cli(moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean process environment pointed at the shared moto server; logger levels restored afterwards."""
    monkeypatch.chdir(tmp_path)
    point_cli_at(monkeypatch, moto_server.endpoint)
    levels = {name: logging.getLogger(name).level for name in AWS_LOGGERS}
    yield moto_server
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(server: MotoServer, files: list[Path], prefix: str) -> None:
    """Put files into the bucket with a plain boto3 client, as a capture of another machine would have."""
    client = server.client()
    for path in files:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.name}", Body=path.read_bytes())


def comparable(doc: dict) -> dict:
    """The call, legs and per-stream counts of a report, without where the files were."""
    return {"call_id": doc["call_id"], "legs": doc["legs"], "findings": doc["findings"]}


def test_correlate_from_s3_equals_local_and_publishes_outputs(
    s3_cli: MotoServer, generated, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = generated("rolling")
    truth = load_truth(folder)
    media = sorted((folder / "media").glob("*.pcap"))
    assert len(media) >= 4
    upload(s3_cli, media, f"{SESSION}/raw")
    upload(s3_cli, [folder / truth["sip"]], f"{SESSION}/uploads")  # not media: must not be correlated
    local = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "local")

    caplog.set_level(logging.DEBUG)
    out = tmp_path / "from-s3"
    code = main(["--debug", "correlate", "--sip", str(folder / truth["sip"]), "--direction", truth["direction"],
                 "--media", f"s3://{BUCKET}/{SESSION}/", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert comparable(doc) == comparable(local.to_json())
    assert sorted(Path(f["source"]).name for f in doc["files"]) == [p.name for p in media]
    for path in media:  # downloaded into <out>/raw/, byte-identical
        assert sha256((out / "raw" / path.name).read_bytes()) == sha256(path.read_bytes())
    assert not (out / "uploads").exists()

    urls = doc["urls"]
    decrypted = {f"decrypted/{p.name}" for p in (out / "decrypted").iterdir()}
    combined = {f"combined/{p.name}" for p in (out / "combined").iterdir() if p.is_file()}  # pcaps, analysis, report
    audio = {f"combined/audio/{p.name}" for p in (out / "combined" / "audio").iterdir()}   # the report's players
    assert OUTPUTS <= combined and {"combined/analysis.json", "combined/report.html"} <= combined and audio
    assert decrypted and set(urls) == combined | decrypted | audio
    client = s3_cli.client()
    # report.html as stored: every relative link of the local page is the presigned URL of that object, so the
    # page opened from its own presigned URL reaches the pcaps and WAVs of a private bucket.
    local_page = (out / "combined" / "report.html").read_text()
    stored_page = client.get_object(Bucket=BUCKET, Key=f"{SESSION}/combined/report.html")["Body"].read().decode()
    links = re.findall(LINK_ATTR + '"([^":?#]+)"', local_page)
    assert {"media_raw.pcap", "report.md"} <= set(links) and any(link.startswith("audio/") for link in links)
    for link in links:
        assert f'"{link}"' not in stored_page, f"{link} left relative in the stored report.html"
        presigned = html.escape(urls[f"combined/{link}"], quote=True)
        assert presigned in stored_page and "X-Amz-Signature" in presigned
    assert re.sub(LINK_ATTR + '"[^"]*"', "", stored_page) == re.sub(LINK_ATTR + '"[^"]*"', "", local_page)
    for relative, url in urls.items():
        local_bytes = (out / relative).read_bytes()
        if relative == "combined/report.html":
            local_bytes = stored_page.encode()
        stored = client.get_object(Bucket=BUCKET, Key=f"{SESSION}/{relative}")["Body"].read()
        assert sha256(stored) == sha256(local_bytes)
        parsed = urllib.parse.urlsplit(url)
        assert parsed.path == f"/{BUCKET}/{SESSION}/{relative}"
        with urllib.request.urlopen(url, timeout=5) as response:  # the presigned URL works on its own
            assert sha256(response.read()) == sha256(local_bytes)
    assert not any(o["Key"].startswith(f"{SESSION}/combined/filtered/")
                   for o in client.list_objects_v2(Bucket=BUCKET, Prefix=SESSION)["Contents"])

    signatures = [urllib.parse.parse_qs(urllib.parse.urlsplit(u).query)["X-Amz-Signature"][0] for u in urls.values()]
    assert caplog.records and any("uploaded" in r.getMessage() for r in caplog.records)
    logged = "\n".join(r.getMessage() for r in caplog.records) + captured.err
    assert not [s for s in signatures if s in logged]
    assert "X-Amz-Signature" not in logged


def test_correlate_mixes_s3_and_local_media(s3_cli: MotoServer, generated, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = generated("rolling")
    truth = load_truth(folder)
    media = sorted((folder / "media").glob("*.pcap"))
    remote, kept = media[: len(media) // 2], media[len(media) // 2:]
    session = "captures/prod-eu/mixed/20250404_121212"
    upload(s3_cli, remote, f"{session}/raw")
    local = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "local")
    out = tmp_path / "mixed"
    code = main(["correlate", "--sip", str(folder / truth["sip"]), "--direction", truth["direction"],
                 "--media", f"s3://{BUCKET}/{session}/raw", *map(str, kept), "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert comparable(doc) == comparable(local.to_json())
    sources = {Path(f["source"]) for f in doc["files"]}
    assert sources == {out.resolve() / "raw" / p.name for p in remote} | set(kept)


def test_correlate_from_a_missing_s3_session_is_a_clear_error(s3_cli: MotoServer, generated, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    code = main(["correlate", "--sip", str(folder / truth["sip"]), "--direction", truth["direction"],
                 "--media", f"s3://{BUCKET}/captures/prod-eu/none/19990101_000000/", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "no raw/ objects under captures/prod-eu/none/19990101_000000/" in err and BUCKET in err
