"""A tiny client of the Prefect REST API (httpx, a deadline on every call): what a laptop needs, without Prefect."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from rtpcore.errors import InputError, RtpCoreError

API_URL_VAR = "PREFECT_API_URL"
API_KEY_VAR = "PREFECT_API_KEY"
DEFAULT_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 2.0
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
MAX_ARTIFACTS = 200


class PrefectApiError(RtpCoreError):
    """The Prefect API cannot be reached or refused a request; the message names the URL and what to do."""


class DeploymentMissingError(PrefectApiError, InputError):
    """The deployment is not registered on the server."""


@dataclass(frozen=True, slots=True)
class FlowRunState:
    """A flow run as the laptop sees it: id, name, state and its message."""

    id: str
    name: str
    state: str          # COMPLETED, FAILED, RUNNING, PAUSED, …
    message: str

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True, slots=True)
class Artifact:
    """A run's artifact (key, type, data as Prefect stores it: a link artifact is markdown "[text](url)")."""

    key: str | None
    type: str
    description: str
    data: Any

    @property
    def link(self) -> tuple[str, str] | None:
        """(text, url) of a link artifact, else None."""
        text = self.data if isinstance(self.data, str) else ""
        if self.type != "markdown" or not text.startswith("[") or "](" not in text or not text.endswith(")"):
            return None
        label, _, url = text[1:-1].partition("](")
        return label, url


def api_url(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """--api, else PREFECT_API_URL; a clear error when neither is set."""
    url = (explicit or (environ if environ is not None else os.environ).get(API_URL_VAR, "")).strip()
    if not url:
        raise PrefectApiError(f"no Prefect API address: set {API_URL_VAR} (e.g. http://prefect-host:4200/api) "
                              "or pass --api")
    return url.rstrip("/")


class PrefectApi:
    """Deployments, flow runs, artifacts over REST; every call has a deadline and a message that names the URL."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout), headers=headers)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrefectApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=json)
        except httpx.TimeoutException:
            raise PrefectApiError(f"the Prefect API at {self.url} did not answer within "
                                  f"{self._client.timeout.read} s; check the server, or set {API_URL_VAR}") from None
        except httpx.HTTPError as exc:
            raise PrefectApiError(f"cannot reach the Prefect API at {self.url} ({type(exc).__name__}); start the "
                                  f"server (make server) or set {API_URL_VAR} to its address") from None
        if response.status_code >= 400 and response.status_code != 404:
            raise PrefectApiError(f"the Prefect API at {self.url} answered {response.status_code} to {method} {path}: "
                                  f"{response.text[:300]}")
        return response

    def deployment_id(self, flow: str, deployment: str) -> str:
        """The id of `flow/deployment`; DeploymentMissingError says to run `prefect deploy --all`."""
        response = self._call("GET", f"/deployments/name/{flow}/{deployment}")
        if response.status_code == 404:
            raise DeploymentMissingError(f"deployment {flow}/{deployment} not found at {self.url}: run "
                                         "`prefect deploy --all` (or `make deploy`) from the repository first")
        return str(response.json()["id"])

    def create_flow_run(self, deployment_id: str, parameters: Mapping[str, Any], *, tags: list[str] | None = None) -> FlowRunState:
        """A new run of the deployment with these parameters (the work pool's worker picks it up)."""
        body: dict[str, Any] = {"parameters": dict(parameters)}
        if tags:
            body["tags"] = tags
        response = self._call("POST", f"/deployments/{deployment_id}/create_flow_run", body)
        if response.status_code == 404:
            raise DeploymentMissingError(f"deployment {deployment_id} vanished from {self.url}; run `prefect deploy --all`")
        return _run_state(response.json())

    def flow_run(self, run_id: str) -> FlowRunState:
        response = self._call("GET", f"/flow_runs/{run_id}")
        if response.status_code == 404:
            raise PrefectApiError(f"flow run {run_id} not found at {self.url}")
        return _run_state(response.json())

    def flow_runs_named(self, name: str, *, limit: int = 10) -> list[FlowRunState]:
        """Runs with exactly this name, newest first."""
        body = {"flow_runs": {"name": {"any_": [name]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": limit}
        return [_run_state(doc) for doc in self._call("POST", "/flow_runs/filter", body).json()]

    def artifacts(self, run_id: str) -> list[Artifact]:
        body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": MAX_ARTIFACTS}
        return [Artifact(doc.get("key"), doc.get("type") or "", doc.get("description") or "", doc.get("data"))
                for doc in self._call("POST", "/artifacts/filter", body).json()]

    def wait(self, run_id: str, *, timeout: float, on_change: Callable[[FlowRunState], None] | None = None,
             interval: float = POLL_INTERVAL_S) -> FlowRunState:
        """Poll until the run reaches a final state (or the deadline: PrefectApiError names the run)."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            state = self.flow_run(run_id)
            if state.state != last and on_change is not None:
                on_change(state)
            last = state.state
            if state.final:
                return state
            if time.monotonic() >= deadline:
                raise PrefectApiError(f"flow run {state.name} ({run_id}) is still {state.state} after {timeout:g} s; "
                                      f"follow it in the UI")
            time.sleep(interval)


def _run_state(doc: Mapping[str, Any]) -> FlowRunState:
    state = doc.get("state") or {}
    return FlowRunState(str(doc["id"]), str(doc.get("name") or ""), str(state.get("type") or "PENDING"),
                        str(state.get("message") or ""))
