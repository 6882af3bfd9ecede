"""prefect.yaml deploys against a real server, forms get dropdowns, and a worker runs a deployment."""
from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


def _env() -> dict[str, str]:
    env = dict(os.environ, PREFECT_API_URL=_api_url(), RTPHELPER_HOME=str(REPO))  # prefect.yaml's pull step
    env.pop("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", None)
    return env


def test_every_entrypoint_is_a_flow() -> None:
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for dep in doc["deployments"]:
        path, name = dep["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert dep["name"] == flow.name or dep["name"].startswith(flow.name + "-")


def test_deploy_and_run_through_a_worker(generated, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment

    async def make_pool() -> None:
        async with get_client() as client:
            try:
                await client.create_work_pool(WorkPoolCreate(name="rtphelper", type="process"))
            except Exception as exc:  # noqa: BLE001 - already there from an earlier test
                if "already exists" not in str(exc).lower() and "409" not in str(exc):
                    raise

    asyncio.run(make_pool())
    deploy = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

    async def read_deployments():
        async with get_client() as client:
            return {d.name: d for d in await client.read_deployments()}

    deployments = asyncio.run(read_deployments())
    schema = deployments["correlate-call"].parameter_openapi_schema
    direction = schema["properties"]["direction"]
    assert direction.get("enum") == ["inbound", "outbound"] or "inbound" in str(direction)
    assert "rolling chunks" in schema["properties"]["media"]["description"]
    min_packets = schema["properties"]["min_packets"]  # int ≥ 0 or null (null: RTPHELPER_MIN_LEG_PACKETS)
    assert [a.get("minimum") for a in min_packets.get("anyOf", [min_packets]) if a.get("type") == "integer"] == [0]

    folder = generated("outbound-b2bua")
    out = tmp_path / "out"
    run = run_deployment("correlate-call/correlate-call", timeout=0, parameters={
        "sip_pcap": str(folder / "sip.pcap"), "direction": "outbound", "media": [str(folder / "media")],
        "output_folder": str(out)})
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "rtphelper", "--run-once"],
                              cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = worker.communicate(timeout=240)
    finally:
        worker.kill()

    async def state_of(run_id):
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state

    deadline = time.monotonic() + 60
    state = asyncio.run(state_of(run.id))
    while not state.is_final() and time.monotonic() < deadline:
        time.sleep(1)
        state = asyncio.run(state_of(run.id))
    assert state.is_completed(), (state, output[-3000:])
    assert (out / "combined" / "SIP_plus_media_decrypted.pcap").is_file()
