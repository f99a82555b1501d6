"""Reading the event log from any process: tail it (``read_new``/``follow``) or search it.

Tailing discovers segments through the writers' manifests (``_writers/*.manifest``), so a poll
costs one ``stat`` per writer plus one read per unfinished segment. A reader made with
``follow_forward=True`` also remembers which listed segments are unfinished, so a poll from the
position it returned last looks at those only, however many segments the log has ever had.
Only complete lines are ever decoded; a malformed line is logged with its file and line number
and skipped.

Searching walks the partition folders it needs (pruned by date and branch), skips sealed segments
whose sidecar index cannot match, and filters raw bytes for a needle before decoding a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import msgspec

from netmon.storage.contract.events import AnyEvent, json_decoder
from netmon.storage.names import validate_name
from netmon.storage.positions import Position
from netmon.storage.queries import Query, dates_between, index_may_match, query_needles
from netmon.storage.segment_index import SegmentIndex, index_path, read_index
from netmon.storage.segments import (
    EVENTS_DIR,
    MANIFEST_SUFFIX,
    SEGMENT_SUFFIX,
    WRITERS_DIR,
    parse_manifest_lines,
)
from netmon.storage.tap import AppendTap

log = logging.getLogger("netmon.storage")

READ_CHUNK = 4 * 1024 * 1024
# msgspec reports invalid UTF-8 (a corrupted byte) as UnicodeDecodeError (found by tests/fuzz)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


class ReaderStats:
    """Counters a caller (or a test) can read: what the reader had to touch."""

    __slots__ = (
        "segments_opened",
        "segments_skipped",
        "segments_checked",
        "lines_decoded",
        "malformed_lines",
    )

    def __init__(self) -> None:
        self.segments_checked = 0  # listed segments tailing polls compared with the position
        self.segments_opened = 0
        self.segments_skipped = 0
        self.lines_decoded = 0
        self.malformed_lines = 0


class _WriterManifest:
    """What a reader has learnt from one writer's manifest so far."""

    __slots__ = ("path", "offset", "segments", "sealed", "unfinished")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.segments: list[str] = []
        self.sealed: dict[str, int] = {}
        # follow_forward only: the listed segments the followed position has not finished
        # (unsealed, or sealed and read short of their sealed size), in manifest order
        self.unfinished: list[str] = []


class EventLogReader:
    """Read-only access to the log under ``root`` (the data dir holding ``events/``)."""

    def __init__(
        self,
        root: Path,
        *,
        tail_decoder: msgspec.json.Decoder[Any] | None = None,
        needs_full: Callable[[Any], bool] = lambda event: False,
        tap: AppendTap | None = None,
        follow_forward: bool = False,
    ) -> None:
        """``tail_decoder`` (read_new only) decodes lines into lighter types; a line whose light
        form ``needs_full`` picks is decoded again as the full event (app/projections/brief.py).
        With a ``tap``, read_new takes what this process appended from it (full events; a
        batch whole, even past ``max_events``) and reads the files only for the rest.

        ``follow_forward`` is for a caller that hands ``read_new`` back the position it returned
        last (and never changes it in place): such a poll visits only the segments that
        position has not finished. Any other position (the first one, one from a checkpoint, a
        rewound one) costs one full pass over every listed segment, so nothing is skipped.
        """
        self._tap = tap
        self.events_dir = Path(root) / EVENTS_DIR
        self.stats = ReaderStats()
        self._tail_decoder = tail_decoder
        self._needs_full = needs_full
        self._manifests: dict[str, _WriterManifest] = {}
        self._manifests_lock = threading.Lock()  # one reader may serve several threads
        self._cursor = 0  # where the next poll starts, so one busy segment cannot starve others
        self._follow_forward = follow_forward
        # The offsets the manifests' ``unfinished`` lists were last derived from (identity, not
        # equality: a position equal to it but built by the caller may have been changed since)
        self._followed: dict[str, int] | None = None

    # --- tailing ------------------------------------------------------------------------------

    def read_new(self, position: Position, max_events: int = 10_000) -> tuple[list[Any], Position]:
        """Every complete event after ``position`` (at most ``max_events``); never blocks."""
        batch = self._poll(position, max_events, ends=False)
        advanced = _advanced(position, batch.consumed)  # every segment read, past its last event
        self._follow_on(position, advanced)
        return batch.events, advanced

    def skipped_to_end(self, position: Position, skip: Callable[[str], bool]) -> Position:
        """``position`` with each unfinished segment ``skip`` picks moved to its current size
        (the analysis worker's own outputs, which it need not read back)."""
        sizes: dict[str, int] = {}
        with self._manifests_lock:
            pending = self._pending_locked(position)
        for segment, offset, _ in pending:
            if skip(segment):
                try:
                    size = (self.events_dir / segment).stat().st_size
                except FileNotFoundError:
                    continue  # archived (read_new counts it consumed) or not created yet
                if size > offset:
                    sizes[segment] = size
        advanced = _advanced(position, sizes)
        self._follow_on(position, advanced)
        return advanced

    async def follow(
        self, position: Position, poll_interval: float = 0.02
    ) -> AsyncIterator[tuple[AnyEvent, Position]]:
        """Yield every event appended after ``position``, forever, with the position after it.

        Each poll (file reads and decoding) runs in a worker thread, off the event loop.
        """
        offsets = dict(position.offsets)
        while True:
            batch = await asyncio.to_thread(self._poll, Position(offsets=offsets), 10_000)
            for event, (segment, end) in zip(batch.events, batch.ends or (), strict=True):
                offsets[segment] = end
                yield event, Position(offsets=dict(offsets))
            offsets.update(batch.consumed)
            if not batch.events:
                await asyncio.sleep(poll_interval)

    def segments(self) -> list[str]:
        """Every segment the writers' manifests list, in (writer, creation) order."""
        with self._manifests_lock:
            self._refresh_manifests_locked()
            return [
                segment
                for name in sorted(self._manifests)
                for segment in self._manifests[name].segments
            ]

    def _poll(self, position: Position, max_events: int, ends: bool = True) -> _PollResult:
        with self._manifests_lock:
            pending = self._pending_locked(position)
        result = _PollResult(ends)
        if not pending:
            return result
        start = self._cursor % len(pending)
        for segment, offset, sealed_size in pending[start:] + pending[:start]:
            if len(result.events) >= max_events:
                break
            limit = max_events - len(result.events)
            self._read_segment(segment, offset, sealed_size, limit, result)
        self._cursor = start + 1
        return result

    def _pending_locked(self, position: Position) -> list[tuple[str, int, int | None]]:
        """(segment, offset, sealed size) of every listed segment ``position`` has not finished.

        A following reader given the offsets it followed last looks only at the segments that
        were unfinished then (plus those listed since); otherwise every listed segment is
        checked, and a following reader starts following ``position`` from here.
        """
        self._refresh_manifests_locked()
        offsets = position.offsets
        following = self._follow_forward and offsets is self._followed
        pending: list[tuple[str, int, int | None]] = []
        for name in sorted(self._manifests):
            manifest = self._manifests[name]
            unfinished: list[str] = []
            listed = manifest.unfinished if following else manifest.segments
            self.stats.segments_checked += len(listed)
            for segment in listed:
                offset = offsets.get(segment, 0)
                sealed_size = manifest.sealed.get(segment)
                if sealed_size is None or offset < sealed_size:
                    pending.append((segment, offset, sealed_size))
                    unfinished.append(segment)
            if self._follow_forward:
                manifest.unfinished = unfinished  # finished ones drop out for good
        if self._follow_forward:
            self._followed = offsets
        return pending

    def _follow_on(self, given: Position, returned: Position) -> None:
        """Follow ``returned`` next, unless another call re-derived the lists meanwhile."""
        if not self._follow_forward:
            return
        with self._manifests_lock:
            if self._followed is given.offsets:
                self._followed = returned.offsets

    def _read_segment(
        self, segment: str, offset: int, sealed_size: int | None, limit: int, result: _PollResult
    ) -> None:
        upto = None  # read the file up to here (None: up to its current end)
        if self._tap is not None and result.ends is None:
            taken = 0
            while taken < limit and (appended := self._tap.take(segment, offset)) is not None:
                offset, events = appended
                result.events.extend(events)
                result.consumed[segment] = offset
                taken += len(events)
            if taken:
                return
            if sealed_size is None:
                upto = self._tap.durable_end(segment)
                if upto is not None and upto <= offset:
                    return  # this process is writing it: the tap brings it once durable
        path = self.events_dir / segment
        chunk = READ_CHUNK if upto is None else min(READ_CHUNK, upto - offset)
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(chunk)
                while data and b"\n" not in data:  # a line longer than a chunk
                    more = handle.read(READ_CHUNK if upto is None else upto - offset - len(data))
                    if not more:
                        break
                    data += more
        except FileNotFoundError:
            if sealed_size is not None:  # archived and removed: nothing left to read there
                result.consumed[segment] = sealed_size
            return  # else listed in the manifest a moment before the writer created it
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        if result.ends is None and self._read_lines_at_once(
            data, end, limit, segment, offset, result
        ):
            return
        brief = result.ends is None and self._tail_decoder is not None
        cursor = 0
        taken = 0
        while cursor < end and taken < limit:
            stop = data.index(b"\n", cursor)
            event = self._decode(data[cursor:stop], path, offset + cursor, brief=brief)
            cursor = stop + 1
            if event is not None:
                result.events.append(event)
                if result.ends is not None:
                    result.ends.append((segment, offset + cursor))
                taken += 1
        result.consumed[segment] = offset + cursor  # also past malformed lines that were skipped

    def _read_lines_at_once(
        self, data: bytes, end: int, limit: int, segment: str, offset: int, result: _PollResult
    ) -> bool:
        """Decode up to ``limit`` whole lines in one call (no Python loop per line); False when
        a line is malformed, so the caller decodes line by line and reports it."""
        starts: list[int] = []
        stop = 0
        for _ in range(limit):  # memchr per line: far cheaper than bytes.count over the chunk
            newline = data.find(b"\n", stop, end)
            if newline < 0:
                break
            starts.append(stop)
            stop = newline + 1
        view = memoryview(data)
        try:
            if self._tail_decoder is None:
                events: list[Any] = json_decoder.decode_lines(view[:stop])
            else:
                events = self._tail_decoder.decode_lines(view[:stop])
                if len(events) != len(starts):  # a blank line: line by line says where
                    return False
                for index in [i for i, event in enumerate(events) if self._needs_full(event)]:
                    line = starts[index]
                    events[index] = json_decoder.decode(view[line : data.index(b"\n", line)])
        except _DECODE_ERRORS:
            return False
        self.stats.lines_decoded += len(events)
        result.events.extend(events)
        result.consumed[segment] = offset + stop
        return True

    def _refresh_manifests_locked(self) -> None:
        writers_dir = self.events_dir / WRITERS_DIR
        try:
            names = [
                entry.name
                for entry in os.scandir(writers_dir)
                if entry.name.endswith(MANIFEST_SUFFIX)
            ]
        except FileNotFoundError:
            return
        for name in names:
            manifest = self._manifests.get(name)
            if manifest is None:
                manifest = self._manifests[name] = _WriterManifest(writers_dir / name)
            self._read_manifest(manifest)

    def _read_manifest(self, manifest: _WriterManifest) -> None:
        if manifest.path.stat().st_size <= manifest.offset:
            return
        with manifest.path.open("rb") as handle:
            handle.seek(manifest.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        manifest.offset += end
        for entry in parse_manifest_lines(data[:end], manifest.path):
            if entry.op == "open":
                manifest.segments.append(entry.seg)
                if self._follow_forward:
                    manifest.unfinished.append(entry.seg)
            else:
                manifest.sealed[entry.seg] = entry.size

    # --- searching ----------------------------------------------------------------------------

    def scan(
        self,
        dates: Iterable[date] | None,
        branches: Iterable[str] | None,
        predicate: Callable[[AnyEvent], bool] | None = None,
        *,
        needles: Sequence[bytes] = (),
    ) -> Iterator[AnyEvent]:
        """Every event in the given partitions (None = all) for which ``predicate`` holds.

        With ``needles``, a line is decoded only if its raw bytes contain one of them; a needle
        must therefore be a byte string every wanted line contains (e.g. ``b'"10.0.0.1"'``).
        """
        if any(not needle or b"\n" in needle for needle in needles):
            raise ValueError("a needle must be non-empty and cannot contain a newline")
        for path in self.partition_segments(dates, branches):
            yield from self._scan_segment(path, predicate, needles)

    def search(self, query: Query) -> Iterator[AnyEvent]:
        """Events matching ``query``, skipping segments whose sidecar index rules them out."""
        dates = dates_between(query.start, query.end)
        predicate = query.matches
        needles = query_needles(query)
        for path in self.partition_segments(dates, query.branches):
            index = read_index(path)
            if index is not None and not index_may_match(index, query):
                self.stats.segments_skipped += 1
                continue
            if index is not None and query.ip is not None and index.has_line_offsets:
                yield from self._read_lines(path, index, index.lines_of(query.ip), predicate)
                continue
            yield from self._scan_segment(path, predicate, needles, sealed=index is not None)

    def search_ip(
        self, ip: str, start: float | None = None, end: float | None = None
    ) -> Iterator[AnyEvent]:
        """Flows and detections from or to ``ip`` (optionally within [start, end))."""
        return self.search(Query(ip=ip, start=start, end=end))

    def partition_segments(
        self, dates: Iterable[date] | None, branches: Iterable[str] | None
    ) -> list[Path]:
        """Segment files of the selected partitions, sorted by path (stable order)."""
        date_dirs = _select_dirs(
            self.events_dir,
            "date",
            None if dates is None else {d.strftime("%Y-%m-%d") for d in dates},
        )
        wanted_branches = (
            None if branches is None else {validate_name("branch", b) for b in branches}
        )
        paths: list[Path] = []
        for date_dir in date_dirs:
            for branch_dir in _select_dirs(date_dir, "branch", wanted_branches):
                paths.extend(
                    branch_dir / entry.name
                    for entry in os.scandir(branch_dir)
                    if entry.name.endswith(SEGMENT_SUFFIX) and entry.is_file()
                )
        return sorted(paths)

    def _scan_segment(
        self,
        path: Path,
        predicate: Callable[[AnyEvent], bool] | None,
        needles: Sequence[bytes],
        *,
        sealed: bool | None = None,
    ) -> Iterator[AnyEvent]:
        self.stats.segments_opened += 1
        if sealed is None:
            sealed = index_path(path).exists()
        try:
            with _segment_bytes(path, mapped=sealed and bool(needles)) as data:
                end = data.rfind(b"\n") + 1  # an unsealed segment may end in a line being written
                if needles:
                    spans: Iterable[tuple[int, int]] = _needle_line_spans(data, needles, end)
                else:
                    spans = _all_line_spans(data, end)
                for start, stop in spans:
                    event = self._decode(data[start:stop], path, start, data)
                    if event is not None and (predicate is None or predicate(event)):
                        yield event
        except FileNotFoundError:
            return  # removed by retention between listing and opening

    def _read_lines(
        self,
        path: Path,
        index: SegmentIndex,
        offsets: list[int],
        predicate: Callable[[AnyEvent], bool],
    ) -> Iterator[AnyEvent]:
        """Decode just the lines at ``offsets`` (from the sidecar) of a sealed segment."""
        self.stats.segments_opened += 1
        try:
            with _segment_bytes(path, mapped=True) as data:
                if len(data) != index.size:
                    log.error(
                        "sidecar of %s is for %d bytes, not %d: scanning it",
                        path,
                        index.size,
                        len(data),
                    )
                    spans: Iterable[tuple[int, int]] = _all_line_spans(data, data.rfind(b"\n") + 1)
                else:
                    spans = ((start, data.find(b"\n", start)) for start in offsets)
                for start, stop in spans:
                    event = self._decode(data[start:stop], path, start, data)
                    if event is not None and predicate(event):
                        yield event
        except FileNotFoundError:
            return

    # --- decoding -----------------------------------------------------------------------------

    def _decode(
        self,
        line: bytes,
        path: Path,
        offset: int,
        data: bytes | mmap.mmap | None = None,
        *,
        brief: bool = False,
    ) -> Any:
        self.stats.lines_decoded += 1
        try:
            if brief and self._tail_decoder is not None:
                event = self._tail_decoder.decode(line)
                if self._needs_full(event):
                    event = json_decoder.decode(line)
            else:
                event = json_decoder.decode(line)
        except _DECODE_ERRORS as error:
            self.stats.malformed_lines += 1
            number = _line_number(path, offset, data)
            log.error("skipping malformed line %s:%d (byte %d): %s", path, number, offset, error)
            return None
        return event


class _PollResult:
    __slots__ = ("events", "ends", "consumed")

    def __init__(self, ends: bool) -> None:
        self.events: list[Any] = []  # AnyEvent, or lighter types from a tail_decoder
        # (segment, offset after it) of each event, when the caller resumes event by event
        self.ends: list[tuple[str, int]] | None = [] if ends else None
        self.consumed: dict[str, int] = {}  # final offset per segment read, past skipped lines


def _advanced(position: Position, offsets: dict[str, int]) -> Position:
    """``position`` with ``offsets`` applied: the same object when nothing moved, so an idle
    poll copies nothing (positions are never changed in place, so sharing them is safe)."""
    current = position.offsets
    if all(current.get(segment, 0) == offset for segment, offset in offsets.items()):
        return position
    merged = dict(current)
    merged.update(offsets)
    return Position(offsets=merged)


def _line_number(path: Path, offset: int, data: bytes | mmap.mmap | None) -> int:
    """1-based line number of the line starting at ``offset`` (only computed for errors)."""
    if data is None:
        with path.open("rb") as handle:
            data = handle.read(offset)
    return data[:offset].count(b"\n") + 1


@contextlib.contextmanager
def _segment_bytes(path: Path, *, mapped: bool) -> Iterator[bytes | mmap.mmap]:
    """The segment's bytes: memory-mapped when sealed (``find`` runs at memory speed and
    nothing is copied), read into memory when a writer may still cut a torn tail off it
    (touching a mapped page past a truncation would kill the reader with SIGBUS)."""
    if not mapped:
        yield path.read_bytes()
        return
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as mapping:
            yield mapping


def _all_line_spans(data: bytes | mmap.mmap, end: int) -> Iterator[tuple[int, int]]:
    start = 0
    while start < end:
        stop = data.find(b"\n", start, end)
        yield start, stop
        start = stop + 1


def _needle_line_spans(
    data: bytes | mmap.mmap, needles: Sequence[bytes], end: int
) -> list[tuple[int, int]]:
    """(start, stop) of every line containing a needle, found without splitting the rest."""
    spans: list[tuple[int, int]] = []
    for needle in needles:
        hit = data.find(needle, 0, end)
        while hit >= 0:
            start = data.rfind(b"\n", 0, hit) + 1
            stop = data.find(b"\n", hit, end)
            spans.append((start, stop))
            hit = data.find(needle, stop, end)
    return spans if len(needles) == 1 else sorted(set(spans))


def _select_dirs(parent: Path, key: str, wanted: set[str] | None) -> list[Path]:
    """``parent/key=value`` folders, limited to ``wanted`` values (partition pruning)."""
    prefix = f"{key}="
    if wanted is not None:
        return [path for value in sorted(wanted) if (path := parent / f"{prefix}{value}").is_dir()]
    try:
        return sorted(
            parent / entry.name
            for entry in os.scandir(parent)
            if entry.name.startswith(prefix) and entry.is_dir()
        )
    except FileNotFoundError:
        return []
