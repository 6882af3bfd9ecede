"""What a finished capture's final state must say, so a run never reads Completed when it failed (issue 9).

A capture is failed when any host failed or nothing at all was captured; it completed with a warning when
files are still waiting for S3 (or failed to upload); otherwise it is simply done. The flow turns this into a
Prefect state and a markdown artifact; the text names the session, the S3 location and what to do next.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

VERDICT_OK: Final = "ok"
VERDICT_WARNING: Final = "warning"
VERDICT_FAILED: Final = "failed"
MAX_LISTED_ERRORS = 3  # a state message stays one readable line; the artifact lists every host

Outcome = Literal["ok", "warning", "failed"]


@dataclass(frozen=True, slots=True)
class CaptureVerdict:
    """The final state's kind and its one-line message; `warnings` are shown even when the run failed."""

    outcome: Outcome
    message: str
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    session_url: str | None = None

    @property
    def failed(self) -> bool:
        """The run must end Failed."""
        return self.outcome == VERDICT_FAILED


def _host_errors(hosts: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{h['host']} {h['interface']}: {h['error']}" for h in hosts if h.get("error")]


def _storage_warnings(storage: Mapping[str, Any], session: str) -> list[str]:
    """Pending or failed uploads: data is safe locally, but not where the user expects it."""
    pending = list(storage.get("pending") or [])
    failed = list(storage.get("failed") or [])
    where = storage.get("location") or "S3"
    out = []
    if pending:
        text = f"{len(pending)} file(s) not yet uploaded to {where} (kept in {session})"
        if storage.get("switched_at"):
            text += f"; S3 fallback to local at {storage['switched_at']}: {storage.get('why') or 'unknown reason'}"
        out.append(text + f"; upload them with `rtphelper flush {session}` or the flush-session flow")
    if failed:
        out.append(f"{len(failed)} upload(s) failed verification or ran out of attempts ({', '.join(failed[:3])}"
                   f"{', …' if len(failed) > 3 else ''}); they stay local: rerun `rtphelper flush {session}`")
    for error in storage.get("errors") or []:
        out.append(f"storage: {error}")
    return out


def capture_verdict(doc: Mapping[str, Any]) -> CaptureVerdict:
    """Judge a capture summary (CaptureResult.to_json()): failed / completed with a warning / done."""
    hosts: Sequence[Mapping[str, Any]] = doc.get("hosts") or []
    session = str(doc.get("session") or "")
    storage: Mapping[str, Any] = doc.get("storage") or {}
    url = storage.get("location") or None
    errors = _host_errors(hosts)
    packets = sum(int(h.get("packets") or 0) for h in hosts)
    warnings = tuple(_storage_warnings(storage, session))
    problems: list[str] = []
    if errors:
        shown = "; ".join(errors[:MAX_LISTED_ERRORS]) + ("; …" if len(errors) > MAX_LISTED_ERRORS else "")
        problems.append(f"capture failed on {len(errors)} of {len(hosts)} host interface(s): {shown}")
    if not hosts or packets == 0:
        problems.append("nothing was captured (0 packets on every host): check the capture filter, the "
                        "interfaces and that the call's media passes through these hosts")
    where = f"session {session}" + (f", S3 {url}" if url else "")
    if problems:
        message = "; ".join(problems) + f" ({where})"
        if warnings:
            message += "; also: " + "; ".join(warnings)
        return CaptureVerdict(VERDICT_FAILED, message, tuple(problems), warnings, url)
    done = f"captured {packets} packets on {len(hosts)} host interface(s) into {where}"
    if warnings:
        return CaptureVerdict(VERDICT_WARNING, f"{done}; warning: " + "; ".join(warnings), (), warnings, url)
    return CaptureVerdict(VERDICT_OK, done, (), (), url)


def verdict_markdown(verdict: CaptureVerdict) -> str:
    """The top of the summary artifact: the outcome and what to do, before the per-host table."""
    lines = []
    if verdict.failed:
        lines += ["## ❌ Capture failed", ""] + [f"- {p}" for p in verdict.problems]
    if verdict.warnings:
        lines += ["", "## ⚠️ Warning", ""] + [f"- {w}" for w in verdict.warnings]
    if verdict.session_url:
        lines += ["", f"S3 session: `{verdict.session_url}`"]
    return "\n".join(lines).strip("\n") + "\n" if lines else ""
