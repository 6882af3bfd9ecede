"""Object keys keep the session layout, map back to local paths, and refuse paths that would escape it."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from rtpcore.session import new_session
from rtpcore.storage.download import parse_s3_url
from rtpcore.storage.keys import SessionLocation, check_key, key_for_path, path_for_key, split_key

STAMP = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def test_session_file_maps_to_layout_key_and_back(tmp_path: Path) -> None:
    paths = new_session(tmp_path, "team/ticket-7", now=STAMP)
    location = SessionLocation.for_session_dir(paths.root, tmp_path, environment="prod-eu", prefix="/captures/")
    chunk = paths.raw / "eu-sbc1-0001.pcap"
    key = key_for_path(chunk, paths.root, location)
    assert key == "captures/prod-eu/team/ticket-7/20240506_070809/raw/eu-sbc1-0001.pcap"
    assert path_for_key(key, location, paths.root) == chunk
    parsed, relative = split_key(key, prefix="captures")
    assert (parsed, relative) == (location, "raw/eu-sbc1-0001.pcap")
    final = key_for_path(paths.media_raw, paths.root, location)
    assert final.endswith("/20240506_070809/combined/media_raw.pcap")


def test_no_prefix_and_no_folder(tmp_path: Path) -> None:
    paths = new_session(tmp_path, None, now=STAMP)
    location = SessionLocation.for_session_dir(paths.root, tmp_path, environment="lab")
    key = key_for_path(paths.uploads / "call.pcap", paths.root, location)
    assert key == "lab/20240506_070809/uploads/call.pcap"
    assert SessionLocation.parse("lab/20240506_070809") == location
    assert split_key(key) == (location, "uploads/call.pcap")


def test_refuses_hidden_outside_and_traversal(tmp_path: Path) -> None:
    paths = new_session(tmp_path, None, now=STAMP)
    location = SessionLocation.for_session_dir(paths.root, tmp_path, environment="lab")
    with pytest.raises(ValueError, match="hidden"):
        key_for_path(paths.root / ".upload-queue" / "x.item.json", paths.root, location)
    with pytest.raises(ValueError, match="not inside the session folder"):
        key_for_path(tmp_path / "elsewhere.pcap", paths.root, location)
    with pytest.raises(ValueError, match="'..'"):
        check_key("lab/../etc/passwd")
    with pytest.raises(ValueError, match="not inside session"):
        path_for_key("lab/other/raw/a.pcap", location, paths.root)
    with pytest.raises(ValueError, match="environment"):
        SessionLocation("", "bad env", None, "x")
    with pytest.raises(ValueError, match="not inside the capture root"):
        SessionLocation.for_session_dir(tmp_path, paths.root, environment="lab")


def test_parse_s3_url() -> None:
    url = parse_s3_url("s3://my-bucket/captures/prod/20240506_070809/")
    assert (url.bucket, url.key) == ("my-bucket", "captures/prod/20240506_070809")
    with pytest.raises(ValueError, match="starts with s3://"):
        parse_s3_url("https://my-bucket/x")
    with pytest.raises(ValueError, match="not a valid bucket name"):
        parse_s3_url("s3://My_Bucket/x")
