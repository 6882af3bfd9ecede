"""`rtphelper submit` from a "laptop" whose folder the worker cannot see (its own mount namespace), local and S3."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import load_truth
from tests.desk.conftest import POOL, SECRET, DeskWorld
from tests.e2e.conftest import PrefectStack
from tests.storage.conftest import BUCKET, MotoServer

SUBMIT_TIMEOUT_S = 600
OUTPUTS = ("media_raw.pcap", "media_decrypted.pcap", "SIP_plus_media_decrypted.pcap")


def _submit(world: DeskWorld, *args: str) -> subprocess.CompletedProcess[str]:
    """The laptop's command line, run in the laptop folder with the laptop's environment."""
    return subprocess.run([sys.executable, "-m", "rtpcore.cli", "submit", *args], cwd=world.laptop,
                          env=world.laptop_env, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S)


def _laptop_sip(world: DeskWorld, folder: Path, name: str) -> Path:
    sip = world.laptop / name
    sip.write_bytes((folder / "sip.pcap").read_bytes())
    return sip


def test_submit_local_session_uploads_runs_and_downloads(desk_world: DeskWorld, prefect_stack: PrefectStack,
                                                         generated) -> None:
    folder = generated("rolling")
    truth = load_truth(folder)
    session = desk_world.captures / "ticket-77" / "20260101_101010"
    (session / "raw").mkdir(parents=True)
    for chunk in sorted((folder / "media").glob("*.pcap")):
        (session / "raw" / chunk.name).write_bytes(chunk.read_bytes())
    sip = _laptop_sip(desk_world, folder, "call-77.pcap")
    done = _submit(desk_world, "--sip", sip.name, "--direction", "inbound", "--session", str(session),
                   "--deployment", f"correlate-call/{POOL}", "--download", "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "correlate-ticket-77" in done.stdout and "COMPLETED" in done.stdout
    for name in OUTPUTS:
        assert (desk_world.laptop / "out" / name).read_bytes() == (session / "combined" / name).read_bytes()
    assert (session / "uploads" / "call-77.pcap").read_bytes() == sip.read_bytes()
    assert not list((desk_world.captures / "incoming").iterdir()), "the serve upload is dropped once in uploads/"
    runs = prefect_stack.api("POST", "/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["correlate-ticket-77"]}}})
    assert runs and str(desk_world.laptop) not in runs[0]["parameters"]["sip_pcap"]
    assert "ticket-77" in runs[0]["tags"]
    assert SECRET not in done.stdout + done.stderr
    from rtpcore.pcap.reader import open_capture

    with open_capture(desk_world.laptop / "out" / "media_decrypted.pcap") as reader:
        packets = sum(1 for _ in reader)
    assert packets >= sum(s["packets"] for s in truth["streams"]), "every stream of the call is in the download"

    again = _submit(desk_world, "--sip", sip.name, "--direction", "inbound", "--session", str(session),
                    "--deployment", f"correlate-call/{POOL}", "--download", "out")
    assert again.returncode == 1 and "FAILED" in again.stdout and "already exists" in again.stdout, again.stdout
    for name in OUTPUTS:
        assert (desk_world.laptop / "out" / name).read_bytes() == (session / "combined" / name).read_bytes()


def test_submit_s3_session_puts_the_sip_pcap_into_its_uploads(desk_world: DeskWorld, moto_server: MotoServer,
                                                              generated) -> None:
    folder = generated("rolling")
    prefix = "captures/PRD/ticket-78/20260101_111111"
    client = moto_server.client()
    for chunk in sorted((folder / "media").glob("*.pcap")):
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/raw/{chunk.name}", Body=chunk.read_bytes())
    sip = _laptop_sip(desk_world, folder, "call-78.pcap")
    done = _submit(desk_world, "--sip", sip.name, "--direction", "inbound", "--session", f"s3://{BUCKET}/{prefix}/",
                   "--deployment", f"correlate-call/{POOL}", "--download", "out78")
    assert done.returncode == 0, done.stdout + done.stderr
    uploaded = client.get_object(Bucket=BUCKET, Key=f"{prefix}/uploads/call-78.pcap")["Body"].read()
    assert uploaded == sip.read_bytes()
    for name in OUTPUTS:
        in_s3 = client.get_object(Bucket=BUCKET, Key=f"{prefix}/combined/{name}")["Body"].read()
        assert (desk_world.laptop / "out78" / name).read_bytes() == in_s3
    assert "X-Amz-Signature" in done.stdout, "presigned links are printed for the engineer"


def test_submit_errors_say_what_to_do(desk_world: DeskWorld, generated) -> None:
    folder = generated("inbound-proxy")
    sip = _laptop_sip(desk_world, folder, "call-79.pcap")
    env = dict(desk_world.laptop_env)
    down = subprocess.run([sys.executable, "-m", "rtpcore.cli", "submit", "--sip", sip.name, "--direction", "inbound",
                           "--media", "/nowhere", "--api", "http://127.0.0.1:9/api"], cwd=desk_world.laptop, env=env,
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 2 and "http://127.0.0.1:9/api" in down.stderr and "PREFECT_API_URL" in down.stderr
    missing = _submit(desk_world, "--sip", sip.name, "--direction", "inbound", "--media", "/nowhere",
                      "--deployment", "process-call/not-deployed")
    assert missing.returncode == 2 and "prefect deploy --all" in missing.stderr
    failed = _submit(desk_world, "--sip", sip.name, "--direction", "inbound", "--media", str(folder / "nowhere"),
                     "--output-folder", "ticket-79", "--deployment", f"process-call/{POOL}", "--watch")
    assert failed.returncode == 1 and "FAILED" in failed.stdout and "media folder not found" in failed.stdout
    assert not (desk_world.captures / "ticket-79").exists()


def test_submit_media_makes_a_new_session_with_the_sip_pcap_in_uploads(desk_world: DeskWorld, generated) -> None:
    folder = generated("rolling")
    imports = desk_world.captures.parent / "imports" / "ticket-80"  # raw captures somewhere on the worker
    imports.mkdir(parents=True)
    for chunk in sorted((folder / "media").glob("*.pcap")):
        (imports / chunk.name).write_bytes(chunk.read_bytes())
    sip = _laptop_sip(desk_world, folder, "call-80.pcap")
    done = _submit(desk_world, "--sip", sip.name, "--direction", "inbound", "--media", str(imports),
                   "--output-folder", "ticket-80", "--deployment", f"process-call/{POOL}", "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    (session,) = (desk_world.captures / "ticket-80").iterdir()
    assert (session / "uploads" / "call-80.pcap").read_bytes() == sip.read_bytes()
    # raw/ also holds each chunk's index, built and cached on first use (issue 12)
    assert sorted(p.name for p in (session / "raw").iterdir() if p.suffix == ".pcap") == sorted(
        p.name for p in imports.iterdir())
    for name in OUTPUTS:
        assert (session / "combined" / name).is_file()
        assert f"{name}: {desk_world.serve_url}/files/ticket-80/{session.name}/combined/{name}?expires=" in done.stdout
