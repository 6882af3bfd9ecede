"""Keep schedules enabled or paused across `prefect deploy --all` (which resets them to prefect.yaml's `active:`).

    schedule_states.py save STATE.json      before deploying: each slugged schedule's active state
    schedule_states.py restore STATE.json   after deploying: put back the states that changed

Used by `make deploy` (scripts/desk.sh); talks to PREFECT_API_URL over plain HTTP.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

API_TIMEOUT_S = 30.0
PAGE = 200
USAGE = "usage: schedule_states.py save|restore STATE.json"


def _deployments(client: httpx.Client, api: str) -> list[dict[str, Any]]:
    """Every deployment with its schedules, page by page."""
    found: list[dict[str, Any]] = []
    while True:
        page = client.post(f"{api}/deployments/filter", json={"offset": len(found), "limit": PAGE})
        page.raise_for_status()
        found += page.json()
        if len(page.json()) < PAGE:
            return found


def _states(deployments: list[dict[str, Any]]) -> dict[str, bool]:
    """'deployment-id/slug' -> active, for every schedule that has a slug (only those survive a redeploy)."""
    return {f"{d['id']}/{s['slug']}": bool(s["active"]) for d in deployments for s in d.get("schedules") or []
            if s.get("slug")}


def save(client: httpx.Client, api: str, path: Path) -> int:
    """Write the current states; returns how many schedules were recorded."""
    states = _states(_deployments(client, api))
    path.write_text(json.dumps(states, indent=1))
    return len(states)


def restore(client: httpx.Client, api: str, path: Path) -> list[str]:
    """Set back every schedule whose state the deploy changed; returns 'deployment/slug: on|off' per change."""
    before: dict[str, bool] = json.loads(path.read_text())
    changed = []
    for dep in _deployments(client, api):
        for sched in dep.get("schedules") or []:
            key = f"{dep['id']}/{sched.get('slug')}"
            if key in before and before[key] != sched["active"]:
                # Resend the parameters: the server resets those a PATCH leaves out to {} (Prefect 3.9).
                done = client.patch(f"{api}/deployments/{dep['id']}/schedules/{sched['id']}",
                                    json={"active": before[key], "parameters": sched.get("parameters") or {}})
                done.raise_for_status()
                changed.append(f"{dep['name']}/{sched['slug']}: {'on' if before[key] else 'off'}")
    return changed


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("save", "restore"):
        print(USAGE, file=sys.stderr)
        return 2
    api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not api:
        print("schedule_states: PREFECT_API_URL is not set: point it at the Prefect server's /api", file=sys.stderr)
        return 2
    with httpx.Client(timeout=API_TIMEOUT_S) as client:
        if argv[0] == "save":
            save(client, api, Path(argv[1]))
        else:
            for line in restore(client, api, Path(argv[1])):
                print(f"schedule kept as it was before the deploy: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
