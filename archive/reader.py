"""Searching archived events, and the live log and the archives together as if nothing moved.

``ArchiveReader`` reads events inside the archive ZIPs with the same semantics as the store's
``EventLogReader.scan``: partitions pruned by date and branch, a line decoded only when its raw
bytes hold one of the ``needles``, a malformed line logged with its place and skipped, results
in (date, branch, segment file) order. ``LogReader`` merges both: every segment is read from
wherever it is now (its live file while it exists, else its archive member), so a search gives
the same events in the same order before and after a date is archived, and even while the
archiver is moving it.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import msgspec

from netmon.archive.layout import (
    PartitionKey,
    archive_path,
    archived_partitions,
    live_partitions,
    partition_dir,
)
from netmon.archive.zipfiles import ZIP_READ_ERRORS, ArchiveCorruptError, is_segment, read_manifest
from netmon.storage.contract.events import AnyEvent, json_decoder
from netmon.storage.names import validate_name
from netmon.storage.queries import Query, dates_between, index_may_match, query_needles
from netmon.storage.segment_index import index_decoder
from netmon.storage.segments import INDEX_SUFFIX, SEGMENT_SUFFIX

log = logging.getLogger("netmon.archive")

Predicate = Callable[[AnyEvent], bool]
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


class ScanStats:
    """What a reader had to touch (tests assert on these)."""

    __slots__ = ("live_segments", "archived_segments", "segments_skipped", "malformed_lines")

    def __init__(self) -> None:
        self.live_segments = 0
        self.archived_segments = 0
        self.segments_skipped = 0
        self.malformed_lines = 0


@dataclass(frozen=True, slots=True)
class _Source:
    """Where one segment's bytes are: a live file, or a member of an archive."""

    key: PartitionKey
    name: str  # the segment's file name
    live: Path | None

    @property
    def relpath(self) -> str:
        return f"{self.key}/{self.name}"


class LogReader:
    """Scan and search live segments and archives together (``data_dir`` holds both)."""

    def __init__(self, data_dir: Path, *, include_live: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.include_live = include_live
        self.stats = ScanStats()
        self._zips: dict[PartitionKey, zipfile.ZipFile] = {}

    def scan(
        self,
        dates: Iterable[date] | None,
        branches: Iterable[str] | None,
        predicate: Predicate | None = None,
        *,
        needles: Sequence[bytes] = (),
    ) -> Iterator[AnyEvent]:
        """Every event of the selected partitions (None = all) for which ``predicate`` holds."""
        try:
            for source in self._sources(dates, branches):
                yield from self._scan_source(source, predicate, needles, query=None)
        finally:
            self._close()

    def search(self, query: Query) -> Iterator[AnyEvent]:
        """Events matching a store ``Query``; sidecar indexes skip segments that cannot match."""
        predicate = query.matches
        needles = query_needles(query)
        dates = dates_between(query.start, query.end)
        try:
            for source in self._sources(dates, query.branches):
                yield from self._scan_source(source, predicate, needles, query=query)
        finally:
            self._close()

    # --- where each segment is ----------------------------------------------------------------

    def _sources(
        self, dates: Iterable[date] | None, branches: Iterable[str] | None
    ) -> list[_Source]:
        wanted_dates = None if dates is None else set(dates)
        wanted_branches = (
            None if branches is None else {validate_name("branch", b) for b in branches}
        )
        keys = set(archived_partitions(self.data_dir))
        if self.include_live:
            keys.update(live_partitions(self.data_dir, wanted_dates))
        sources: list[_Source] = []
        for key in sorted(keys):
            if wanted_dates is not None and key.day not in wanted_dates:
                continue
            if wanted_branches is not None and key.branch not in wanted_branches:
                continue
            sources.extend(self._partition_sources(key))
        return sources

    def _partition_sources(self, key: PartitionKey) -> list[_Source]:
        names: dict[str, Path | None] = {}
        for name in self._archived_names(key):
            names[name] = None
        if self.include_live:
            folder = partition_dir(self.data_dir, key)
            for path in folder.glob(f"*{SEGMENT_SUFFIX}"):
                if path.is_file():
                    names[path.name] = path  # the live file wins: it is never shorter
        return [_Source(key, name, names[name]) for name in sorted(names)]

    def _archived_names(self, key: PartitionKey) -> list[str]:
        path = archive_path(self.data_dir, key)
        if not path.exists():
            return []
        manifest = read_manifest(path)
        return [m.name.rsplit("/", 1)[-1] for m in manifest.members if is_segment(m.name)]

    def _zip(self, key: PartitionKey) -> zipfile.ZipFile:
        archive = self._zips.get(key)
        if archive is None:
            path = archive_path(self.data_dir, key)
            try:
                archive = self._zips[key] = zipfile.ZipFile(path)
            except ZIP_READ_ERRORS as error:
                raise ArchiveCorruptError(f"{path}: {error}") from None
        return archive

    def _close(self) -> None:
        for archive in self._zips.values():
            archive.close()
        self._zips.clear()

    # --- reading ------------------------------------------------------------------------------

    def _scan_source(
        self,
        source: _Source,
        predicate: Predicate | None,
        needles: Sequence[bytes],
        query: Query | None,
    ) -> Iterator[AnyEvent]:
        if query is not None and not self._may_match(source, query):
            self.stats.segments_skipped += 1
            return
        data = self._read(source)
        if data is None:
            return
        yield from self._scan_bytes(data, source.relpath, predicate, needles)

    def _read(self, source: _Source) -> bytes | None:
        if source.live is not None:
            try:
                data = source.live.read_bytes()
                self.stats.live_segments += 1
                return data
            except FileNotFoundError:
                pass  # archived and removed since the listing: read it from its archive
        try:
            archive = self._zip(source.key)
            data = archive.read(source.relpath)
        except KeyError:
            log.error("segment %s is neither live nor in its archive", source.relpath)
            return None
        except ZIP_READ_ERRORS as error:
            raise ArchiveCorruptError(f"{source.key.archive_name}: {error}") from None
        self.stats.archived_segments += 1
        return data

    def _may_match(self, source: _Source, query: Query) -> bool:
        raw: bytes | None = None
        index_name = source.relpath + INDEX_SUFFIX
        if source.live is not None:
            try:
                raw = source.live.with_name(source.name + INDEX_SUFFIX).read_bytes()
            except FileNotFoundError:
                raw = None
        elif archive_path(self.data_dir, source.key).exists():
            try:
                raw = self._zip(source.key).read(index_name)
            except KeyError:
                raw = None
        if raw is None:
            return True  # unsealed (or no sidecar): read it
        try:
            index = index_decoder.decode(raw)
        except _DECODE_ERRORS as error:
            log.error("ignoring unreadable index %s: %s", index_name, error)
            return True
        return index_may_match(index, query)

    def _scan_bytes(
        self, data: bytes, where: str, predicate: Predicate | None, needles: Sequence[bytes]
    ) -> Iterator[AnyEvent]:
        data = data[: data.rfind(b"\n") + 1]  # an unsealed segment may end in a line being written
        spans = _needle_spans(data, needles) if needles else _line_spans(data)
        for start, stop in spans:
            try:
                event: AnyEvent = json_decoder.decode(data[start:stop])
            except _DECODE_ERRORS as error:
                self.stats.malformed_lines += 1
                line = data.count(b"\n", 0, start) + 1
                log.error("skipping malformed line %s:%d: %s", where, line, error)
                continue
            if predicate is None or predicate(event):
                yield event


class ArchiveReader(LogReader):
    """Only what is inside the archives (the counterpart of the store's ``EventLogReader``)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, include_live=False)


def _line_spans(data: bytes) -> Iterator[tuple[int, int]]:
    start, end = 0, len(data)
    while start < end:
        stop = data.index(b"\n", start)
        yield start, stop
        start = stop + 1


def _needle_spans(data: bytes, needles: Sequence[bytes]) -> list[tuple[int, int]]:
    """(start, stop) of every line holding a needle, without splitting the other lines."""
    spans: set[tuple[int, int]] = set()
    for needle in needles:
        hit = data.find(needle)
        while hit >= 0:
            start = data.rfind(b"\n", 0, hit) + 1
            stop = data.find(b"\n", hit)
            spans.add((start, stop))
            hit = data.find(needle, stop)
    return sorted(spans)


def archived_segment(data_dir: Path, relpath: str) -> bytes | None:
    """The bytes of an archived segment (``date=D/branch=B/W-N.jsonl``), None when not archived.

    For readers that follow segments by name (writer manifests) and find one gone.
    """
    parts = relpath.split("/")
    if len(parts) != 3 or not parts[0].startswith("date=") or not parts[1].startswith("branch="):
        return None
    try:
        key = PartitionKey(date.fromisoformat(parts[0][5:]), validate_name("branch", parts[1][7:]))
    except ValueError:
        return None
    path = archive_path(data_dir, key)
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(relpath)
    except FileNotFoundError:
        return None
    except KeyError:
        return None
    except ZIP_READ_ERRORS as error:
        raise ArchiveCorruptError(f"{path}: {error}") from None


def archived_dates(data_dir: Path) -> dict[str, list[date]]:
    """Branch -> dates that have an archive (for pages that offer archived dates)."""
    found: dict[str, list[date]] = {}
    for key in archived_partitions(data_dir):
        found.setdefault(key.branch, []).append(key.day)
    return found
