"""The S3 backend against a real moto_server process: keys, checksums, multipart, errors, settings, redaction."""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from rtpcore.settings import load_settings
from rtpcore.storage import LocalStorage, StorageAuthError, StorageIntegrityError, StorageNotFoundError
from rtpcore.storage.s3 import S3Storage
from tests.storage.conftest import BUCKET, REGION, SECRET_KEY, MotoServer, s3_storage, stored_sha256

MIB = 1024 * 1024


def test_put_head_list_get_round_trip(moto_server: MotoServer, tmp_path: Path) -> None:
    storage = s3_storage(moto_server)
    data = os.urandom(300_000)
    src = tmp_path / "a.pcap"
    src.write_bytes(data)
    info = storage.put_file(src, "captures/lab/t1/raw/a.pcap")
    raw = moto_server.client().head_object(Bucket=BUCKET, Key="captures/lab/t1/raw/a.pcap")
    assert raw["ContentLength"] == len(data)
    assert raw["ETag"].strip('"') == hashlib.md5(data).hexdigest() == info.etag
    assert raw["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest() == info.sha256
    assert stored_sha256(moto_server, "captures/lab/t1/raw/a.pcap") == hashlib.sha256(data).hexdigest()
    assert storage.exists("captures/lab/t1/raw/a.pcap") and not storage.exists("captures/lab/t1/raw/zz.pcap")
    assert [o.key for o in storage.list("captures/lab/t1/")] == ["captures/lab/t1/raw/a.pcap"]
    back = storage.get_file("captures/lab/t1/raw/a.pcap", tmp_path / "back" / "a.pcap")
    assert (tmp_path / "back" / "a.pcap").read_bytes() == data and back.size == len(data)
    with pytest.raises(StorageNotFoundError, match="no such object"):
        storage.get_file("captures/lab/t1/raw/missing.pcap", tmp_path / "m.pcap")
    assert not (tmp_path / "m.pcap").exists()


def test_presigned_url_fetches_object(moto_server: MotoServer, tmp_path: Path) -> None:
    storage = s3_storage(moto_server)
    (tmp_path / "p.bin").write_bytes(b"presigned payload")
    storage.put_file(tmp_path / "p.bin", "captures/lab/p.bin")
    url = storage.presigned_url("captures/lab/p.bin", expires=60)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["60"] and "X-Amz-Signature" in query
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == b"presigned payload"


def test_multipart_upload_above_threshold(moto_server: MotoServer, tmp_path: Path) -> None:
    storage = s3_storage(moto_server, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    data = os.urandom(12 * MIB)
    src = tmp_path / "big.pcap"
    src.write_bytes(data)
    info = storage.put_file(src, "captures/lab/big.pcap")
    parts = [data[i:i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"
    raw = moto_server.client().head_object(Bucket=BUCKET, Key="captures/lab/big.pcap")
    assert len(parts) == 3 and raw["ETag"].strip('"') == expected == info.etag
    assert raw["ContentLength"] == 12 * MIB
    assert stored_sha256(moto_server, "captures/lab/big.pcap") == hashlib.sha256(data).hexdigest() == info.sha256


def test_changed_file_is_refused_before_upload(moto_server: MotoServer, tmp_path: Path) -> None:
    storage = s3_storage(moto_server)
    src = tmp_path / "c.pcap"
    src.write_bytes(b"after close")
    with pytest.raises(StorageIntegrityError, match="changed since"):
        storage.put_file(src, "captures/lab/c.pcap", sha256=hashlib.sha256(b"at close").hexdigest())
    assert not storage.exists("captures/lab/c.pcap") and src.read_bytes() == b"after close"


def test_missing_bucket_is_named(moto_server: MotoServer, tmp_path: Path) -> None:
    storage = s3_storage(moto_server, bucket="no-such-bucket-here")
    (tmp_path / "x").write_bytes(b"x")
    with pytest.raises(StorageNotFoundError, match="bucket no-such-bucket-here does not exist at endpoint http://"):
        storage.put_file(tmp_path / "x", "k/x")
    with pytest.raises(StorageNotFoundError, match="RTPHELPER_S3_PATH"):
        storage.check()


def test_wrong_credentials_rejected_with_clear_message(moto_private: MotoServer, tmp_path: Path) -> None:
    key_id, secret = moto_private.create_iam_user("uploader")
    moto_private.enable_auth()
    (tmp_path / "x").write_bytes(b"x")
    bad_key = s3_storage(moto_private, access_key="AKIAWRONGWRONGWRONG1", secret_key="nope")
    with pytest.raises(StorageAuthError) as err:
        bad_key.put_file(tmp_path / "x", "captures/x")
    text = str(err.value)
    assert "S3 rejected the credentials (InvalidAccessKeyId)" in text
    assert f"bucket {BUCKET} at endpoint {moto_private.endpoint}" in text and "AWS_ACCESS_KEY_ID" in text
    bad_secret = s3_storage(moto_private, access_key=key_id, secret_key="not-the-secret")
    with pytest.raises(StorageAuthError, match=r"\(SignatureDoesNotMatch\)"):
        bad_secret.put_file(tmp_path / "x", "captures/x")
    good = s3_storage(moto_private, access_key=key_id, secret_key=secret)
    assert good.put_file(tmp_path / "x", "captures/x").size == 1
    assert (tmp_path / "x").read_bytes() == b"x"


def test_from_settings_reads_aws_keys_from_runtime_env(moto_private: MotoServer, tmp_path: Path) -> None:
    key_id, secret = moto_private.create_iam_user("from-env-file")
    moto_private.enable_auth()
    env_file = tmp_path / "runtime.env"
    env_file.write_text(f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY='{secret}'\n"
                        f"RTPHELPER_S3_ENDPOINT={moto_private.endpoint}\nRTPHELPER_S3_REGION={REGION}\n"
                        f"RTPHELPER_S3_PATH={BUCKET}/team/prefix\nRTPHELPER_S3_POOL_CAPTURE=3\n"
                        "RTPHELPER_S3_POOL_POST_CAPTURE=17\nRTPHELPER_S3_MULTIPART_THRESHOLD_BYTES=5MB\n")
    settings = load_settings({}, env_file=env_file)
    storage = S3Storage.from_settings(settings, environ={}, phase="capture")
    assert (storage.bucket, storage.prefix) == (BUCKET, "team/prefix")
    assert storage.client.meta.config.max_pool_connections == 3
    assert storage.transfer_config().multipart_threshold == 5 * MIB
    storage.set_phase("post")
    assert storage.client.meta.config.max_pool_connections == 17
    (tmp_path / "f").write_bytes(b"via runtime.env")
    assert storage.put_file(tmp_path / "f", "team/prefix/f").size == len(b"via runtime.env")
    # The process environment overrides the file, as for RTPHELPER_* settings.
    overridden = S3Storage.from_settings(settings, environ={"AWS_ACCESS_KEY_ID": "AKIAOTHEROTHEROTHER1"})
    with pytest.raises(StorageAuthError, match="InvalidAccessKeyId"):
        overridden.check()


def test_no_secret_or_signature_in_logs_or_errors(moto_server: MotoServer, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    storage = s3_storage(moto_server)
    (tmp_path / "s").write_bytes(b"secret check")
    storage.put_file(tmp_path / "s", "captures/s")
    storage.set_phase("post")  # logs the endpoint
    url = storage.presigned_url("captures/s")
    signature = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Signature"][0]
    with pytest.raises(StorageNotFoundError) as err:
        s3_storage(moto_server, bucket="absent-bucket").put_file(tmp_path / "s", "captures/s")
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("rtpcore")]
    assert any(moto_server.endpoint in m for m in ours)
    everything = "\n".join(r.getMessage() for r in caplog.records) + str(err.value)
    assert SECRET_KEY not in everything
    assert signature not in "\n".join(ours)
    # An endpoint written with user:password is masked wherever the backend names it.
    port = moto_server.port
    with_password = s3_storage(moto_server, endpoint_url=f"http://minio:pa55w0rd@127.0.0.1:{port}")
    assert "pa55w0rd" not in with_password.describe() and "(redacted)" in with_password.describe()


def test_local_backend_same_interface(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    src = tmp_path / "l.pcap"
    src.write_bytes(b"local bytes")
    info = storage.put_file(src, "lab/t/raw/l.pcap", sha256=hashlib.sha256(b"local bytes").hexdigest())
    assert info.size == 11 and (tmp_path / "store/lab/t/raw/l.pcap").read_bytes() == b"local bytes"
    assert [o.key for o in storage.list("lab/t/")] == ["lab/t/raw/l.pcap"]
    assert storage.presigned_url("lab/t/raw/l.pcap") == (tmp_path / "store/lab/t/raw/l.pcap").resolve().as_uri()
    storage.get_file("lab/t/raw/l.pcap", tmp_path / "out.pcap")
    assert (tmp_path / "out.pcap").read_bytes() == b"local bytes"
    with pytest.raises(StorageIntegrityError):
        storage.put_file(src, "lab/x", sha256="0" * 64)
    with pytest.raises(ValueError, match="'..'"):
        storage.put_file(src, "../escape")
