"""The correlation pipeline: SIP pcap + direction + raw media → the three outputs and a report.

Each step is a plain function so the CLI (in-process) and the Prefect flow (one task per step, the filter
step mapped per raw file) run the same code; `correlate()` is the in-process sequence of the steps.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rtpcore.errors import InputError, NoMediaMatchError
from rtpcore.media.decrypt import DecryptResult, FilteredInput, decrypt_call
from rtpcore.media.demux import (
    DEFAULT_MIN_PACKETS, FileResult, filter_raw_file, filter_raw_files, media_files, no_match_message,
)
from rtpcore.media.latch import adopt
from rtpcore.pcap.merge import merge_captures
from rtpcore.plan import LegPlan
from rtpcore.report import CorrelationReport, build_report
from rtpcore.sip.legs import resolve_legs
from rtpcore.sip.signalling import write_signalling

if TYPE_CHECKING:
    from rtpcore.settings import Settings

log = logging.getLogger(__name__)

MEDIA_RAW = "media_raw.pcap"
MEDIA_DECRYPTED = "media_decrypted.pcap"
SIP_PLUS_MEDIA = "SIP_plus_media_decrypted.pcap"


@dataclass(frozen=True, slots=True)
class SessionPaths:
    """The seed's session layout: <root>/{raw,uploads,decrypted,combined/filtered}."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def decrypted(self) -> Path:
        return self.root / "decrypted"

    @property
    def combined(self) -> Path:
        return self.root / "combined"

    @property
    def filtered(self) -> Path:
        return self.combined / "filtered"

    @property
    def media_raw(self) -> Path:
        return self.combined / MEDIA_RAW

    @property
    def media_decrypted(self) -> Path:
        return self.combined / MEDIA_DECRYPTED

    @property
    def sip_plus_media(self) -> Path:
        return self.combined / SIP_PLUS_MEDIA

    @property
    def finals(self) -> tuple[Path, ...]:
        return (self.media_raw, self.media_decrypted, self.sip_plus_media)

    def discard_finals(self) -> None:
        """After a failed run: nothing may be left under the final output names."""
        for p in self.finals:
            p.unlink(missing_ok=True)


def prepare_outputs(out: Path, *, overwrite: bool = False) -> SessionPaths:
    """Create the output folders; refuse to overwrite earlier results unless asked."""
    paths = SessionPaths(Path(out).expanduser().resolve())
    existing = [p for p in paths.finals if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} already exists; choose another --out or pass --overwrite")
    for folder in (paths.decrypted, paths.filtered):
        folder.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for p in existing:
            p.unlink()
    return paths


def plan_call(sip: Path, direction: str, *, call_id: str | None = None, number: str | None = None) -> LegPlan:
    """Step 1: the leg plan from the SIP capture."""
    plan = resolve_legs(Path(sip), direction, call_id=call_id, number=number)
    log.info("Direction: %s", direction)
    log.info("Call-ID: %s", plan.call_id)
    log.info("call %s: %s", plan.call_id, "; ".join(f"{leg.name} {', '.join(leg.endpoints)}" for leg in plan.legs))
    return plan


def filter_one(plan: LegPlan, source: Path, paths: SessionPaths, *, min_packets: int) -> FileResult:
    """Step 2 for one raw file (the flow maps this per file)."""
    return filter_raw_file(plan, Path(source), paths.filtered, min_packets=min_packets)


def learn(
    plan: LegPlan, results: Sequence[FileResult], paths: SessionPaths, *, min_packets: int = DEFAULT_MIN_PACKETS
) -> tuple[LegPlan, list[FileResult]]:
    """Step 2b, once over all files: adopt learned peers and late RTCP; the plan gets the learned endpoints."""
    adoption = adopt(plan, results, min_packets=min_packets)
    return adoption.plan, list(adoption.results)


def merge_raw(plan: LegPlan, results: Sequence[FileResult], paths: SessionPaths) -> int:
    """Step 3: all kept per-leg files by timestamp → media_raw.pcap; no match at all is an error."""
    kept = [lf.output for r in results for lf in r.legs if lf.kept and lf.output is not None]
    for r in results:
        if r.error:
            log.warning("raw file %s: %s", r.source.name, r.error)
    if not kept:
        raise NoMediaMatchError(no_match_message(plan, results))
    return merge_captures(kept, paths.media_raw)


def decrypt(plan: LegPlan, results: Sequence[FileResult], paths: SessionPaths) -> DecryptResult:
    """Step 4: decrypt per stream across files → decrypted/<file>-… and media_decrypted.pcap."""
    inputs = [FilteredInput(lf.leg, lf.output, r.source) for r in results for lf in r.legs if lf.kept and lf.output]
    return decrypt_call(plan, inputs, paths.decrypted, paths.media_decrypted)


def combine(sip: Path, paths: SessionPaths) -> int:
    """Step 5: the SIP capture's signalling (not its own copy of any media) and the decrypted media by timestamp
    → SIP_plus_media_decrypted.pcap, so each media packet is there once."""
    temp = paths.combined / f".{Path(sip).stem}.{os.getpid()}.signalling.pcap"
    try:
        copy = write_signalling(Path(sip), temp)
        if copy.dropped:
            log.info("%s: %d of %d frames are not signalling (media?); only the signalling goes into %s",
                     Path(sip).name, copy.dropped, copy.frames, SIP_PLUS_MEDIA)
        return merge_captures([temp, paths.media_decrypted], paths.sip_plus_media)
    finally:
        temp.unlink(missing_ok=True)


def media_or_sip(sip: Path, media: Sequence[Path | str]) -> list[Path | str]:
    """No media given: the SIP capture is the media source (people export the whole capture as "the SIP pcap")."""
    return list(media) if media else [Path(sip)]


def note_sip_as_media(plan: LegPlan, sip: Path, media: Sequence[Path | str]) -> LegPlan:
    """Say in the report where the media came from when it was the SIP capture."""
    if media:
        return plan
    note = (f"no raw media given: the media was taken from the SIP capture {Path(sip).name} "
            "(it holds the call's media too); only its signalling went into SIP_plus_media_decrypted.pcap")
    return replace(plan, findings=(note, *plan.findings))


def correlate(
    sip: Path,
    direction: str,
    media: Sequence[Path | str],
    out: Path,
    *,
    call_id: str | None = None,
    number: str | None = None,
    min_packets: int = 10,
    workers: int | None = None,
    overwrite: bool = False,
    settings: Settings | None = None,
) -> CorrelationReport:
    """The whole job in-process; on failure nothing is left under the final output names.

    An "s3://…/<env>/<folder>/<session>/" media source is downloaded into <out>/raw/ first (after the SIP
    capture has been read, so a wrong call costs no download).
    """
    from rtpcore.storage.download import is_s3_url, materialize_media  # boto3 loads only for an s3:// source

    given, media = media, media_or_sip(Path(sip), media)
    if any(is_s3_url(m) for m in media):
        plan = plan_call(Path(sip), direction, call_id=call_id, number=number)
        paths = prepare_outputs(Path(out), overwrite=overwrite)
        sources = media_files(materialize_media(media, paths.root, settings))
    else:
        sources = media_files([Path(m) for m in media])
        plan = plan_call(Path(sip), direction, call_id=call_id, number=number)
        paths = prepare_outputs(Path(out), overwrite=overwrite)
    try:
        results = filter_raw_files(plan, sources, paths.filtered, min_packets=min_packets, workers=workers)
        plan, results = learn(note_sip_as_media(plan, Path(sip), given), results, paths, min_packets=min_packets)
        try:
            merge_raw(plan, results, paths)
        except NoMediaMatchError as exc:
            if given:
                raise
            raise NoMediaMatchError(f"{exc}\nno --media was given, so only the SIP capture was searched: give the "
                                    "raw media captures of the call's media host with --media") from None
        decrypted = decrypt(plan, results, paths)
        combine(Path(sip), paths)
    except BaseException:
        paths.discard_finals()
        raise
    return build_report(plan, results, decrypted, paths.finals)


def default_workers() -> int:
    """Raw files are filtered in parallel processes, one per core."""
    return max(1, os.cpu_count() or 1)
