"""On-disk layout of the event log: partitions, segment names, writer manifests, torn tails.

    DATA/events/date=YYYY-MM-DD/branch=NAME/WRITER-NNNNNNNN.jsonl       events, one JSON per line
    DATA/events/date=YYYY-MM-DD/branch=NAME/WRITER-NNNNNNNN.jsonl.idx   sidecar of a sealed segment
    DATA/events/_writers/WRITER.manifest   every segment the writer opened and sealed (JSON lines)
    DATA/events/_writers/WRITER.journal    the writer's last batch (see storage/journal.py)
    DATA/events/_writers/WRITER.lock       held (flock) while a process writes as WRITER

The Hive-style ``key=value`` folders let DuckDB, Spark or jq read the log as is; the ``_writers``
folder starts with an underscore so such tools skip it.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Literal

import msgspec

from netmon.storage.names import validate_name

log = logging.getLogger("netmon.storage")

EVENTS_DIR = "events"
WRITERS_DIR = "_writers"
SEGMENT_SUFFIX = ".jsonl"
INDEX_SUFFIX = ".idx"
MANIFEST_SUFFIX = ".manifest"
SECONDS_PER_DAY = 86_400
# Year 10000 starts here; a later (or negative, or NaN) ts cannot name a date partition.
MAX_TS = 253_402_300_800.0


class StoreError(Exception):
    """The event store cannot do what was asked; the message says which file and why."""


class SegmentRef(msgspec.Struct, frozen=True):
    """The parts of a segment's relative path."""

    date: str
    branch: str
    writer: str
    number: int

    @property
    def relpath(self) -> str:
        """``date=…/branch=…/WRITER-NNNNNNNN.jsonl``, the key used in positions and manifests."""
        return f"{partition_dir(self.date, self.branch)}/{segment_name(self.writer, self.number)}"


@functools.lru_cache(maxsize=4096)
def day_string(day_number: int) -> str:
    """``YYYY-MM-DD`` of a day counted from 1970-01-01 (UTC)."""
    return time.strftime("%Y-%m-%d", time.gmtime(day_number * SECONDS_PER_DAY))


def day_number(ts: float) -> int:
    """The UTC day a Unix time falls on, as days since 1970-01-01."""
    return int(ts // SECONDS_PER_DAY)


def partition_dir(date: str, branch: str) -> str:
    """The Hive-style folder of one (date, branch) partition, relative to DATA/events."""
    return f"date={date}/branch={branch}"


def segment_name(writer: str, number: int) -> str:
    """``WRITER-NNNNNNNN.jsonl``: numbers sort as text, so names sort in creation order."""
    return f"{writer}-{number:08d}{SEGMENT_SUFFIX}"


def parse_segment_relpath(relpath: str) -> SegmentRef:
    """Split ``date=D/branch=B/W-N.jsonl``; raise StoreError for anything else."""
    parts = relpath.split("/")
    if (
        len(parts) != 3
        or not parts[0].startswith("date=")
        or not parts[1].startswith("branch=")
        or not parts[2].endswith(SEGMENT_SUFFIX)
    ):
        raise StoreError(f"not a segment path: {relpath!r}")
    stem = parts[2][: -len(SEGMENT_SUFFIX)]
    writer, _, number = stem.rpartition("-")
    if not number.isdigit():
        raise StoreError(f"not a segment path: {relpath!r}")
    return SegmentRef(
        date=parts[0][5:],
        branch=validate_name("branch", parts[1][7:]),
        writer=validate_name("writer", writer),
        number=int(number),
    )


class ManifestEntry(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One line of a writer manifest: a segment was opened, or sealed at ``size`` bytes."""

    op: Literal["open", "seal"]
    seg: str
    size: int = 0


manifest_encoder = msgspec.json.Encoder()
manifest_decoder = msgspec.json.Decoder(ManifestEntry)


def manifest_path(events_dir: Path, writer: str) -> Path:
    """Where ``writer`` lists its segments."""
    return events_dir / WRITERS_DIR / f"{writer}{MANIFEST_SUFFIX}"


def parse_manifest_lines(data: bytes, source: Path) -> list[ManifestEntry]:
    """Decode complete manifest lines; a bad line (or one naming something that is not a
    segment path, such as ``../x``) is logged with its file and skipped, never followed."""
    entries: list[ManifestEntry] = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            entry = manifest_decoder.decode(line)
            parse_segment_relpath(entry.seg)
        except (msgspec.DecodeError, msgspec.ValidationError, StoreError, ValueError) as error:
            log.error("skipping malformed manifest line %s:%d: %s", source, number, error)
            continue
        entries.append(entry)
    return entries


def complete_length(data: bytes | bytearray) -> int:
    """Length of the prefix of ``data`` that ends with a newline (0 when there is none)."""
    return data.rfind(b"\n") + 1


def cut_torn_tail(path: Path, *, fsync: bool) -> int:
    """Truncate ``path`` after its last newline; return the number of bytes cut."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        keep = _last_newline_end(handle, size)
        if keep == size:
            return 0
        handle.truncate(keep)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    return size - keep


def _last_newline_end(handle: object, size: int, block: int = 1 << 16) -> int:
    """Offset just after the last ``\\n`` of an open file, reading backwards block by block."""
    end = size
    while end > 0:
        start = max(0, end - block)
        handle.seek(start)  # type: ignore[attr-defined]
        chunk: bytes = handle.read(end - start)  # type: ignore[attr-defined]
        found = chunk.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (a write to a regular file may be short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
