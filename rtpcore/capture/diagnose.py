"""Pre-flight checks of hosts.yaml against the real hosts: reachability, RPCAP auth, interfaces, local libpcap."""
from __future__ import annotations

import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rtpcore.capture.engine import DEFAULT_FILTER, linktype_of
from rtpcore.hosts import HostEntry
from rtpcore.pcap import libpcap
from rtpcore.pcap.linktypes import linktype_name
from rtpcore.rpcap.client import RpcapClient, RpcapError

__all__ = ["Check", "HostDiagnosis", "diagnose_host", "diagnose_hosts", "local_libpcap"]

DEFAULT_TIMEOUT = 5.0
MAX_WORKERS = 16
CHECK_TCP = "tcp"
CHECK_AUTH = "auth"
CHECK_INTERFACES = "interfaces"
CHECK_LIBPCAP = "libpcap"
_SKIPPED = "not checked"


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome; ok None means it was skipped because an earlier one failed."""

    name: str
    ok: bool | None
    detail: str

    def text(self) -> str:
        return f"{self.name} {'ok' if self.ok else 'FAILED' if self.ok is False else '-'}" + (
            f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, slots=True)
class HostDiagnosis:
    """Every check of one host, in the order they ran."""

    env: str
    region: str
    host: str
    address: str
    port: int
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def line(self) -> str:
        """One line per host: verdict, place, endpoint, each check."""
        endpoint = f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"
        checks = "; ".join(c.text() for c in self.checks)
        return f"{'OK  ' if self.ok else 'FAIL'} {self.env}/{self.region}/{self.host} {endpoint}: {checks}"

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "region": self.region, "host": self.host, "address": self.address,
                "port": self.port, "ok": self.ok,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]}


def local_libpcap() -> Check:
    """libpcap on this machine compiles the capture filters rpcapd runs."""
    try:
        return Check(CHECK_LIBPCAP, True, libpcap.version())
    except libpcap.LibpcapError as exc:
        return Check(CHECK_LIBPCAP, False, str(exc))


def _tcp(entry: HostEntry, timeout: float) -> Check:
    try:
        socket.create_connection((entry.address, entry.port), timeout=timeout).close()
    except ConnectionRefusedError:
        return Check(CHECK_TCP, False, f"connection refused on port {entry.port} (is rpcapd running there?)")
    except TimeoutError:
        return Check(CHECK_TCP, False, f"no answer within {timeout:g} s (host down or port filtered?)")
    except socket.gaierror as exc:
        return Check(CHECK_TCP, False, f"cannot resolve {entry.address!r}: {exc.strerror}")
    except OSError as exc:
        return Check(CHECK_TCP, False, exc.strerror or str(exc))
    return Check(CHECK_TCP, True, "")


def _interfaces(client: RpcapClient, entry: HostEntry, pcap: Check) -> tuple[Check, Check]:
    """Configured interfaces exist and open there; the default filter compiles for each link type."""
    names = [i.name for i in client.list_interfaces()]
    missing = [i for i in entry.interfaces if i not in names]
    if missing:
        return (Check(CHECK_INTERFACES, False, f"{', '.join(missing)} not on the host; it has: {', '.join(names)}"),
                Check(CHECK_LIBPCAP, pcap.ok, pcap.detail))
    opened, compile_errors = [], []
    for name in entry.interfaces:
        linktype = linktype_of(client.open(name).linktype)
        opened.append(f"{name} {linktype_name(linktype)}")
        if pcap.ok:
            try:
                libpcap.compile_filter(DEFAULT_FILTER, linktype=linktype)
            except libpcap.LibpcapError as exc:
                compile_errors.append(f"{name}: {exc}")
    lib = Check(CHECK_LIBPCAP, False, "; ".join(compile_errors)) if compile_errors else pcap
    return Check(CHECK_INTERFACES, True, ", ".join(opened)), lib


def diagnose_host(entry: HostEntry, *, timeout: float = DEFAULT_TIMEOUT, pcap: Check | None = None) -> HostDiagnosis:
    """Run the checks in order; a failure marks the later network checks as skipped."""
    pcap = pcap or local_libpcap()
    checks = [_tcp(entry, timeout)]
    if checks[0].ok:
        auth = (entry.auth.username or "", entry.auth.password or "") if entry.auth.mode == "password" else None
        how = "null" if auth is None else f"password as {auth[0]!r}"
        try:
            with RpcapClient(entry.address, entry.port, timeout=timeout, auth=auth) as client:
                try:
                    client.authenticate()
                except RpcapError as exc:
                    checks.append(Check(CHECK_AUTH, False, str(exc)))
                else:
                    checks.append(Check(CHECK_AUTH, True, how))
                    try:
                        checks += _interfaces(client, entry, pcap)
                    except RpcapError as exc:
                        checks += [Check(CHECK_INTERFACES, False, str(exc)), pcap]
        except RpcapError as exc:
            checks.append(Check(CHECK_AUTH, False, str(exc)))
    names = {c.name for c in checks}
    for name in (CHECK_AUTH, CHECK_INTERFACES):
        if name not in names:
            checks.append(Check(name, None, _SKIPPED))
    if CHECK_LIBPCAP not in names:
        checks.append(pcap)
    return HostDiagnosis(entry.env, entry.region, entry.id, entry.address, entry.port, tuple(checks))


def diagnose_hosts(entries: Sequence[HostEntry], *, timeout: float = DEFAULT_TIMEOUT) -> list[HostDiagnosis]:
    """All hosts concurrently (an unreachable host costs `timeout`, not N·timeout), results in input order."""
    if not entries:
        return []
    pcap = local_libpcap()
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(entries))) as pool:
        return list(pool.map(lambda e: diagnose_host(e, timeout=timeout, pcap=pcap), entries))
