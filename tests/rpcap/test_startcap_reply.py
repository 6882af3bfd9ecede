"""A malformed start-capture reply is a protocol error like any other reply: the capture reconnects (issue 9)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from rtpcore.rpcap import protocol as p
from tests.rpcap import conftest as rpcapd_conftest
from tests.rpcap.test_capture_engine import capturing, payloads, received, session, target, udp, wait_for, written  # noqa: F401


def test_malformed_start_capture_reply_on_reconnect_is_retried(rpcapd_disposable, udp, tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real = p.StartCaptureReply.decode
    calls: list[int] = []
    raised: list[BaseException] = []

    def decode(payload: bytes):  # the first reply after the restart is garbage; later ones are fine
        calls.append(1)
        if len(calls) == 2:
            try:
                return real(payload[:1])
            except ValueError as exc:
                raised.append(exc)
                raise
        return real(payload)

    monkeypatch.setattr(p.StartCaptureReply, "decode", staticmethod(decode))
    before, after = payloads(b"before", 50), payloads(b"after", 50, start=50)
    s = session([target(rpcapd_disposable)], tmp_path, filter_expression=f"udp port {udp.port}")
    s.start()
    restarted = None
    try:
        capturing(s)
        udp.send(before)
        wait_for(received(s, 0, len(before)))
        rpcapd_disposable.kill()
        wait_for(lambda: s.progress()[0].state == "reconnecting")
        monkeypatch.setattr(rpcapd_conftest, "_free_port", lambda: rpcapd_disposable.port)
        restarted = rpcapd_conftest.Rpcapd(rpcapd_disposable.proc.args[0], ["-n"], tmp_path / "rpcapd2.log")
        wait_for(lambda: s.progress()[0].state == "capturing" and len(calls) >= 3)
        time.sleep(0.2)
        udp.send(after)
        wait_for(received(s, 0, len(before) + len(after)))
    finally:
        s.stop()
        summary = s.wait()
        if restarted is not None:
            restarted.stop()
    host = summary.hosts[0]
    assert raised, "the malformed reply was never decoded"
    assert host.error is None, host.error
    assert written(host.files) == before + after
    assert len(host.gaps) == 1
