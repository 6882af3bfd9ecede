"""The durable upload queue against moto_server: keys and checksums, spool cap, and a SIGKILLed uploader resuming."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rtpcore.settings import load_settings
from rtpcore.storage import QUEUE_DIR, UploadQueue, open_session_storage
from rtpcore.storage.queue import QueueStore
from tests.storage.conftest import REPO, MotoServer, new_session, s3_storage, stored_sha256, write_chunk

KIB = 1024


def test_closed_chunks_and_outputs_land_with_layout_keys(s3_env: dict[str, str], moto_server: MotoServer,
                                                         tmp_path: Path) -> None:
    settings = load_settings(s3_env, base_dir=tmp_path)
    paths, location = new_session(tmp_path / "root", environment="prod-eu", folder="ticket-42")
    session = open_session_storage(settings, paths.root, location)
    try:
        assert session.queue is not None and session.queue.limit == settings.s3_upload_concurrency_capture
        chunks = [write_chunk(paths.raw, f"eu-sbc1-{n:04d}.pcap", 40 * KIB + n, index=n) for n in range(1, 5)]
        for info in chunks:
            session.on_chunk_closed(info)
        sip = paths.uploads / "call.pcap"
        sip.write_bytes(os.urandom(5000))
        session.enqueue(sip)
        session.set_phase("post")
        assert session.queue.limit == settings.s3_upload_concurrency_post_capture
        report = session.flush(timeout=30)
    finally:
        session.close()
    assert report.ok and report.left == () and report.uploaded == 5
    stamp = paths.root.name
    for info in chunks:
        key = f"captures/prod-eu/ticket-42/{stamp}/raw/{info.name}"
        assert stored_sha256(moto_server, key) == info.sha256
        assert info.path.exists()  # under the spool cap nothing is removed
    assert stored_sha256(moto_server, f"captures/prod-eu/ticket-42/{stamp}/uploads/call.pcap") == \
        hashlib.sha256(sip.read_bytes()).hexdigest()
    records = [json.loads(p.read_text()) for p in sorted((paths.root / QUEUE_DIR).glob("*.item.json"))]
    assert [r["state"] for r in records] == ["done"] * 5 and all(r["attempts"] == 1 for r in records)
    assert session.summary()["storage"] == "s3" and session.summary()["uploaded"] == 5


def test_spool_cap_evicts_oldest_uploaded_chunks_first(moto_server: MotoServer, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    paths, location = new_session(tmp_path)
    queue = UploadQueue(paths.root, s3_storage(moto_server), location, workers=1, spool_max_bytes=250 * KIB,
                        start=False)
    chunks = [write_chunk(paths.raw, f"h-{n:04d}.pcap", 100 * KIB, index=n) for n in range(1, 6)]
    caplog.set_level(logging.WARNING, logger="rtpcore.storage")
    for info in chunks:
        queue.on_chunk_closed(info)
    over_cap = [r for r in caplog.records if "LOCAL SPOOL OVER CAP" in r.getMessage()]
    assert len(over_cap) == 1  # one warning per crossing, not one per chunk; every chunk still on disk
    assert all(info.path.exists() for info in chunks)
    queue.start()
    assert queue.flush(timeout=30)
    queue.close()
    assert [info.path.exists() for info in chunks] == [False, False, False, True, True]
    assert queue.spool_bytes() == 200 * KIB
    assert [i.evicted for i in queue.items()] == [True, True, True, False, False]
    for info in chunks:  # evicted only after a verified upload
        assert stored_sha256(moto_server, location.key_for(f"raw/{info.name}")) == info.sha256
    # Workers stopped (as if S3 were down): new chunks evict the remaining uploaded ones, oldest first,
    # then the cap is crossed again with nothing evictable and the warning (re-armed) fires once more.
    more = [write_chunk(paths.raw, f"h-{n:04d}.pcap", 100 * KIB, index=n) for n in (6, 7, 8)]
    for info in more:
        queue.on_chunk_closed(info)
    assert [info.path.exists() for info in chunks + more] == [False] * 5 + [True] * 3
    assert len([r for r in caplog.records if "LOCAL SPOOL OVER CAP" in r.getMessage()]) == 2


_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rtpcore.storage.keys import SessionLocation
    from rtpcore.storage.queue import QueueStore, UploadQueue
    from tests.storage.conftest import MotoServer, s3_storage

    class Slow(type(s3_storage(MotoServer(0, Path("/dev/null"))))):
        def put_file(self, local_path, key, *, sha256=None):
            time.sleep(0.3)  # so the parent can kill us mid-queue
            return super().put_file(local_path, key, sha256=sha256)

    session = Path(sys.argv[1])
    server = MotoServer(int(sys.argv[2]), Path("/dev/null"))
    storage = s3_storage(server)
    storage.__class__ = Slow
    location = QueueStore(session).load_location()
    queue = UploadQueue(session, storage, location, workers=1, concurrency_capture=1)
    print("started", flush=True)
    queue.flush(timeout=60)
""")


def test_killed_uploader_resumes_after_restart(moto_server: MotoServer, tmp_path: Path) -> None:
    paths, location = new_session(tmp_path)
    seeder = UploadQueue(paths.root, s3_storage(moto_server), location, start=False)
    chunks = [write_chunk(paths.raw, f"k-{n:04d}.pcap", 20 * KIB, index=n) for n in range(1, 9)]
    for info in chunks:
        seeder.on_chunk_closed(info)
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(paths.root), str(moto_server.port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = QueueStore(paths.root)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [i.state for i in store.load_all()]
            if states.count("done") >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    states = [i.state for i in store.load_all()]
    assert 2 <= states.count("done") < len(chunks), states
    assert set(states) <= {"done", "uploading", "pending"}
    resumed = UploadQueue(paths.root, s3_storage(moto_server), location, workers=2, start=False)
    assert "uploading" not in [i.state for i in resumed.items()]  # an interrupted upload starts over
    resumed.start()
    assert resumed.flush(timeout=30)
    resumed.close()
    assert resumed.pending() == []
    for info in chunks:
        assert stored_sha256(moto_server, location.key_for(f"raw/{info.name}")) == info.sha256
    assert [i.state for i in QueueStore(paths.root).load_all()] == ["done"] * len(chunks)
