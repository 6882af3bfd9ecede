"""rtphelper submit's parts against real local servers: the upload to serve, downloads, and API errors."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtpcore.desk.links import serve_links
from rtpcore.desk.prefect_api import Artifact, PrefectApi, PrefectApiError, api_url
from rtpcore.desk.serve import OutputServer, ServeConfig
from rtpcore.desk.submit import SubmitRequest, download, output_links, parameters, place_sip
from rtpcore.errors import ConfigError, InputError, StorageError
from rtpcore.settings import load_settings

SECRET = "submit-test-secret-0001"


@pytest.fixture()
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OutputServer, Path]]:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "captures"
    (root / "t" / "20260101_000000" / "combined").mkdir(parents=True)
    server = OutputServer("127.0.0.1:0", ServeConfig(root, SECRET, 1 << 20)).start()
    yield server, root
    server.stop()


def test_the_sip_pcap_goes_to_serve_and_outputs_come_back(served: tuple[OutputServer, Path], tmp_path: Path) -> None:
    server, root = served
    settings = load_settings({"RTPHELPER_SERVE_URL": server.url, "RTPHELPER_SERVE_SECRET": SECRET})
    sip = tmp_path / "laptop" / "my call.pcap"
    sip.parent.mkdir()
    sip.write_bytes(b"\xd4\xc3\xb2\xa1sip")
    worker_path = Path(place_sip(SubmitRequest(str(sip), "inbound", session="capture-x"), settings))
    assert worker_path.is_relative_to(root / "incoming") and worker_path.parent.name == "uploads"
    assert worker_path.name == "my_call.pcap" and worker_path.read_bytes() == sip.read_bytes()

    output = root / "t" / "20260101_000000" / "combined" / "media_raw.pcap"
    output.write_bytes(bytes(range(256)) * 9)
    links = {link.name: link.url for link in serve_links([output], root, settings)}
    got = download(links, tmp_path / "dl", 10)
    assert [p.read_bytes() for p in got] == [output.read_bytes()]
    with pytest.raises(InputError, match="already exist"):
        download(links, tmp_path / "dl", 10)
    with pytest.raises(InputError, match="file:// links.*rtphelper serve"):
        download({"combined/x.pcap": output.as_uri()}, tmp_path / "dl2", 10)
    tampered = {"combined/media_raw.pcap": links["combined/media_raw.pcap"].replace("token=", "token=0")}
    with pytest.raises(StorageError, match="answered 403"):
        download(tampered, tmp_path / "dl3", 10)
    assert not list((tmp_path / "dl3").iterdir()), "a refused download leaves no partial file"


def test_without_a_way_to_the_worker_submit_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sip = tmp_path / "sip.pcap"
    sip.write_bytes(b"x")
    with pytest.raises(ConfigError, match="RTPHELPER_SERVE_URL"):
        place_sip(SubmitRequest(str(sip), "inbound", session="/srv/x"), load_settings({}))
    assert place_sip(SubmitRequest("https://t/x.pcap?sig=1", "inbound", session="s"), load_settings({})) \
        == "https://t/x.pcap?sig=1"
    with pytest.raises(InputError, match="not found on this computer"):
        place_sip(SubmitRequest(str(tmp_path / "no.pcap"), "inbound", session="s"), load_settings({}))


def test_parameters_choose_the_flow() -> None:
    names, params = parameters(SubmitRequest("x", "inbound", session="capture-prd-t9", call_id="abc@h"), "/w/sip.pcap")
    assert names == ("correlate-call", "correlate-call")
    assert params == {"sip_pcap": "/w/sip.pcap", "direction": "inbound", "call_id": "abc@h", "session": "capture-prd-t9"}
    names, params = parameters(SubmitRequest("x", "outbound", media="/srv/m", output_folder="t10"), "s3://b/k")
    assert names == ("process-call", "process-call") and params["media_directory"] == "/srv/m"
    assert params["output_folder"] == "t10" and "call_id" not in params
    with pytest.raises(InputError, match="--session .* or --media"):
        parameters(SubmitRequest("x", "inbound"), "y")


def test_api_errors_name_the_url_and_the_setting() -> None:
    with pytest.raises(PrefectApiError, match="PREFECT_API_URL"):
        api_url(None, {})
    assert api_url(None, {"PREFECT_API_URL": "http://h:4200/api/"}) == "http://h:4200/api"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with PrefectApi(f"http://127.0.0.1:{port}/api", timeout=2) as api, \
            pytest.raises(PrefectApiError, match=rf"127\.0\.0\.1:{port}/api.*PREFECT_API_URL"):
        api.deployment_id("correlate-call", "correlate-call")


def test_output_links_prefer_presigned() -> None:
    arts = [Artifact(None, "markdown", "media_raw.pcap (local file)", "[media_raw.pcap](file:///w/media_raw.pcap)"),
            Artifact(None, "markdown", "media_raw.pcap (S3, presigned)", "[media_raw.pcap](http://s3/x?X-Amz-Signature=1)"),
            Artifact("correlation-t", "markdown", "summary", "# Call"),
            Artifact(None, "table", "streams", [])]
    assert output_links(arts) == {"media_raw.pcap": "http://s3/x?X-Amz-Signature=1"}


def test_only_a_serve_upload_is_discarded_after_its_run(tmp_path: Path) -> None:
    from rtpcore.desk.links import discard_incoming

    root = tmp_path / "captures"
    upload = root / "incoming" / "20260101_000000-ab12" / "uploads" / "call.pcap"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x")
    elsewhere = root / "ticket" / "20260101_000000" / "uploads" / "call.pcap"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(b"x")
    assert not discard_incoming(str(elsewhere), root) and elsewhere.is_file()
    assert not discard_incoming("https://h/incoming/x/uploads/call.pcap", root)
    assert discard_incoming(str(upload), root)
    assert list((root / "incoming").iterdir()) == []
