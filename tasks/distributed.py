"""Where a correlation's per-file filter tasks run: in the flow's process, or on an existing Dask cluster.

Dask (prefect-dask) rather than Ray (prefect-ray), by measurement on the 2-core machine (bench/distributed_bench.py
--engines): a 2-worker cluster starts in 0.35 s and holds 164 MiB; Ray's takes 3.2 s and 809 MiB, and per-task
overhead (1.6 ms vs 0.6 ms) is noise next to one filter task (a Prefect task run alone costs 10-25 ms).
Workers get paths or S3 byte ranges, never capture bytes: they read the chunks themselves. Local raw media must
be on a path every worker sees (a shared mount); chunks of an s3:// session are left in S3 by the selection step
(RTPHELPER_CLUSTER_ADDRESS set) and each filter task range-reads its chunk's ranges into a temporary folder of
its worker, verified against the object's size and ETag, removed afterwards (rtpcore.storage.remote); the
worker's S3 credentials come from its own environment (boto3 chain), never from the task. The per-leg files a
task writes still go to the output folder's staging area, so that folder must be shared; the workers need this
code and PREFECT_API_URL.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tasks.runtime  # noqa: F401  (process defaults before prefect loads)
from prefect import unmapped

from rtpcore.errors import ConfigError
from rtpcore.media.select import ChunkChoice
from rtpcore.pipeline import CorrelationJob
from rtpcore.settings import Settings, env_var, load_settings
from rtpcore.sizes import format_size

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

CLUSTER_CONNECT_SECONDS = 10.0   # deadline to reach the scheduler (TCP connect + Dask handshake)
ADDRESS_VAR = env_var("cluster_address")
MIN_BYTES_VAR = env_var("distributed_min_bytes")
MIN_CHUNKS_VAR = env_var("distributed_min_chunks")

log = logging.getLogger("rtpcore.distributed")   # an rtpcore logger: its records reach the flow-run logs


class ClusterUnavailableError(ConfigError):
    """The cluster of RTPHELPER_CLUSTER_ADDRESS did not answer in time; the correlation stops before filtering."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the filter tasks go (address None: in-process) and why, for the run log."""

    address: str | None
    reason: str


def _size_of(source: Path | str | ChunkChoice) -> int:
    if isinstance(source, ChunkChoice):  # the selection step's decision: only the bytes it reads count
        return source.bytes_read
    try:
        return os.stat(source).st_size
    except OSError:
        return 0   # not a local path (yet): it counts as a file, and the filter step reports it if it is missing


def choose_placement(sources: Sequence[Path | str | ChunkChoice], settings: Settings) -> Placement:
    """The cluster only when one is configured and the selected work reaches a threshold: small jobs stay local."""
    if not settings.cluster_address:
        return Placement(None, f"in-process ({ADDRESS_VAR} is not set)")
    total = sum(_size_of(s) for s in sources)
    work = f"{len(sources)} raw file(s), {format_size(total)}"
    if total >= settings.distributed_min_bytes or len(sources) >= settings.distributed_min_chunks:
        return Placement(settings.cluster_address, f"on the Dask cluster {settings.cluster_address} ({work})")
    return Placement(None, f"in-process ({work}: below {MIN_BYTES_VAR}={format_size(settings.distributed_min_bytes)} "
                           f"and {MIN_CHUNKS_VAR}={settings.distributed_min_chunks})")


def settings_of(args: Sequence[Any]) -> Settings:
    """The settings the job was made with (the same ones the CLI would use), else the environment's."""
    job = next((a for a in args if isinstance(a, CorrelationJob)), None)
    return job.settings if job is not None and job.settings is not None else load_settings()


async def _handshake(address: str, timeout: float) -> None:
    """Connect and ask the scheduler who it is: a black-holed host that accepts TCP and never answers fails too."""
    from distributed.comm import connect

    comm = await connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        await comm.read()
    finally:
        comm.abort()


def probe_cluster(address: str, timeout: float) -> None:
    """The scheduler answers within `timeout`, or ClusterUnavailableError (Dask's own connect can wait past it)."""
    async def bounded() -> None:
        await asyncio.wait_for(_handshake(address, timeout), timeout)

    with ThreadPoolExecutor(max_workers=1) as pool:   # a thread of its own: the caller may run an event loop
        try:
            pool.submit(asyncio.run, bounded()).result()
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterUnavailableError(
                f"{ADDRESS_VAR}={address}: the Dask scheduler did not answer within {timeout:g} s "
                f"({type(exc).__name__}: {str(exc) or 'no reply'}); start the cluster (`dask scheduler`, `dask worker "
                f"{address}`), or unset {ADDRESS_VAR} (or raise {MIN_BYTES_VAR}/{MIN_CHUNKS_VAR}) to filter "
                "in-process; nothing was written") from None


@contextmanager
def cluster_task_runner(address: str, *, timeout: float | None = None) -> Iterator[DaskTaskRunner]:
    """A started DaskTaskRunner connected to `address`, after a probe bounded by `timeout` (fail fast, no fallback)."""
    from prefect_dask import DaskTaskRunner

    timeout = CLUSTER_CONNECT_SECONDS if timeout is None else timeout
    probe_cluster(address, timeout)
    with DaskTaskRunner(address=address, client_kwargs={"timeout": timeout, "set_as_default": False}) as runner:
        yield runner


def map_on_cluster(task: Any, items: Sequence[Any], args: Sequence[Any], address: str) -> list[Any]:
    """One task run per item on the cluster's workers (the first parameter mapped, the rest the same for all)."""
    names = list(inspect.signature(task.fn).parameters)
    parameters: dict[str, Any] = {names[0]: list(items)}
    parameters.update({name: unmapped(value) for name, value in zip(names[1:], args)})
    with cluster_task_runner(address) as runner:
        return list(runner.map(task, parameters).result())
