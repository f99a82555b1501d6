"""The writer's batch journal: what makes a multi-segment ``append`` all-or-nothing.

Before a batch touches any segment, the writer overwrites its journal with one small record: for
every segment the batch writes to, the offset it starts at, its length and its CRC-32. Only then
are the segments written. On open, ``recover`` checks the recorded batch: if every part is there
with the right checksum the batch stands, otherwise every part is cut off again. A batch that
ends exactly on a line boundary after a short write, or that reached one partition but not the
next, is therefore never half visible after recovery.

Record layout: 4-byte little-endian body length, 4-byte CRC-32 of the body, JSON body. A torn
record fails its CRC and means "no batch in flight": the segments are written only after the
record (and, with ``durability="batch"`` and more than one part, after its fsync: only a
power loss can persist one part of a batch without another; a one-part batch is one write()).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import msgspec

log = logging.getLogger("netmon.storage")

HEADER = struct.Struct("<II")


class BatchPart(msgspec.Struct, frozen=True, array_like=True):
    """The bytes one batch appended to one segment."""

    segment: str  # relative to DATA/events
    start: int
    length: int
    crc: int


class BatchRecord(msgspec.Struct, frozen=True):
    """The batch in flight."""

    parts: list[BatchPart]


record_encoder = msgspec.json.Encoder()
record_decoder = msgspec.json.Decoder(BatchRecord)


class Journal:
    """One writer's journal file, kept open for the writer's life."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self._path = path
        self._fsync = fsync
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def record(self, parts: list[BatchPart], *, durable: bool | None = None) -> None:
        """Make ``parts`` the batch in flight (on disk before returning when ``durable``;
        None means "when this journal fsyncs at all")."""
        body = record_encoder.encode(BatchRecord(parts=parts))
        os.pwrite(self._fd, HEADER.pack(len(body), zlib.crc32(body)) + body, 0)
        if self._fsync if durable is None else durable:
            os.fdatasync(self._fd)

    def clear(self) -> None:
        """Forget the batch in flight once it fully reached its segments (no fsync needed:
        a lost clear leaves a record whose parts are all complete, which recovery keeps)."""
        os.pwrite(self._fd, HEADER.pack(0, 0), 0)

    def recover(self, events_dir: Path) -> int:
        """Undo a batch that did not fully reach its segments; return the bytes cut."""
        record = self._read()
        if record is None or not record.parts:
            return 0
        if all(_part_is_complete(events_dir, part) for part in record.parts):
            return 0
        cut = 0
        # Cut in reverse so a crash during recovery leaves the earlier parts to retry.
        for part in reversed(record.parts):
            path = events_dir / part.segment
            if not path.exists():
                continue
            size = path.stat().st_size
            if size > part.start:
                os.truncate(path, part.start)
                cut += size - part.start
                if self._fsync:
                    _fsync_path(path)
        log.warning(
            "rolled back an incomplete batch: cut %d bytes from %d segment(s) (%s)",
            cut,
            len(record.parts),
            ", ".join(part.segment for part in record.parts),
        )
        return cut

    def close(self) -> None:
        """Release the file descriptor."""
        os.close(self._fd)

    def _read(self) -> BatchRecord | None:
        head = os.pread(self._fd, HEADER.size, 0)
        if len(head) < HEADER.size:
            return None
        length, crc = HEADER.unpack(head)
        if length == 0:
            return None  # cleared: the last batch fully reached its segments
        body = os.pread(self._fd, length, HEADER.size)
        if len(body) != length or zlib.crc32(body) != crc:
            return None  # torn record: the segments were not touched yet
        try:
            return record_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            log.error("ignoring unreadable journal %s: %s", self._path, error)
            return None


def _part_is_complete(events_dir: Path, part: BatchPart) -> bool:
    path = events_dir / part.segment
    try:
        with path.open("rb") as handle:
            handle.seek(part.start)
            data = handle.read(part.length)
    except FileNotFoundError:
        return False
    return len(data) == part.length and zlib.crc32(data) == part.crc


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
