"""What a capture reports: live per-host counters while it runs and the per-host summary when it ends."""
from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtpcore.rpcap.protocol import Stats

__all__ = ["CaptureProgress", "CaptureSummary", "Drops", "Gap", "HostCounters", "HostSummary"]

STATE_CAPTURING = "capturing"
STATE_RECONNECTING = "reconnecting"
STATE_DONE = "done"
STATE_FAILED = "failed"
_UINT32 = 1 << 32


@dataclass(frozen=True, slots=True)
class Drops:
    """client: sent by rpcapd but never received (npkt holes); server: kernel buffer on the host; interface: NIC."""

    client: int = 0
    server: int = 0
    interface: int = 0

    def to_json(self) -> dict[str, int]:
        return {"client": self.client, "server": self.server, "interface": self.interface}


@dataclass(frozen=True, slots=True)
class Gap:
    """A span (wall-clock ns) during which this host was not being captured, and why."""

    from_ns: int
    to_ns: int
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_ns, "to": self.to_ns, "why": self.why}


@dataclass(frozen=True, slots=True)
class CaptureProgress:
    """A live snapshot of one target, handed to on_progress every stats interval."""

    host: str
    interface: str
    label: str
    state: str
    packets: int
    bytes: int
    drops: Drops
    chunks: int
    gaps: int

    def line(self) -> str:
        """The one log line per host the CLI prints every few seconds."""
        d = self.drops
        return (f"{self.label} {self.interface}: {self.state}, {self.packets} packets, {self.bytes} bytes, "
                f"drops client {d.client} server {d.server} interface {d.interface}, "
                f"{self.chunks} chunks closed, {self.gaps} gaps")


@dataclass(frozen=True, slots=True)
class HostSummary:
    """How one target's capture went; `error` is None when it captured to the end."""

    host: str
    address: str
    interface: str
    label: str
    packets: int
    bytes: int
    drops: Drops
    gaps: tuple[Gap, ...]
    files: tuple[Path, ...]
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host, "address": self.address, "interface": self.interface, "packets": self.packets,
            "bytes": self.bytes, "drops": self.drops.to_json(), "gaps": [g.to_json() for g in self.gaps],
            "files": [str(f) for f in self.files], "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    """Every target's outcome plus why the session ended ("deadline" or "stopped")."""

    session: Path
    hosts: tuple[HostSummary, ...]
    ended: str

    @property
    def ok(self) -> bool:
        """True when every host captured without error."""
        return all(h.error is None for h in self.hosts)

    def to_json(self) -> dict[str, Any]:
        return {"hosts": [h.to_json() for h in self.hosts], "session": str(self.session)}


@dataclass(slots=True)
class HostCounters:
    """Mutable counters one capture thread owns; rpcapd's counters restart with every connection."""

    packets: int = 0
    bytes: int = 0
    client_drops: int = 0
    last_npkt: int = 0
    done_server: int = 0       # krnldrop of connections that ended
    done_interface: int = 0    # ifdrop of connections that ended
    stats: Stats | None = None  # latest stats of the current connection
    gaps: list[Gap] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def count(self, packets: list[tuple[int, int, int, int, builtins.bytes]]) -> None:
        """Add one batch; rpcapd numbers its packets 1, 2, … per capture, so a hole is a packet we never got."""
        self.count_batch(len(packets), sum([p[1] for p in packets]), packets[-1][3])  # npkt: a uint32 on the wire

    def count_batch(self, packets: int, nbytes: int, last_npkt: int) -> None:
        """count() from a batch's totals: the npkt hole rule needs only the count and the last npkt."""
        self.packets += packets
        self.bytes += nbytes
        missed = (last_npkt - self.last_npkt - packets) % _UINT32
        if 0 < missed < _UINT32 // 2:
            self.client_drops += missed
        self.last_npkt = last_npkt

    def final_stats(self, stats: Stats) -> None:
        """rpcapd's last counters of a capture: packets it sent after our last one were lost on the way."""
        self.stats = stats
        tail = stats.svrcapt - self.last_npkt
        if 0 < tail < _UINT32 // 2:
            self.client_drops += tail

    def connection_ended(self) -> None:
        """Fold this connection's server counters into the totals before the next one restarts them."""
        if self.stats is not None:
            self.done_server += self.stats.krnldrop
            self.done_interface += self.stats.ifdrop
        self.stats = None
        self.last_npkt = 0

    @property
    def drops(self) -> Drops:
        server = self.done_server + (self.stats.krnldrop if self.stats else 0)
        interface = self.done_interface + (self.stats.ifdrop if self.stats else 0)
        return Drops(self.client_drops, server, interface)
