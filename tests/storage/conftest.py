"""A real S3 endpoint for the storage tests: moto_server as a separate process on a free port (no in-process mocks)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
BUCKET = "rtp-test-bucket"
REGION = "eu-west-1"
ACCESS_KEY = "AKIATESTDUMMY0000001"
SECRET_KEY = "dummy-S3cr3t-value-for-tests-only-0000"
READY_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """One moto_server process; stop/start reuse the port, freeze/thaw pause it with its state intact."""

    def __init__(self, port: int, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until it answers HTTP."""
        if not MOTO_SERVER.exists():
            pytest.skip(f"{MOTO_SERVER} not found: pip install 'moto[server]' into the venv")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"moto_server on port {self.port} not ready after {READY_TIMEOUT}s; see {self.log_path}")

    def stop(self) -> None:
        """Terminate the process (its in-memory buckets are gone); the port is free afterwards."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port, then recreate the test bucket."""
        self.stop()
        self.start()
        self.create_bucket()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung endpoint); state is kept."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after freeze."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):  # noqa: ANN201 - boto3 client
        """A plain boto3 client, independent of rtpcore, to check what really landed."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=access_key,
                            aws_secret_access_key=secret_key, config=Config(s3={"addressing_style": "path"}))

    def create_bucket(self, bucket: str = BUCKET) -> None:
        """Create a bucket (no error if it exists)."""
        client = self.client()
        try:
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass

    def enable_auth(self) -> None:
        """From now on only IAM users' keys are accepted (moto's INITIAL_NO_AUTH_ACTION_COUNT set to 0)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["status"] == "ok"

    def create_iam_user(self, name: str) -> tuple[str, str]:
        """An IAM user allowed everything; returns (access key id, secret). Call before enable_auth."""
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]


def point_cli_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> dict[str, str]:
    """The process environment a CLI run reads: no developer RTPHELPER_*/AWS_* config, S3 mode at `endpoint`."""
    for key in list(os.environ):
        if key.startswith(("RTPHELPER_", "AWS_")):
            monkeypatch.delenv(key)
    env = {"RTPHELPER_S3_ENDPOINT": endpoint, "RTPHELPER_S3_REGION": REGION,
           "RTPHELPER_S3_PATH": f"{BUCKET}/captures", "RTPHELPER_STORAGE_MODE": "s3",
           "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _server(tmp_path_factory: pytest.TempPathFactory, name: str) -> MotoServer:
    server = MotoServer(free_port(), tmp_path_factory.mktemp(name) / "moto.log")
    server.start()
    server.create_bucket()
    return server


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """The shared S3 endpoint with BUCKET created; tests must not stop it (use moto_private)."""
    server = _server(tmp_path_factory, "moto")
    yield server
    server.stop()


@pytest.fixture()
def moto_private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A server of this test's own, free to stop, restart, freeze or switch to IAM auth."""
    server = _server(tmp_path_factory, "moto-private")
    yield server
    server.stop()


@pytest.fixture()
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment a real run would have: dummy AWS keys and RTPHELPER_S3_* pointing at moto_server."""
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "RTPHELPER_S3_ENDPOINT": moto_server.endpoint,
        "RTPHELPER_S3_REGION": REGION,
        "RTPHELPER_S3_PATH": f"{BUCKET}/captures",
    }
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def s3_storage(server: MotoServer, *, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
               bucket: str = BUCKET, **overrides: object):  # noqa: ANN201 - S3Storage
    """An S3Storage on a moto server with short timeouts so outages are seen quickly."""
    from rtpcore.storage.s3 import S3Config, S3Storage

    params: dict[str, object] = {"connect_timeout": 1.0, "read_timeout": 2.0, "max_attempts": 2,
                                 "endpoint_url": server.endpoint}
    params.update(overrides)
    config = S3Config(bucket=bucket, prefix="captures", region=REGION, **params)  # type: ignore[arg-type]
    return S3Storage(config, credentials={"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})


def new_session(root: Path, environment: str = "prod-eu", folder: str | None = "ticket-42"):  # noqa: ANN201
    """A fresh session folder under root and its bucket location."""
    from rtpcore.session import new_session as make
    from rtpcore.storage.keys import SessionLocation

    paths = make(root, folder)
    return paths, SessionLocation.for_session_dir(paths.root, root, environment=environment, prefix="captures")


def write_chunk(folder: Path, name: str, size: int, *, index: int = 1):  # noqa: ANN201 - ChunkInfo
    """A closed chunk of random bytes, with the ChunkInfo a rolling writer would report."""
    import hashlib

    from rtpcore.pcap.rolling import ChunkInfo

    data = os.urandom(size)
    path = folder / name
    path.write_bytes(data)
    return ChunkInfo(name=name, path=path, index=index, packets=size // 100, bytes=size, first_ns=None, last_ns=None,
                     sha256=hashlib.sha256(data).hexdigest(), closed_reason="size")


def stored_sha256(server: MotoServer, key: str, bucket: str = BUCKET) -> str:
    """sha256 of the object's bytes as fetched with a plain boto3 client."""
    import hashlib

    return hashlib.sha256(server.client().get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()
