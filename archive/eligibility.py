"""Which live segments may be archived: the rule that keeps the archiver off files being written.

A segment ``date=D/branch=B/W-N.jsonl`` is archived only when all of these hold:

- D is more than ``after_days`` days before today (UTC) (checked by the manager);
- its writer sealed it: the sidecar ``W-N.jsonl.idx`` exists and records the segment's current
  size (a writer never appends to a sealed segment; late events for an old date go to a new one).
  A replica seals without the sidecar and leaves it to its projector (docs/events.md); a run
  writes any still missing for a sealed segment of an old enough date itself
  (``index_sealed_segments``), so a projector that was down does not hold the archive back;
- it has not been modified for ``grace_s`` seconds (a second guard, against clock-skewed dates);
- it is not named in any writer's batch journal (``_writers/W.journal``): the store replays that
  journal when the writer restarts and treats a missing segment as a torn batch, so removing it
  would make the writer cut the same batch from its other segments.

Anything else is "held back" with its reason and reported in the run's summary.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import msgspec

from netmon.archive.layout import PartitionKey, events_dir, partition_dir
from netmon.archive.zipfiles import Counts
from netmon.storage.journal import HEADER, record_decoder
from netmon.storage.segment_index import SealedSegmentIndexer, SegmentIndex, index_path, read_index
from netmon.storage.segments import (
    INDEX_SUFFIX,
    MANIFEST_SUFFIX,
    SEGMENT_SUFFIX,
    WRITERS_DIR,
    parse_segment_relpath,
)

log = logging.getLogger("netmon.archive")

JOURNAL_SUFFIX = ".journal"


@dataclass(frozen=True, slots=True)
class LiveFile:
    """A file of a live partition: its path relative to DATA/events and on disk."""

    relpath: str
    path: Path


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """A segment to archive, as it was when planned."""

    relpath: str
    path: Path
    size: int
    mtime_ns: int
    counts: Counts  # from the sidecar index the writer made when it sealed the segment
    sidecars: tuple[LiveFile, ...] = ()


@dataclass(slots=True)
class PartitionPlan:
    """One live partition: what will be archived, what is held back and why."""

    key: PartitionKey
    segments: list[SegmentFile] = field(default_factory=list)
    held_back: list[tuple[str, str]] = field(default_factory=list)


def journal_segments(data_dir: Path) -> set[str]:
    """Segments named by some writer's batch journal (the batch it would replay on restart)."""
    named: set[str] = set()
    for path in (events_dir(data_dir) / WRITERS_DIR).glob(f"*{JOURNAL_SUFFIX}"):
        try:
            data = path.read_bytes()
        except OSError as error:
            log.warning("cannot read journal %s: %s", path, error)
            continue
        if len(data) < HEADER.size:
            continue
        length, _crc = HEADER.unpack_from(data)
        try:
            record = record_decoder.decode(data[HEADER.size : HEADER.size + length])
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # torn: the writer is mid-batch on open segments, which are never archived
        named.update(part.segment for part in record.parts)
    return named


def index_sealed_segments(data_dir: Path, before: date) -> list[str]:
    """Write the missing sidecar of every segment a writer sealed (its manifest says so) in a
    partition dated before ``before``; return those segments."""
    indexed: list[str] = []
    for manifest in sorted((events_dir(data_dir) / WRITERS_DIR).glob(f"*{MANIFEST_SUFFIX}")):
        writer = manifest.name[: -len(MANIFEST_SUFFIX)]
        old = SealedSegmentIndexer(
            events_dir(data_dir), writer, wanted=lambda segment: _day_of(segment) < before
        )
        indexed += old.index_new()
    for segment in indexed:
        log.warning("indexed %s: sealed without a sidecar, not written since", segment)
    return indexed


def _day_of(segment: str) -> date:
    """The partition date of a segment path (date.max when it is not a date: never old)."""
    try:
        return date.fromisoformat(parse_segment_relpath(segment).date)
    except ValueError:
        return date.max


def plan_partition(
    data_dir: Path,
    key: PartitionKey,
    *,
    now: float,
    grace_s: float,
    journaled: set[str] | None = None,
) -> PartitionPlan:
    """Split one partition's segments into archivable and held back."""
    journaled = journal_segments(data_dir) if journaled is None else journaled
    plan = PartitionPlan(key)
    folder = partition_dir(data_dir, key)
    relfolder = f"date={key.day.isoformat()}/branch={key.branch}"
    for path in sorted(folder.glob(f"*{SEGMENT_SUFFIX}")):
        relpath = f"{relfolder}/{path.name}"
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        index = read_index(path)
        reason = _held_reason(index, relpath, stat, now, grace_s, journaled)
        if reason or index is None:
            plan.held_back.append((relpath, reason))
            continue
        sidecar = index_path(path)
        plan.segments.append(
            SegmentFile(
                relpath=relpath,
                path=path,
                size=stat.st_size,
                mtime_ns=stat.st_mtime_ns,
                counts=_counts(index),
                sidecars=(LiveFile(f"{relfolder}/{sidecar.name}", sidecar),),
            )
        )
    return plan


def _held_reason(
    index: SegmentIndex | None,
    relpath: str,
    stat: os.stat_result,
    now: float,
    grace_s: float,
    journaled: set[str],
) -> str:
    if index is None:
        return "no sidecar index yet (not sealed, or sealed and not indexed yet)"
    if index.size != stat.st_size:
        return f"sidecar index is for {index.size} bytes, segment has {stat.st_size}"
    if now - stat.st_mtime < grace_s:
        return "modified within the grace period"
    if relpath in journaled:
        return "named in its writer's batch journal"
    return ""


def _counts(index: SegmentIndex) -> Counts:
    if index.events == 0:
        return Counts(malformed=index.malformed_lines)
    return Counts(index.events, index.malformed_lines, index.min_ts, index.max_ts)


def orphan_sidecars(data_dir: Path, key: PartitionKey) -> list[Path]:
    """Sidecar indexes whose segment is gone (a run stopped between the two removals)."""
    folder = partition_dir(data_dir, key)
    return [
        path
        for path in sorted(folder.glob(f"*{SEGMENT_SUFFIX}{INDEX_SUFFIX}"))
        if not path.with_name(path.name[: -len(INDEX_SUFFIX)]).exists()
    ]
