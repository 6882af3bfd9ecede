"""The capture verdict: a failed host or an empty capture is a failure, pending uploads a visible warning."""
from __future__ import annotations

from typing import Any

from rtpcore.capture.verdict import VERDICT_FAILED, VERDICT_OK, VERDICT_WARNING, capture_verdict, verdict_markdown

SESSION = "/caps/LAB/t-1/20260101_000000"
URL = "s3://bucket/caps/LAB/t-1/20260101_000000/"


def host(name: str, packets: int, error: str | None = None) -> dict[str, Any]:
    return {"host": name, "interface": "lo", "packets": packets, "error": error}


def doc(hosts: list[dict[str, Any]], **storage: Any) -> dict[str, Any]:
    base = {"mode": "s3", "status": "s3", "switched_at": None, "why": None, "pending": [], "failed": [],
            "location": URL}
    return {"hosts": hosts, "session": SESSION, "storage": base | storage}


def test_every_host_captured_and_uploaded_is_ok_and_names_the_s3_session() -> None:
    verdict = capture_verdict(doc([host("a", 10), host("b", 5)]))
    assert verdict.outcome == VERDICT_OK and not verdict.failed
    assert verdict.message == f"captured 15 packets on 2 host interface(s) into session {SESSION}, S3 {URL}"
    assert verdict_markdown(verdict) == f"S3 session: `{URL}`\n"


def test_one_failed_host_fails_the_run_even_when_others_captured() -> None:
    verdict = capture_verdict(doc([host("a", 10), host("b", 0, "b lo: connection refused")]))
    assert verdict.failed
    assert verdict.message.startswith("capture failed on 1 of 2 host interface(s): b lo: b lo: connection refused")
    assert verdict_markdown(verdict).startswith("## ❌ Capture failed\n\n- capture failed on 1 of 2")


def test_zero_packets_everywhere_is_a_failure_with_what_to_check() -> None:
    verdict = capture_verdict(doc([host("a", 0), host("b", 0)], location=None))
    assert verdict.outcome == VERDICT_FAILED
    assert verdict.message == ("nothing was captured (0 packets on every host): check the capture filter, the "
                               f"interfaces and that the call's media passes through these hosts (session {SESSION})")


def test_pending_uploads_complete_with_a_warning_saying_how_to_flush() -> None:
    verdict = capture_verdict(doc([host("a", 7)], status="local-fallback", switched_at="10:00:01Z",
                                  why="S3 did not answer within 4 s", pending=["raw/a-0001.pcap", "raw/a-0002.pcap"]))
    assert verdict.outcome == VERDICT_WARNING and not verdict.failed
    assert verdict.message == (
        f"captured 7 packets on 1 host interface(s) into session {SESSION}, S3 {URL}; warning: 2 file(s) not yet "
        f"uploaded to {URL} (kept in {SESSION}); S3 fallback to local at 10:00:01Z: S3 did not answer within 4 s; "
        f"upload them with `rtphelper flush {SESSION}` or the flush-session flow")
    assert "## ⚠️ Warning" in verdict_markdown(verdict)


def test_failed_uploads_warn_and_a_failure_still_shows_pending_uploads() -> None:
    verdict = capture_verdict(doc([host("a", 3)], failed=["raw/a-0001.pcap"]))
    assert verdict.outcome == VERDICT_WARNING and "1 upload(s) failed verification" in verdict.message
    both = capture_verdict(doc([host("a", 0, "a lo: gone")], pending=["raw/a-0001.pcap"]))
    assert both.failed and "; also: 1 file(s) not yet uploaded" in both.message
