"""Running an Events search over the store: newest first, cursor pages, streamed exports.

Order is (ts, id) descending. A cursor is the (ts, id) of the last row shown; the next page is
what sorts strictly after it, so pages never repeat or skip rows even while events arrive.
The scan goes one UTC date at a time from the newest and keeps only the best ``limit`` rows of a
date in a heap, so memory stays bounded by the page size whatever the date holds.
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import io
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from netmon.archive.reader import LogReader
from netmon.storage.contract.events import FlowObserved
from netmon.storage.queries import Query
from netmon.web.query import EventQuery, QueryError, Searchable, detection_kinds

log = logging.getLogger(__name__)

PAGE_SIZE = 50
EXPORT_SORT_ROWS = 100_000
SPAN_HOURS = (1, 6)  # indexed page searches read the last hour, then 6 h, then the day
CSV_COLUMNS = (
    "id", "time_utc", "ts", "type", "branch", "agent_id", "src_ip", "src_port", "dst_ip",
    "dst_port", "protocol", "domain", "severity", "detections", "bytes", "packets",
)  # fmt: skip


class Reader(Protocol):
    """What the store offers (``EventLogReader``), live and archived alike."""

    def scan(
        self,
        dates: Iterable[dt.date] | None,
        branches: Iterable[str] | None,
        predicate: Callable[[Any], bool] | None = None,
        *,
        needles: Sequence[bytes] = (),
    ) -> Iterable[Any]: ...

    def search(self, query: Any) -> Iterable[Any]: ...


class EventSource:
    """Events of one UTC date matching a query, through the store's sidecar indexes when a
    single IP or port is asked for (segments that cannot hold it are never opened)."""

    def __init__(self, reader: Callable[[], Reader]) -> None:
        self.new_reader = reader  # one per search: archive readers keep ZIPs open per scan

    def day(
        self,
        query: EventQuery,
        day: dt.date,
        branches: Sequence[str] | None,
        span: tuple[float, float] | None = None,
    ) -> Iterable[Any]:
        """Matches of ``query`` on ``day`` in ``branches`` (None = all), within ``span`` (start,
        end) when given (only the indexed path can use it to skip segments; a scan filters)."""
        indexed = _store_query(query, day, branches, span)
        if indexed is not None:
            return (e for e in self.new_reader().search(indexed) if query.matches(e))
        wanted: Callable[[Any], bool] = query.matches
        if span is not None:
            low, high = span
            wanted = lambda e: low <= e.ts < high and query.matches(e)  # noqa: E731
        return self.new_reader().scan([day], branches, wanted, needles=query.needles())

    def indexed(self, query: EventQuery) -> bool:
        """Whether searches of ``query`` go through the store's sidecar indexes."""
        return _store_query(query, dt.date.today(), None, None) is not None

    def find(self, event_id: str, branches: Sequence[str] | None) -> Any:
        """The event with this id (ids start with their creation time: scan that date +-1)."""
        try:
            created = int(event_id[:12], 16) / 1000
            day = dt.datetime.fromtimestamp(created, dt.UTC).date()
        except (ValueError, OverflowError, OSError):
            return None
        dates = [day, day - dt.timedelta(days=1), day + dt.timedelta(days=1)]
        wanted = lambda e: e.id == event_id  # noqa: E731
        scan = self.new_reader().scan(dates, branches, wanted, needles=[event_id.encode()])
        for event in scan:
            return event
        return None


def _store_query(
    query: EventQuery,
    day: dt.date,
    branches: Sequence[str] | None,
    span: tuple[float, float] | None,
) -> Any:
    """The store's indexed Query for the most selective exact term, or None (plain scan)."""
    ips = query.any_ip + query.src_ip + query.dst_ip
    single_ip = len(ips) == 1 and ips[0].num_addresses == 1
    if not single_ip and len(query.ports) != 1:
        return None
    start = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
    low, high = span if span is not None else (start, start + 86400)
    return Query(
        ip=str(ips[0].network_address) if single_ip else None,
        port=None if single_ip else query.ports[0],
        start=max(start, query.start, low),
        end=min(start + 86400, query.end, high),
        branches=None if branches is None else tuple(branches),
        types=tuple(query.types),
    )


class Row(msgspec.Struct, frozen=True):
    """One result row, flattened for the table, the CSV and the JSON export."""

    id: str
    ts: float
    type: str
    branch: str
    agent_id: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    protocol: int
    domain: str
    severity: str
    kinds: tuple[str, ...]
    bytes: int
    packets: int


class Page(msgspec.Struct, frozen=True):
    """One page of results and the cursor of the next one ("" when this is the last)."""

    rows: list[Row]
    next_cursor: str


def to_row(event: Searchable) -> Row:
    """Flatten a flow or a raised detection."""
    flow = isinstance(event, FlowObserved)
    return Row(
        id=event.id,
        ts=event.ts,
        type=type(event).__name__,
        branch=event.branch,
        agent_id=event.agent_id,
        src_ip=event.src_ip,
        src_port=event.src_port,
        dst_ip=event.dst_ip,
        dst_port=event.dst_port,
        protocol=event.protocol,
        domain=event.domain,
        severity=event.severity,
        kinds=tuple(detection_kinds(event)),
        bytes=event.src2dst_bytes + event.dst2src_bytes if flow else 0,  # type: ignore[union-attr]
        packets=event.src2dst_packets + event.dst2src_packets if flow else 0,  # type: ignore[union-attr]
    )


def encode_cursor(row: Row) -> str:
    """The opaque cursor after ``row`` (readable on purpose: it is only a position)."""
    return f"{row.ts!r}_{row.id}"


def decode_cursor(cursor: str) -> tuple[float, str] | None:
    """Parse a cursor; raise QueryError for one that was not made by ``encode_cursor``."""
    if not cursor:
        return None
    ts_text, sep, event_id = cursor.partition("_")
    try:
        ts = float(ts_text)
    except ValueError:
        ts = float("nan")
    if not sep or ts != ts or not event_id.isalnum() or len(event_id) > 64:
        raise QueryError("the page cursor in the link is damaged; start the search again")
    return ts, event_id


def search_page(
    source: EventSource,
    query: EventQuery,
    branches: Sequence[str] | None,
    cursor: str = "",
    limit: int = PAGE_SIZE,
) -> Page:
    """One page of matches, newest first, strictly after ``cursor``."""
    after = decode_cursor(cursor)
    rows: list[Row] = []
    # Spans pay off on the first date read (where a busy IP fills the page); on later dates
    # they would only read the same sidecar indexes several times, so those are read whole.
    sliced = source.indexed(query)
    for day in query.dates():
        if after is not None and day > dt.datetime.fromtimestamp(after[0], dt.UTC).date():
            continue
        spans, sliced = _spans(day, after, sliced), False
        for span in spans:
            matches = _scan_day(source, query, branches, day, after, span)
            need = limit + 1 - len(rows)
            rows.extend(heapq.nlargest(need, matches, key=_order))
            if len(rows) > limit:
                break
        if len(rows) > limit:
            break
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows=rows, next_cursor=encode_cursor(rows[-1]) if more and rows else "")


def search_all(
    source: EventSource,
    query: EventQuery,
    branches: Sequence[str] | None,
    sort_limit: int = EXPORT_SORT_ROWS,
) -> Iterator[Row]:
    """Every match, newest date first (for exports).

    Within a date rows come newest first when the date has at most ``sort_limit`` matches;
    past that they stream in storage order, so an export of everything never holds a whole
    busy day in memory.
    """
    for day in query.dates():
        matches = _scan_day(source, query, branches, day, None)
        head = list(itertools.islice(matches, sort_limit + 1))
        if len(head) <= sort_limit:
            yield from sorted(head, key=_order, reverse=True)
            continue
        log.info("export: more than %d matches on %s, streamed in storage order", sort_limit, day)
        yield from head
        yield from matches


def _order(row: Row) -> tuple[float, str]:
    return (row.ts, row.id)


def _spans(
    day: dt.date, after: tuple[float, str] | None, indexed: bool
) -> list[tuple[float, float] | None]:
    """Disjoint time spans of ``day``, newest first, to search one after the other.

    With the store's indexes a span skips the segments outside it, so the newest hour is read
    first and a busy IP's page does not decode its whole day; a plain scan reads the day once.
    """
    if not indexed:
        return [None]
    start = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
    end = start + 86400
    if after is not None:
        end = min(end, after[0] + 1e-3)  # rows tied with the cursor's ts stay in
    cuts = [end - hours * 3600 for hours in SPAN_HOURS if end - hours * 3600 > start]
    edges = [end, *cuts, start]
    spans: list[tuple[float, float] | None] = [
        (low, high) for high, low in zip(edges, edges[1:], strict=False)
    ]
    return spans


def _scan_day(
    source: EventSource,
    query: EventQuery,
    branches: Sequence[str] | None,
    day: dt.date,
    after: tuple[float, str] | None,
    span: tuple[float, float] | None = None,
) -> Iterator[Row]:
    wanted = [b for b in query.branches if branches is None or b in branches] or branches
    if wanted is not None and not wanted:
        return  # the user asked only for branches they may not see
    for event in source.day(query, day, wanted, span):
        row = to_row(event)
        if after is None or _order(row) < after:
            yield row


def csv_lines(rows: Iterable[Row]) -> Iterator[str]:
    """CSV text, a header then one line per row, produced as it goes (for streaming)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.id,
                _iso(row.ts),
                f"{row.ts:.6f}",
                row.type,
                row.branch,
                row.agent_id,
                row.src_ip,
                row.src_port,
                row.dst_ip,
                row.dst_port,
                row.protocol,
                _defuse(row.domain),
                row.severity,
                " ".join(row.kinds),
                row.bytes,
                row.packets,
            ]  # fmt: skip
        )
        if buffer.tell() > 64 * 1024:
            yield _drain(buffer)
    yield _drain(buffer)


def json_chunks(rows: Iterable[Row]) -> Iterator[bytes]:
    """A JSON array, one element per row, produced as it goes."""
    encoder = msgspec.json.Encoder()
    yield b"["
    first = True
    for row in rows:
        yield (b"" if first else b",\n") + encoder.encode(row)
        first = False
    yield b"]\n"


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _defuse(text: str) -> str:
    """Keep a spreadsheet from running a domain like ``=cmd|...`` as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def store_source(data_dir: Path) -> EventSource:
    """Search over live segments and archives alike (the archive's merged reader: results are the
    same before and after a date is archived)."""
    return EventSource(lambda: LogReader(data_dir))
