"""`rtphelper serve` over real HTTP: signed output links, refused tampering, signed uploads that never overwrite."""
from __future__ import annotations

import hashlib
import http.client
import urllib.parse
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtpcore.desk.links import (
    FILES_ROUTE, METHOD_PUT, UPLOAD_ROUTE, artifact_key, file_links, local_links, serve_links, signed_url,
)
from rtpcore.desk.serve import OutputServer, ServeConfig
from rtpcore.errors import ConfigError
from rtpcore.settings import load_settings

SECRET = "team-serve-secret-for-tests-0001"
MAX_UPLOAD = 1024 * 1024


@pytest.fixture()
def session(tmp_path: Path) -> Path:
    """A capture root with one correlated session: real pcap bytes in combined/ and the SIP pcap in uploads/."""
    root = tmp_path / "captures"
    s = root / "ticket-7" / "20260101_101010"
    for sub in ("raw", "uploads", "decrypted", "combined"):
        (s / sub).mkdir(parents=True)
    (s / "combined" / "media_raw.pcap").write_bytes(bytes(range(256)) * 50)
    (s / "combined" / "SIP_plus_media_decrypted.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + b"x" * 5000)
    (s / "uploads" / "sip.pcap").write_bytes(b"inline:SECRETKEYMATERIAL")
    return s


@pytest.fixture()
def server(session: Path) -> Iterator[OutputServer]:
    srv = OutputServer("127.0.0.1:0", ServeConfig(session.parents[1], SECRET, MAX_UPLOAD)).start()
    yield srv
    srv.stop()


def _settings(server: OutputServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    return load_settings({"RTPHELPER_SERVE_URL": server.url, "RTPHELPER_SERVE_SECRET": SECRET,
                          "RTPHELPER_LINK_EXPIRES_SECONDS": "120"})


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _put(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_links_download_byte_identical_outputs(session: Path, server: OutputServer,
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(server, monkeypatch, tmp_path)
    files = sorted((session / "combined").glob("*.pcap"))
    caplog.set_level(logging.INFO, logger="rtpcore")
    links = serve_links(files, session.parents[1], settings)
    assert [link.name for link in links] == [f"combined/{p.name}" for p in files]
    for link, path in zip(links, files):
        status, body = _get(link.url)
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(path.read_bytes()).digest()
    token = links[0].url.split("token=")[1]
    assert token not in caplog.text, "the token of a link never reaches the logs"
    assert "GET /files/ticket-7/20260101_101010/combined/" in caplog.text


def test_tampered_expired_and_non_output_links_are_refused(session: Path, server: OutputServer) -> None:
    good = signed_url(server.url, FILES_ROUTE, "ticket-7/20260101_101010/combined/media_raw.pcap", SECRET, 60)
    other = good.replace("media_raw.pcap", "SIP_plus_media_decrypted.pcap")
    status, body = _get(other)
    assert status == 403 and b"does not match" in body
    expired = signed_url(server.url, FILES_ROUTE, "ticket-7/20260101_101010/combined/media_raw.pcap", SECRET, 60,
                         now=0)
    status, body = _get(expired)
    assert status == 403 and b"expired" in body and b"rtphelper links" in body
    wrong_secret = signed_url(server.url, FILES_ROUTE, "ticket-7/20260101_101010/combined/media_raw.pcap", "guess", 60)
    assert _get(wrong_secret)[0] == 403
    sip = signed_url(server.url, FILES_ROUTE, "ticket-7/20260101_101010/uploads/sip.pcap", SECRET, 60)
    status, body = _get(sip)
    assert status == 403 and b"only outputs" in body and b"SECRETKEY" not in body
    (session.parents[1] / "combined" / "uploads").mkdir(parents=True)  # a ticket folder named like an output dir
    (session.parents[1] / "combined" / "uploads" / "sip.pcap").write_bytes(b"inline:SECRETKEYMATERIAL")
    status, body = _get(signed_url(server.url, FILES_ROUTE, "combined/uploads/sip.pcap", SECRET, 60))
    assert status == 403 and b"SECRETKEY" not in body
    escape = f"{server.url}{FILES_ROUTE}..%2F..%2Fetc%2Fpasswd?expires=9999999999&token=x"
    assert _get(escape)[0] in (400, 403)


def test_signed_upload_lands_in_uploads_and_never_overwrites(session: Path, server: OutputServer) -> None:
    name = "incoming/20260101_101500-ab12/uploads/call.pcap"
    url = signed_url(server.url, UPLOAD_ROUTE, name, SECRET, 60, method=METHOD_PUT)
    status, body = _put(url, b"pcap-bytes-1")
    assert status == 201
    stored = session.parents[1] / name
    assert stored.read_bytes() == b"pcap-bytes-1" and str(stored) in body.decode()
    assert _put(url, b"pcap-bytes-1")[0] == 201, "the same file again is accepted (a retried upload)"
    status, body = _put(url, b"other-bytes!")
    assert status == 409 and b"already exists" in body
    assert stored.read_bytes() == b"pcap-bytes-1"
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".")], "no temp left behind"
    get_link_used_for_put = signed_url(server.url, UPLOAD_ROUTE, name.replace("call", "x"), SECRET, 60)
    assert _put(get_link_used_for_put, b"x")[0] == 403
    outside_uploads = signed_url(server.url, UPLOAD_ROUTE, "ticket-7/20260101_101010/combined/media_raw.pcap",
                                 SECRET, 60, method=METHOD_PUT)
    assert _put(outside_uploads, b"evil")[0] == 403
    assert (session / "combined" / "media_raw.pcap").read_bytes()[:4] == bytes(range(4))
    big = signed_url(server.url, UPLOAD_ROUTE, "incoming/x/uploads/big.pcap", SECRET, 60, method=METHOD_PUT)
    split = urllib.parse.urlsplit(big)
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=10)
    conn.putrequest("PUT", f"{split.path}?{split.query}")
    conn.putheader("Content-Length", str(MAX_UPLOAD + 1))  # refused on the header, before a byte is stored
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and b"RTPHELPER_FETCH_MAX_BYTES" in response.read()
    conn.close()
    assert not (session.parents[1] / "incoming" / "x" / "uploads" / "big.pcap").exists()


def test_links_fall_back_to_file_uris_and_keys_are_per_session(session: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    files = sorted((session / "combined").glob("*.pcap"))
    plain = load_settings({})
    assert [link.url for link in local_links(files, session.parents[1], plain)] == [p.resolve().as_uri() for p in files]
    assert file_links(files)[0].kind == "file"
    assert artifact_key("correlation", session) == "correlation-ticket-7-20260101-101010"
    assert artifact_key("links", "s3://b/captures/PRD/Ticket_9/20250505_101010/") == "links-ticket-9-20250505-101010"
    with pytest.raises(ConfigError, match="RTPHELPER_SERVE_SECRET"):
        OutputServer("127.0.0.1:0", ServeConfig(session.parents[1], "", MAX_UPLOAD))
    settings = load_settings({"RTPHELPER_SERVE_SECRET": SECRET})
    assert settings.redacted_dict()["RTPHELPER_SERVE_SECRET"] == "(set, not shown)"


def test_a_served_report_opens_its_audio_and_pcaps_with_one_link_and_nothing_else(
        session: Path, server: OutputServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    combined = session / "combined"
    (combined / "audio").mkdir()
    (combined / "audio" / "a.wav").write_bytes(b"RIFF" + bytes(range(200)))
    (combined / "report.html").write_text('<a href="media_raw.pcap">raw</a><audio src="audio/a.wav"></audio>')
    caplog.set_level(logging.INFO, logger="rtpcore.desk.serve")
    settings = _settings(server, monkeypatch, tmp_path)
    [link] = serve_links([combined / "report.html"], session.parents[1], settings)
    with urllib.request.urlopen(link.url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/html") and "attachment" not in str(r.headers)
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        page = r.read().decode()
    assert page == (combined / "report.html").read_text()
    # The browser resolves the page's relative links against its URL: the token in the path travels with them.
    for relative, local in (("audio/a.wav", combined / "audio" / "a.wav"), ("media_raw.pcap", combined / "media_raw.pcap")):
        status, body = _get(urllib.parse.urljoin(link.url, relative))
        assert status == 200 and body == local.read_bytes(), relative
    token = link.url.split("/")[5]
    for escape in ("../uploads/sip.pcap", "../../20260101_101010/uploads/sip.pcap", "%2e%2e/uploads/sip.pcap"):
        status, body = _get(urllib.parse.urljoin(link.url, ".") + escape)
        assert status in (400, 403, 404) and b"SECRETKEYMATERIAL" not in body, escape
    tampered = link.url.replace(token, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert _get(tampered)[0] == 403
    other = link.url.replace("/ticket-7/", "/ticket-8/")          # the token opens one session's combined/ only
    assert _get(other)[0] == 403
    assert token not in caplog.text and "(token)" in caplog.text


def test_artifact_keys_of_long_ticket_folders_stay_distinct_per_session() -> None:
    from rtpcore.desk.links import MAX_KEY_LENGTH, key_of

    folder = "INC-" + "very-long-ticket-description-" * 6
    first, second = (key_of("capture-counters", f"{folder}-2026120{n}_101010") for n in (1, 2))
    assert first != second and first.endswith("20261201-101010") and second.endswith("20261202-101010")
    assert all(len(k) <= MAX_KEY_LENGTH and k.startswith("capture-counters-") for k in (first, second))
    assert artifact_key("streams", "/c/Ticket 7/20260101_101010") == "streams-ticket-7-20260101-101010"
