"""Capture sessions: one thread per RPCAP target writing rolling pcap chunks, reconnecting when rpcapd goes away.

The loop enforces its own deadline and polls a stop flag (Prefect cannot interrupt a worker thread);
every chunk is opened and closed in the manifest, so a crash leaves nothing unaccounted for.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtpcore.capture.manifest import MANIFEST_NAME, Manifest, record_index
from rtpcore.capture.repair import RAW_DIR
from rtpcore.capture.stats import (
    STATE_CAPTURING,
    STATE_DONE,
    STATE_FAILED,
    STATE_RECONNECTING,
    CaptureProgress,
    CaptureSummary,
    Gap,
    HostCounters,
    HostSummary,
)
from rtpcore.errors import CaptureError, RtpCoreError
from rtpcore.pcap.rolling import BIG_ENDIAN_LINKTYPES, DEFAULT_MAX_BYTES, ChunkInfo, RollingPcapWriter
from rtpcore.rpcap.client import (
    RpcapAuthError,
    RpcapClient,
    RpcapConnectError,
    RpcapError,
    RpcapFilterError,
    RpcapProtocolError,
)
from rtpcore.rpcap.protocol import MAXIMUM_SNAPLEN, RPCAP_DEFAULT_PORT, RemotePacket

if TYPE_CHECKING:  # hosts.yaml's pydantic models cost ~0.1 s of CPU to import: `capture --address` needs none
    from rtpcore.hosts import HostEntry

__all__ = [
    "ADHOC",
    "DEFAULT_FILTER",
    "CaptureSession",
    "CaptureTarget",
    "ReconnectPolicy",
    "adhoc_target",
    "targets_for_hosts",
]

ADHOC = "adhoc"
DEFAULT_FILTER = "udp"             # media is UDP; an empty filter would also stream the host's SSH and backups
TICK_SECONDS = 1.0                 # writer.tick(): time rollover without packets, flush on wall time
STATS_SECONDS = 5.0                # rpcapd stats() and one progress line per host
POLL_SECONDS = 0.2                 # longest wait for packets before the stop flag and the deadline are checked
READ_BYTES = 4 << 20               # one recv() of the data channel: thousands of packets per Python call
READ_TIMEOUT_MS = 50               # rpcapd's pcap timeout: packets reach us within this even at low rates
GATHER_SECONDS = 0.01              # after a read, let ~1000 packets (at 100k pps) gather before the next one
GATHER_BELOW = 1 << 20             # ... unless the read was this big: then read again at once and catch up
CONNECT_TIMEOUT = 10.0
DLT_RAW_LINUX = 12
LINKTYPE_RAW = 101
_UNSAFE_LABEL = re.compile(r"[^A-Za-z0-9._-]")  # one "_" per character: 2001:db8::1 ≠ 2001:db8:1
_log = logging.getLogger(__name__)

Connection = tuple[RpcapClient, RollingPcapWriter]


@dataclass(frozen=True, slots=True)
class CaptureTarget:
    """One (host, interface) to capture; `label` is the chunk stem `<region>-<host>[-<iface>]`."""

    host: str
    env: str
    region: str
    address: str
    port: int
    interface: str
    label: str
    auth: tuple[str, str] | None = None
    tls: bool = False

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


def _safe(text: str) -> str:
    """A file-name-safe form of an interface or address (`eth0.100`, `10.0.0.1`, `2001_db8__1`)."""
    return _UNSAFE_LABEL.sub("_", text).strip("_") or "x"


def targets_for_hosts(entries: Sequence[HostEntry], interfaces: Sequence[str] | None = None) -> list[CaptureTarget]:
    """One target per configured interface (narrowed to `interfaces`); hosts with several get `-<iface>` stems."""
    targets = []
    for entry in entries:
        chosen = list(entry.interfaces)
        if interfaces:
            missing = [i for i in interfaces if i not in entry.interfaces]
            if missing:
                raise CaptureError(
                    f"{entry.id}: interface {', '.join(missing)} is not configured for this host in hosts.yaml"
                    f" (configured: {', '.join(entry.interfaces)})")
            chosen = [i for i in entry.interfaces if i in interfaces]
        auth = (entry.auth.username or "", entry.auth.password or "") if entry.auth.mode == "password" else None
        for iface in chosen:
            label = entry.label if len(entry.interfaces) == 1 else f"{entry.label}-{_safe(iface)}"
            targets.append(CaptureTarget(entry.id, entry.env, entry.region, entry.address, entry.port, iface, label,
                                         auth))
    return targets


def adhoc_target(
    address: str, interface: str, port: int = RPCAP_DEFAULT_PORT, *, auth: tuple[str, str] | None = None,
    tls: bool = False,
) -> CaptureTarget:
    """A host that is not in hosts.yaml: env and region "adhoc", the address stands in for the host id."""
    label = f"{ADHOC}-{_safe(address)}-{_safe(interface)}"
    return CaptureTarget(address, ADHOC, ADHOC, address, port, interface, label, auth, tls)


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Exponential backoff per outage: base, 2·base, 4·base … capped at max_seconds, max_attempts tries."""

    base_seconds: float = 2.0
    max_seconds: float = 30.0
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.base_seconds < 0 or self.max_seconds < self.base_seconds or self.max_attempts < 0:
            raise ValueError(f"reconnect policy needs 0 <= base <= max and attempts >= 0, got {self}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt 1, 2, …"""
        return min(self.base_seconds * 2 ** (attempt - 1), self.max_seconds)


def linktype_of(dlt: int) -> int:
    """rpcapd reports the server's DLT_*; on Linux servers it equals LINKTYPE_* except DLT_RAW."""
    return LINKTYPE_RAW if dlt == DLT_RAW_LINUX else dlt


class _HostCapture:
    """The capture thread of one target: connect, stream into chunks, reconnect, end cleanly."""

    def __init__(self, session: CaptureSession, target: CaptureTarget) -> None:
        self.session = session
        self.target = target
        self.counters = HostCounters()
        self.error: str | None = None
        self.state = STATE_CAPTURING
        self.thread = threading.Thread(target=self.run, name=f"capture-{target.label}", daemon=True)

    # -- thread body --------------------------------------------------------------------------

    def run(self) -> None:
        conn: Connection | None = None
        try:
            conn = self._open()
            while conn is not None:
                current = conn
                try:
                    self._stream(current)
                    self._finish(current)
                    conn = None
                except (RpcapConnectError, RpcapProtocolError) as exc:  # includes RpcapConnectionLostError
                    lost_ns = time.time_ns()
                    self._drop(current)
                    conn = None
                    conn = self._reconnect(lost_ns, exc)
            self.state = STATE_DONE
        except RtpCoreError as exc:
            self.error = f"{self.target.host} {self.target.interface}: {exc}"
            self.state = STATE_FAILED
        except Exception as exc:  # noqa: BLE001 - one host's bug must not stop the others
            _log.exception("capture of %s failed", self.target.label)
            self.error = f"{self.target.host} {self.target.interface}: internal error: {type(exc).__name__}: {exc}"
            self.state = STATE_FAILED
        finally:
            if conn is not None:
                self._drop(conn)
            self._progress()
        if self.error:
            _log.info("capture %s ended with an error: %s", self.target.label, self.error)

    def _open(self) -> Connection:
        """Connect, authenticate, open the interface, start the capture and a fresh chunk series."""
        t, s = self.target, self.session
        client = RpcapClient(t.address, t.port, timeout=s.connect_timeout, auth=t.auth, tls=t.tls)
        try:
            client.authenticate()
            try:
                opened = client.open(t.interface)
            except (RpcapAuthError, RpcapConnectError):
                raise
            except RpcapError as exc:
                raise self._interface_error(client, exc) from None
            client.start_capture(s.filter_expression, snaplen=s.snaplen, read_timeout_ms=READ_TIMEOUT_MS)
            writer = self._writer(linktype_of(opened.linktype))
        except BaseException:
            client.close()
            raise
        self.counters.connection_ended()
        self.state = STATE_CAPTURING
        return client, writer

    def _interface_error(self, client: RpcapClient, exc: RpcapError) -> RpcapError:
        """When the interface does not exist there, say which ones do."""
        try:
            names = [i.name for i in client.list_interfaces()]
        except RpcapError:
            return exc
        if self.target.interface in names:
            return exc
        return RpcapError(
            f"{client.url}: interface {self.target.interface!r} not found on the host; it has: {', '.join(names)}",
            code=exc.code)

    def _writer(self, linktype: int) -> RollingPcapWriter:
        t, s = self.target, self.session

        def opened(path: Path) -> None:
            s.manifest.open_chunk(t.host, t.interface, path.name, linktype=linktype)

        def closed(info: ChunkInfo) -> None:
            record_index(info)  # the sidecar index first: the uploader queues it together with the chunk
            s.manifest.append_chunk(t.host, t.interface, info)
            self.counters.files.append(info.path.resolve())
            s.chunk_closed(info)

        # Big-endian chunks: rpcap_pkthdr is a big-endian pcap record header, so records are copied as they come
        # (link types with host-byte-order headers stay little-endian and are written record by record).
        return RollingPcapWriter(s.raw, t.label, linktype, snaplen=s.snaplen, max_bytes=s.max_bytes,
                                 max_seconds=s.max_seconds, on_open=opened, on_close=closed,
                                 big_endian=linktype in BIG_ENDIAN_LINKTYPES)

    def _stream(self, conn: Connection) -> None:
        """Read and write until the deadline or the stop flag; connection trouble propagates."""
        client, writer = conn
        s, counters = self.session, self.counters
        stop, deadline = s.stop_event, s.deadline
        read, write, count = client.read_batch, writer.write_records, counters.count_batch
        started = time.monotonic()
        next_tick, next_stats = started + TICK_SECONDS, started + s.stats_interval
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            batch = read(READ_BYTES, min(POLL_SECONDS, deadline - now))
            if batch is not None:
                if batch.keys:
                    write(batch.records, batch.keys, batch.caplens)
                    count(len(batch.keys), sum(batch.caplens), batch.last_npkt)
                if batch.tail:  # what the exact parse took (e.g. packets over 65515 bytes): per record
                    writer.write_many([(ts, data, length) for ts, _, length, _, data in batch.tail])
                    counters.count(batch.tail)
                if len(batch.records) < GATHER_BELOW:
                    stop.wait(GATHER_SECONDS)
            if now >= next_tick:
                writer.tick(time.time_ns())
                next_tick = now + TICK_SECONDS
            if now >= next_stats:
                self._poll_stats(client)
                self._progress()
                next_stats = now + s.stats_interval

    def _poll_stats(self, client: RpcapClient) -> None:
        """rpcapd's counters over the control channel while the data channel streams (same thread: no race)."""
        try:
            self.counters.stats = client.stats()
        except (RpcapConnectError, RpcapProtocolError):
            raise
        except RpcapError as exc:
            _log.warning("capture %s: %s", self.target.label, exc)

    def _finish(self, conn: Connection) -> None:
        """End the capture, write the packets still in flight, take rpcapd's final counters, close the chunk."""
        client, writer = conn
        try:
            rest: list[RemotePacket] = client.end_capture()
            if rest:
                writer.write_many([(ts, data, length) for ts, _, length, _, data in rest])
                self.counters.count(rest)
            self.counters.final_stats(client.stats())  # rpcapd saved them at ENDCAP
        except RpcapError as exc:
            _log.warning("capture %s: ending the capture: %s (packets up to here are kept)", self.target.label, exc)
        finally:
            client.close()
        writer.close("stop")

    def _drop(self, conn: Connection) -> None:
        """Let go of a broken connection and close its chunk (reason "stop": rolling.py knows no "reconnect")."""
        client, writer = conn
        client.close()
        try:
            writer.close("stop")
        except RtpCoreError as exc:
            _log.error("capture %s: closing %s: %s", self.target.label, writer.current, exc)

    def _reconnect(self, lost_ns: int, cause: RpcapError) -> Connection | None:
        """Back off and retry; None when the capture ended meanwhile; raises once the attempts are used up."""
        s, policy = self.session, self.session.reconnect
        self.state = STATE_RECONNECTING
        _log.warning("capture %s: %s; reconnecting", self.target.label, cause)
        why = f"connection lost: {cause}"
        last: RpcapError = cause
        for attempt in range(1, policy.max_attempts + 1):
            wait = min(policy.delay(attempt), max(0.0, s.deadline - time.monotonic()))
            if s.stop_event.wait(wait) or time.monotonic() >= s.deadline:
                self._gap(lost_ns, why + "; the capture ended before it came back")
                return None
            try:
                conn = self._open()
            except (RpcapAuthError, RpcapFilterError):
                self._gap(lost_ns, why + "; reconnecting was refused")
                raise
            except RpcapError as exc:
                last = exc
                _log.warning("capture %s: reconnect attempt %d/%d: %s", self.target.label, attempt,
                             policy.max_attempts, exc)
                continue
            except RtpCoreError:  # e.g. the next chunk cannot be created
                self._gap(lost_ns, why + "; reconnected but could not go on")
                raise
            self._gap(lost_ns, why)
            _log.warning("capture %s: reconnected after attempt %d", self.target.label, attempt)
            return conn
        self._gap(lost_ns, why + f"; gave up after {policy.max_attempts} reconnect attempts")
        raise CaptureError(f"capture lost and {policy.max_attempts} reconnect attempts failed; last error: {last}")

    def _gap(self, from_ns: int, why: str) -> None:
        gap = Gap(from_ns, max(from_ns, time.time_ns()), why)
        self.counters.gaps.append(gap)
        self.session.manifest.append_gap(self.target.host, gap.from_ns, gap.to_ns, why,
                                         interface=self.target.interface)

    # -- reporting ----------------------------------------------------------------------------

    def progress(self) -> CaptureProgress:
        c, t = self.counters, self.target
        return CaptureProgress(t.host, t.interface, t.label, self.state, c.packets, c.bytes, c.drops, len(c.files),
                               len(c.gaps))

    def _progress(self) -> None:
        callback = self.session.on_progress
        if callback is None:
            return
        try:
            callback(self.progress())
        except Exception:  # noqa: BLE001 - a broken progress display must not stop the capture
            _log.exception("on_progress callback failed for %s", self.target.label)

    def summary(self) -> HostSummary:
        c, t = self.counters, self.target
        return HostSummary(t.host, t.address, t.interface, t.label, c.packets, c.bytes, c.drops, tuple(c.gaps),
                           tuple(c.files), self.error)


class CaptureSession:
    """Capture several targets into <session>/raw until `duration` elapses or stop() is called."""

    def __init__(
        self,
        targets: Sequence[CaptureTarget],
        session_dir: Path,
        *,
        duration: float,
        filter_expression: str = "",
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_seconds: float = 0,
        reconnect: ReconnectPolicy | None = None,
        stats_interval: float = STATS_SECONDS,
        on_progress: Callable[[CaptureProgress], None] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        snaplen: int = MAXIMUM_SNAPLEN,
        on_chunk_closed: Callable[[ChunkInfo], None] | None = None,
    ) -> None:
        if not targets:
            raise ValueError("a capture session needs at least one target")
        if not duration > 0:
            raise ValueError(f"duration must be positive seconds, got {duration}")
        labels = [t.label for t in targets]
        if len(set(labels)) != len(labels):
            raise ValueError(f"targets repeat a chunk label: {sorted(x for x in labels if labels.count(x) > 1)}")
        self.root = Path(session_dir).resolve()
        self.raw = self.root / RAW_DIR
        self.targets = tuple(targets)
        self.duration = duration
        self.filter_expression = filter_expression.strip() or DEFAULT_FILTER
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.reconnect = reconnect or ReconnectPolicy()
        self.stats_interval = stats_interval
        self.on_progress = on_progress
        self.on_chunk_closed = on_chunk_closed
        self.connect_timeout = connect_timeout
        self.snaplen = snaplen
        self.manifest = Manifest(self.root / MANIFEST_NAME)
        self.stop_event = threading.Event()
        self.started = 0.0
        self.deadline = 0.0
        self._hosts = [_HostCapture(self, t) for t in self.targets]
        self._summary: CaptureSummary | None = None

    def start(self) -> None:
        """Record the session start and launch one thread per target."""
        if self.started:
            raise RuntimeError("capture session already started")
        self.raw.mkdir(parents=True, exist_ok=True)
        self.manifest.start(
            hosts=[{"host": t.host, "env": t.env, "region": t.region, "address": t.address, "port": t.port,
                    "interface": t.interface, "label": t.label} for t in self.targets],
            filter=self.filter_expression, duration=self.duration, max_bytes=self.max_bytes,
            max_seconds=self.max_seconds,
        )
        self.started = time.monotonic()
        self.deadline = self.started + self.duration
        for host in self._hosts:
            host.thread.start()

    def stop(self) -> None:
        """Cooperative stop: each thread ends its capture, drains and closes its chunk within about a second."""
        self.stop_event.set()

    def chunk_closed(self, info: ChunkInfo) -> None:
        """Hand a chunk (already in the manifest) to on_chunk_closed; its failure must not stop the capture."""
        callback = self.on_chunk_closed
        if callback is None:
            return
        try:
            callback(info)
        except Exception:  # noqa: BLE001 - e.g. the upload queue's disk trouble: the chunk is safe on disk
            _log.exception("on_chunk_closed callback failed for %s (the chunk stays on disk)", info.path)

    def progress(self) -> list[CaptureProgress]:
        """A snapshot of every target now (counters are read without locking: approximate while running)."""
        return [h.progress() for h in self._hosts]

    def wait(self, timeout: float | None = None) -> CaptureSummary | None:
        """Join the threads and finish the manifest; None when `timeout` passed first."""
        if self._summary is not None:
            return self._summary
        end = None if timeout is None else time.monotonic() + timeout
        for host in self._hosts:
            while host.thread.is_alive():  # short joins keep the main thread responsive to signals
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                host.thread.join(0.25 if left is None else min(0.25, left))
        ended = "stopped" if self.stop_event.is_set() else "deadline"
        summary = CaptureSummary(self.root, tuple(h.summary() for h in self._hosts), ended)
        try:
            self.manifest.finish(ended=ended, hosts=[h.to_json() for h in summary.hosts])
        except RtpCoreError as exc:  # e.g. the disk that stopped a host is full: the summary still says so
            _log.error("capture session %s: %s", self.root, exc)
        finally:
            self.manifest.close()
        self._summary = summary
        return summary

    def run(self) -> CaptureSummary:
        """start() then wait() to the end."""
        self.start()
        summary = self.wait()
        assert summary is not None
        return summary
