"""The append-only JSONL event log: one ``EventLog`` writer per process, any number of readers.

Each replica writes its own segment files (its name is the writer id), so no two processes ever
append to the same file. ``append`` groups a batch by (UTC date of ``ts``, branch), encodes each
group into one buffer, records the batch in the writer's journal, writes each buffer with one
``write`` and, with ``durability="batch"``, fsyncs before returning. See docs/events.md for the
layout and storage/journal.py for why a batch is all-or-nothing after a crash.

Readers (``EventLogReader``, storage/log_reader.py) follow the writers' manifests to find new
segments and never yield a partial line.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import msgspec
from tqdm import tqdm

from netmon.storage.contract.events import EVENT_TYPES, Event
from netmon.storage.contract.files import fsync_directory
from netmon.storage.journal import BatchPart, Journal
from netmon.storage.names import InvalidNameError, validate_name
from netmon.storage.segment_index import IndexBuilder, build_index_from_file, write_index
from netmon.storage.segments import (
    EVENTS_DIR,
    MAX_TS,
    SECONDS_PER_DAY,
    WRITERS_DIR,
    ManifestEntry,
    StoreError,
    cut_torn_tail,
    day_number,
    day_string,
    manifest_encoder,
    manifest_path,
    parse_manifest_lines,
    parse_segment_relpath,
    partition_dir,
    segment_name,
    write_all,
)

log = logging.getLogger("netmon.storage")

Durability = Literal["batch", "none"]
# What a listener hears after each append (``add_listener``), per segment written: the segment,
# its start and end offsets, and the events.
AppendedPart = tuple[str, int, int, list[Any]]
_EVENT_TYPES = frozenset(EVENT_TYPES)
_TS, _BRANCH = attrgetter("ts"), attrgetter("branch")


class WriterBusyError(StoreError):
    """Another process already writes under this writer name."""


class _OpenSegment:
    """A segment this writer appends to."""

    __slots__ = ("relpath", "path", "fd", "size", "day", "index")

    def __init__(self, relpath: str, path: Path, fd: int, day: int) -> None:
        self.relpath = relpath
        self.path = path
        self.fd = fd
        self.size = 0
        self.day = day
        self.index = IndexBuilder()


_Part = tuple[_OpenSegment, bytes, list[Event]]  # a segment, the bytes for it, their events


class EventLog:
    """The writer of one process (``writer`` = the replica's name). Thread-safe."""

    def __init__(
        self,
        root: Path,
        writer: str,
        *,
        durability: Durability = "batch",
        segment_max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        index_on_seal: bool = True,
    ) -> None:
        """``index_on_seal=False`` seals segments without their sidecar index and spends
        nothing on it while appending: another process writes it afterwards
        (``netmon.storage.segment_index.SealedSegmentIndexer``: a replica's projector)."""
        if durability not in ("batch", "none"):
            raise StoreError(f"durability must be 'batch' or 'none', not {durability!r}")
        if segment_max_bytes <= 0:
            raise StoreError(f"segment_max_bytes must be positive, not {segment_max_bytes}")
        self.writer = validate_name("writer", writer)
        self.events_dir = Path(root) / EVENTS_DIR
        self._fsync = durability == "batch"
        self._index_on_seal = index_on_seal
        self._segment_max_bytes = segment_max_bytes
        self._clock = clock
        self._mutex = threading.Lock()
        self._open: dict[tuple[int, str], _OpenSegment] = {}
        self._branches: set[str] = set()
        self._listeners: list[Callable[[list[AppendedPart]], None]] = []
        self._closed = True
        writers_dir = self.events_dir / WRITERS_DIR
        writers_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_writer(writers_dir / f"{self.writer}.lock", self.writer)
        try:
            self._manifest_path = manifest_path(self.events_dir, self.writer)
            self._manifest_fd = os.open(
                self._manifest_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            self._journal = Journal(writers_dir / f"{self.writer}.journal", fsync=self._fsync)
            self._next_number = self._recover() + 1
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._today = day_number(clock())
        self._closed = False

    # --- public API ---------------------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> None:
        """Write ``events`` as one all-or-nothing batch; durable on return (per durability)."""
        if not events:
            return
        groups = self._group(events)
        with self._mutex:
            if self._closed:
                raise StoreError(f"event log of writer {self.writer!r} is closed")
            try:
                self._roll_at_midnight()
                parts = self._prepare(groups)
            except OSError as error:  # e.g. no space for a new segment: nothing written yet
                log.error("append of %d events failed, nothing written: %s", len(events), error)
                raise StoreError(f"append failed, batch not stored: {error}") from error
            try:
                for segment, data, _ in parts:
                    write_all(segment.fd, data)
                if self._fsync:
                    for segment, _, _ in parts:
                        os.fdatasync(segment.fd)
            except OSError as error:
                self._undo(parts)
                log.error("append of %d events failed, nothing written: %s", len(events), error)
                raise StoreError(f"append failed, batch not stored: {error}") from error
            try:
                self._journal.clear()
            except OSError as error:  # harmless: recovery finds every part complete
                log.warning("could not clear the journal of %s: %s", self.writer, error)
            appended: list[AppendedPart] = []
            for segment, data, group in parts:
                if self._index_on_seal:
                    segment.index.add(group, data, segment.size)
                appended.append((segment.relpath, segment.size, segment.size + len(data), group))
                segment.size += len(data)
            for listener in self._listeners:
                listener(appended)

    def add_listener(self, listener: Callable[[list[AppendedPart]], None]) -> None:
        """Call ``listener`` after every durable append with what was written where (in the
        appending thread, under the writer's lock: it must be quick and must not raise).

        It is called once at once with where each open segment ends (parts without events),
        so it knows how far this writer's segments held appends before it listened.
        """
        with self._mutex:
            listener([(seg.relpath, seg.size, seg.size, []) for seg in self._open.values()])
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[list[AppendedPart]], None]) -> None:
        """Stop calling ``listener``."""
        with self._mutex:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _prepare(self, groups: dict[tuple[int, str], list[Event]]) -> list[_Part]:
        """Encode each group, pick (or roll) its segment and journal the batch."""
        parts: list[_Part] = []
        for key, group in groups.items():
            data = _encoder.encode_lines(group)
            parts.append((self._segment_for(key, len(data)), data, group))
        # Durable first only when the batch spans several segments: a power loss could
        # otherwise keep one part and lose another. A one-segment batch is written by one
        # write(), so the record (in the page cache) still covers any process crash.
        self._journal.record(
            [
                BatchPart(seg.relpath, seg.size, len(data), zlib.crc32(data))
                for seg, data, _ in parts
            ],
            durable=self._fsync and len(parts) > 1,
        )
        return parts

    def close(self) -> None:
        """Seal every open segment (writing its sidecar index) and release the writer name."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            for key in list(self._open):
                self._seal(self._open.pop(key))
            self._journal.close()
            os.close(self._manifest_fd)
            os.close(self._lock_fd)

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- batches ------------------------------------------------------------------------------

    def _group(self, events: Sequence[Event]) -> dict[tuple[int, str], list[Event]]:
        """Split a batch by (day, branch), checking each event can be stored at all."""
        # Fast path, checked in C: the usual batch has one branch and one UTC day.
        stamps = list(map(_TS, events))
        branches = set(map(_BRANCH, events))
        low, high = min(stamps), max(stamps)
        if (
            len(branches) == 1
            and branches <= self._branches
            and set(map(type, events)) <= _EVENT_TYPES
            and low >= 0.0
            and high < MAX_TS
            and math.isfinite(sum(stamps))  # min/max let a NaN through, a sum does not
            and int(low // SECONDS_PER_DAY) == int(high // SECONDS_PER_DAY)
        ):
            return {(int(low // SECONDS_PER_DAY), next(iter(branches))): list(events)}
        groups: dict[tuple[int, str], list[Event]] = {}
        for position, event in enumerate(events):
            if type(event) not in _EVENT_TYPES:
                raise self._bad_input(position, f"{type(event).__name__} is not an event type")
            ts = event.ts
            if not 0.0 <= ts < MAX_TS:
                raise self._bad_input(position, f"ts {ts!r} is not a Unix time in years 1970-9999")
            branch = event.branch
            if branch not in self._branches:
                try:
                    self._branches.add(validate_name("branch", branch))
                except InvalidNameError as error:
                    raise self._bad_input(position, str(error)) from None
            key = (int(ts // SECONDS_PER_DAY), branch)
            group = groups.get(key)
            if group is None:
                groups[key] = [event]
            else:
                group.append(event)
        return groups

    def _bad_input(self, position: int, reason: str) -> StoreError:
        log.warning("rejected a batch for writer %s: event %d: %s", self.writer, position, reason)
        return StoreError(f"batch rejected, nothing stored: event {position}: {reason}")

    def _undo(self, parts: list[_Part]) -> None:
        """Cut a failed batch off again and seal the segments it touched: a reader may have
        read past the cut, so nothing may ever be appended at those offsets again."""
        for segment, _, _ in parts:
            try:
                os.ftruncate(segment.fd, segment.size)
            except OSError as error:  # the journal will cut it on the next open
                log.error("could not cut a failed write from %s: %s", segment.path, error)
        for key, segment in list(self._open.items()):
            if any(segment is touched for touched, _, _ in parts):
                del self._open[key]
                try:
                    self._seal(segment)
                except OSError as error:  # sealed by recovery on the next open
                    log.error("could not seal %s after a failed write: %s", segment.path, error)

    # --- segments -----------------------------------------------------------------------------

    def _segment_for(self, key: tuple[int, str], incoming: int) -> _OpenSegment:
        """The open segment of a partition, rolled first if ``incoming`` bytes would overflow it."""
        segment = self._open.get(key)
        if (
            segment is not None
            and segment.size > 0
            and segment.size + incoming > self._segment_max_bytes
        ):
            self._seal(self._open.pop(key))
            segment = None
        if segment is None:
            segment = self._open_segment(*key)
            self._open[key] = segment
        return segment

    def _open_segment(self, day: int, branch: str) -> _OpenSegment:
        name = segment_name(self.writer, self._next_number)
        relpath = f"{partition_dir(day_string(day), branch)}/{name}"
        self._next_number += 1
        path = self.events_dir / relpath
        new_dir = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Listed in the manifest before it holds data, so readers find every event.
        self._manifest_write(ManifestEntry(op="open", seg=relpath))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._fsync:
            fsync_directory(path.parent)
            if new_dir:
                fsync_directory(path.parent.parent)
                fsync_directory(path.parent.parent.parent)
        return _OpenSegment(relpath, path, fd, day)

    def _seal(self, segment: _OpenSegment) -> None:
        """Close a segment for good: sidecar index first, then the manifest's seal line."""
        os.close(segment.fd)
        if self._index_on_seal:
            write_index(
                segment.path,
                segment.index.build(segment.relpath, segment.size),
                durable=self._fsync,
            )
        self._manifest_write(ManifestEntry(op="seal", seg=segment.relpath, size=segment.size))

    def _roll_at_midnight(self) -> None:
        today = day_number(self._clock())
        if today == self._today:
            return
        self._today = today
        for key in [key for key, segment in self._open.items() if segment.day < today]:
            self._seal(self._open.pop(key))

    def _manifest_write(self, entry: ManifestEntry) -> None:
        size = os.fstat(self._manifest_fd).st_size
        try:
            write_all(self._manifest_fd, manifest_encoder.encode(entry) + b"\n")
        except OSError:
            # A short write (disk full) must not leave half a line that the next line would
            # join: readers would skip that line's segment (found by the chaos soak).
            try:
                os.ftruncate(self._manifest_fd, size)
            except OSError as error:  # recovery cuts the torn tail on the next open
                log.error("could not cut a failed manifest write: %s", error)
            raise
        if self._fsync:
            os.fsync(self._manifest_fd)

    # --- recovery -----------------------------------------------------------------------------

    def _recover(self) -> int:
        """Repair what a crash left and seal it; return the highest segment number used."""
        cut_torn_tail(self._manifest_path, fsync=self._fsync)
        entries = parse_manifest_lines(self._manifest_path.read_bytes(), self._manifest_path)
        self._journal.recover(self.events_dir)
        self._journal.clear()
        sealed = {entry.seg for entry in entries if entry.op == "seal"}
        unsealed = [e.seg for e in entries if e.op == "open" and e.seg not in sealed]
        # Indexing a 64 MiB segment takes a while: show progress on a terminal (disable=None).
        for relpath in tqdm(unsealed, desc="recovering segments", unit="segment", disable=None):
            self._recover_segment(relpath)
        return max((parse_segment_relpath(entry.seg).number for entry in entries), default=0)

    def _recover_segment(self, relpath: str) -> None:
        path = self.events_dir / relpath
        if not path.exists():
            log.warning("segment %s listed in %s is missing", path, self._manifest_path)
            self._manifest_write(ManifestEntry(op="seal", seg=relpath, size=0))
            return
        cut = cut_torn_tail(path, fsync=self._fsync)
        if cut:
            log.warning("cut a torn last line (%d bytes) from %s", cut, path)
        index = build_index_from_file(path, relpath)
        write_index(path, index, durable=self._fsync)
        self._manifest_write(ManifestEntry(op="seal", seg=relpath, size=index.size))
        log.info("sealed %s after an unclean shutdown (%d events)", path, index.events)


_encoder = msgspec.json.Encoder()


def _lock_writer(path: Path, writer: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WriterBusyError(
            f"writer {writer!r} is already open in another process (lock {path}); "
            "give each replica its own name"
        ) from None
    return fd
