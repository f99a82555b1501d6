"""The alert projection: every alert of any age in SQLite, folded from the log, read by pages.

One file per replica (``DATA/projections/alerts-REPLICA.sqlite``, WAL), written by the replica's
own live loop (app/live_service.py): the batch the live feed pushes to dashboards is folded here
in the same step, so a page refreshed by that push already reads the change. Alert events are
rare next to flows, which are skipped by type without being looked at.

- ``alerts``: one row per alert, the record (app/projections/alert_model.py) as msgpack, and
  indexed columns for filters and sorts (app/projections/alert_queries.py);
- ``counts``: alerts per (branch, rule, state, severity), kept with the rows, so counting does
  not grow with the number of alerts;
- ``suppressions``: the longest suppression per (branch, rule, entity). One of an entity is
  also kept in its alert's row (a column); one of a whole rule ("*") only here, as it may name
  thousands of alerts; readers fold the longest naming an alert into its record (``fold``);
- ``pending``: events about an alert whose ``AlertOpened`` has not been read yet (writers are
  read in turn, so an acknowledgement may come first), applied when it arrives;
- ``position``: the log position the rows reflect, written in the same transaction as them.

After a crash the file holds the rows of some position and that position; the replica reads
the log on from there (``catch_up``). Its live feed may start further back (its snapshot is
saved on its own clock), so some events are folded twice: ``fold`` is idempotent, and such
replays change nothing. A file that cannot be used is set aside and rebuilt from the log.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import attrgetter
from pathlib import Path
from typing import Any, Union

import msgspec

from netmon.app.projections.alert_model import (
    ALERT_EVENT_TYPES,
    SHOWN_STATES,
    AboutOneAlert,
    AlertEvent,
    AlertRecord,
    fold,
)
from netmon.app.projections.alert_queries import (
    AlertQuery,
    encode_cursor,
    order_clause,
    row_key,
    where_clause,
)
from netmon.app.projections.alert_tables import (
    RowWriter,
    connect,
    encode,
    offsets_decoder,
    pending_decoder,
    record_decoder,
    set_aside,
    suppression_decoder,
)
from netmon.storage.contract.events import (
    EVENT_TYPES,
    SEVERITY_RANK,
    AlertOpened,
    AlertSuppressed,
)
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position

log = logging.getLogger(__name__)

POSITION_EVERY_S = 1.0  # a batch without alerts moves the saved position at most this often
MAX_PENDING = 10_000  # events waiting for their AlertOpened; the oldest go first past it
MAX_RETRY = 100_000  # alert events kept in memory while the file cannot be written
CATCH_UP_BATCH = 50_000
_ORDER = attrgetter("ts", "id")
_RANK_NAMES = {rank: name for name, rank in SEVERITY_RANK.items()}


def _skim_decoder() -> msgspec.json.Decoder[Any]:
    """Decodes alert events fully and every other event into an empty Struct of its tag: the
    catch-up reads the whole log, and a flow's fields are never needed here."""
    kinds: list[type] = []
    for kind in EVENT_TYPES:
        if kind in ALERT_EVENT_TYPES:
            kinds.append(kind)
        else:
            tag = kind.__struct_config__.tag
            kinds.append(
                msgspec.defstruct(f"Skimmed{kind.__name__}", [], tag=tag, tag_field="type")
            )
    return msgspec.json.Decoder(Union[tuple(kinds)])  # noqa: UP007


class AlertCounts(msgspec.Struct, frozen=True):
    """Alerts by the state a reader shows, and unresolved, unsuppressed alerts by severity."""

    by_state: dict[str, int]
    by_severity: dict[str, int]


class AlertPage(msgspec.Struct, frozen=True):
    """One page of a list: the records, and the cursor of the next page (None: the last)."""

    records: list[AlertRecord]
    next_cursor: str | None


def alert_store_path(data_dir: Path, replica: str) -> Path:
    """Where a replica keeps its alert projection."""
    return Path(data_dir) / "projections" / f"alerts-{replica}.sqlite"


class AlertStore:
    """One replica's alert projection: one writer (the replica's live loop), any readers."""

    def __init__(self, path: Path, log_root: Path) -> None:
        self.path = path
        self.log_root = log_root  # the data dir whose log ``catch_up`` reads
        self._db = connect(path)
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self.offsets, self.folded = self._load_position()
        self._saved_at = time.monotonic()
        self._position_dirty = False
        self._ahead = False  # True after a catch-up: the live feed may start behind us
        self._retry: list[AlertEvent] = []
        self._pending = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        self._reader: EventLogReader | None = None

    @classmethod
    def open(cls, path: Path, log_root: Path) -> AlertStore:
        """Open (or create) the file; one that cannot be used is set aside and started anew."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return cls(path, log_root)
        except sqlite3.DatabaseError as error:
            aside = set_aside(path)
            log.error("alert store %s unusable (%s); moved to %s, rebuilding", path, error, aside)
            return cls(path, log_root)

    def close(self) -> None:
        """Save the position and close every connection."""
        with self._lock:
            if self._position_dirty:
                with self._transaction():
                    self._save_position()
            for connection in [self._db, *self._readers]:
                connection.close()
            self._readers.clear()

    # --- writing ----------------------------------------------------------------------------

    def apply(self, events: Sequence[object], offsets: Mapping[str, int]) -> list[AlertEvent]:
        """Fold a batch of the live feed and move to ``offsets``; the alert events now saved.

        A batch without alert events (nearly all) costs one set of its types; its position is
        saved at most every POSITION_EVERY_S. A batch that cannot be written (disk full) is
        kept in memory and folded with the next one; the saved position stays behind it.
        """
        if ALERT_EVENT_TYPES.isdisjoint(map(type, events)) and not self._retry:
            self._advance(offsets)
            if time.monotonic() - self._saved_at >= POSITION_EVERY_S:
                self._write([], force=True)
            return []
        batch: list[AlertEvent] = [event for event in events if type(event) in ALERT_EVENT_TYPES]  # type: ignore[misc]
        batch.sort(key=_ORDER)
        self._advance(offsets)
        return self._write(batch)

    def catch_up(self, max_events: int = CATCH_UP_BATCH) -> int:
        """Fold everything the log holds after the saved position; how many events it read.

        Blocking: a replica runs it in a thread, then once more on its loop, and hands over to
        its live feed (app/live_service.py); the feed may then repeat some of it (harmless).
        """
        if self._reader is None:
            self._reader = EventLogReader(
                self.log_root, tail_decoder=_skim_decoder(), follow_forward=True
            )
        position = Position(offsets=dict(self.offsets))
        total = 0
        while True:
            events, position = self._reader.read_new(position, max_events)
            if not events:
                break
            total += len(events)
            batch = [event for event in events if type(event) in ALERT_EVENT_TYPES]
            self.offsets = position.offsets
            self._write(sorted(batch, key=_ORDER), force=True)
        self._ahead = True
        return total

    def _advance(self, offsets: Mapping[str, int]) -> None:
        """Move the position to ``offsets``; while the feed is still behind what a catch-up
        read, keep the furthest offset of each segment instead."""
        if self._ahead:
            if all(offsets.get(segment, 0) >= end for segment, end in self.offsets.items()):
                self._ahead = False
            else:
                merged = dict(self.offsets)
                for segment, end in offsets.items():
                    merged[segment] = max(end, merged.get(segment, 0))
                self.offsets = merged
                self._position_dirty = True
                return
        self.offsets = dict(offsets)
        self._position_dirty = True

    def _write(self, batch: list[AlertEvent], force: bool = False) -> list[AlertEvent]:
        """Fold ``batch`` (and what failed before) and save the rows with the position; the
        events saved (none when the write failed: they wait for the next one)."""
        events = self._retry + batch if self._retry else batch
        if not events and not force:
            return []
        folded = self.folded
        try:
            with self._lock, self._transaction():
                folding = RowWriter(self._db)
                for event in events:
                    try:
                        self._fold_one(folding, event)
                    except (TypeError, ValueError, KeyError, msgspec.DecodeError) as error:
                        # A bug, never expected from validated events: skip it, keep the rest.
                        log.error("alert store: event %s not folded: %r", event.id, error)
                folding.save()
                self.folded += len(events)
                self._save_position()
        except sqlite3.Error as error:
            self.folded = folded
            self._retry = events[-MAX_RETRY:]
            log.error(
                "alert store %s: %d alert events not saved, kept to retry: %s",
                self.path,
                len(self._retry),
                error,
            )
            return []
        self._retry = []
        return events

    def _fold_one(self, folding: RowWriter, event: AlertEvent) -> None:
        if isinstance(event, AlertSuppressed):
            self._suppress(event)
            return
        record = folding.get(event.alert_id)
        if record is None and not isinstance(event, AlertOpened):
            self._park(event)
            return
        folded = fold(record, event)
        if record is None and folded is not None:
            folded = self._apply_waiting(folded)
        if folded is not None and folded is not record:
            folding.put(folded)

    def _suppress(self, event: AlertSuppressed) -> None:
        """Keep the longest suppression of its key. One of an entity also extends the expiry in
        the rows of its unresolved alerts (the column lists and counts use); one of a whole
        rule ("*") stays in its table only, as it may name thousands of alerts: lists and counts
        look it up (alert_queries.SUPPRESSED, ``counts``). Records are never rewritten for it:
        readers fold the longest suppression naming an alert in (``_with_suppression``)."""
        key = (event.branch, event.rule, event.entity)
        row = self._db.execute(
            "SELECT until, ts, event_id FROM suppressions "
            "WHERE branch = ? AND rule = ? AND entity = ?",
            key,
        ).fetchone()
        if row is None or (event.until, event.ts, event.id) > tuple(row):
            self._db.execute(
                "INSERT OR REPLACE INTO suppressions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, event.until, event.ts, event.id, encode(event)),
            )
        if event.entity != "*":
            self._db.execute(
                "UPDATE alerts SET suppressed_until = ? WHERE branch = ? AND rule = ? "
                "AND entity = ? AND state != 'resolved' AND suppressed_until < ?",
                (event.until, *key, event.until),
            )

    def _apply_waiting(self, record: AlertRecord) -> AlertRecord:
        """A new record takes the events about it that came before it."""
        waiting = self._db.execute(
            "SELECT event FROM pending WHERE alert_id = ? ORDER BY ts, event_id",
            (record.alert_id,),
        ).fetchall()
        if waiting:
            for (blob,) in waiting:
                record = fold(record, pending_decoder.decode(blob)) or record
            self._db.execute("DELETE FROM pending WHERE alert_id = ?", (record.alert_id,))
            self._pending -= len(waiting)
        return record

    def _park(self, event: AboutOneAlert) -> None:
        """Keep an event about an alert not opened yet (bounded: the oldest go first)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?)",
            (event.id, event.alert_id, event.ts, encode(event)),
        )
        self._pending += cursor.rowcount
        if self._pending > MAX_PENDING:
            excess = self._pending - MAX_PENDING
            self._db.execute(
                "DELETE FROM pending WHERE event_id IN "
                "(SELECT event_id FROM pending ORDER BY ts, event_id LIMIT ?)",
                (excess,),
            )
            self._pending -= excess
            log.warning(
                "alert store: %d events about alerts never opened dropped (cap %d)",
                excess,
                MAX_PENDING,
            )

    def _save_position(self) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO position VALUES (1, ?, ?)", (encode(self.offsets), self.folded)
        )
        self._saved_at = time.monotonic()
        self._position_dirty = False

    def _load_position(self) -> tuple[dict[str, int], int]:
        row = self._db.execute("SELECT offsets, folded FROM position WHERE id = 1").fetchone()
        return ({}, 0) if row is None else (offsets_decoder.decode(row[0]), row[1])

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- reading (any thread) ------------------------------------------------------------------

    def get(self, alert_id: str) -> AlertRecord | None:
        """One alert by id (None when unknown)."""
        row = self._read("SELECT record FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        return None if row is None else self._with_suppression(row[0])

    def page(self, query: AlertQuery, now: float) -> AlertPage:
        """A page of alerts for ``query`` (QueryError for a bad cursor)."""
        if query.branches is not None and not query.branches:
            return AlertPage(records=[], next_cursor=None)
        condition, params = where_clause(query, now)
        rows = self._read(
            "SELECT record, severity_rank, last_seen, count, alert_id "
            "FROM alerts "
            f"WHERE {condition} "
            f"ORDER BY {order_clause(query.sort)} LIMIT ?",
            (*params, query.limit + 1),
        ).fetchall()
        records = [self._with_suppression(row[0]) for row in rows[: query.limit]]
        next_cursor = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            named = {
                "severity_rank": last[1],
                "last_seen": last[2],
                "count": last[3],
                "alert_id": last[4],
            }
            next_cursor = encode_cursor(query.sort, row_key(query.sort, named))
        return AlertPage(records=records, next_cursor=next_cursor)

    def counts(self, branches: Iterable[str] | None, now: float) -> AlertCounts:
        """Alerts by shown state, and the unresolved, unsuppressed ones by severity.

        From the counts table, less the suppressed: the alerts of each rule suppressed as a
        whole (the counts table again), and the few rows whose own suppression runs now (an
        index range) outside those rules. Nothing here grows with the number of alerts."""
        scope, params = _branch_scope(branches)
        stored = self._read(
            f"SELECT state, severity_rank, SUM(n) FROM counts WHERE {scope} "
            "GROUP BY state, severity_rank",
            params,
        ).fetchall()
        counted_scope, _ = _branch_scope(branches, column="c.branch")
        whole_rules = self._read(
            "SELECT c.state, c.severity_rank, SUM(c.n) FROM counts AS c JOIN suppressions AS s "
            "ON s.branch = c.branch AND s.rule = c.rule AND s.entity = '*' AND s.until > ? "
            f"WHERE c.state != 'resolved' AND {counted_scope} "
            "GROUP BY c.state, c.severity_rank",
            (now, *params),
        ).fetchall()
        own = self._read(
            "SELECT state, severity_rank, COUNT(*) FROM alerts WHERE state != 'resolved' "
            f"AND suppressed_until > ? AND {scope} AND NOT EXISTS (SELECT 1 FROM suppressions "
            "AS s WHERE s.entity = '*' AND s.branch = alerts.branch AND s.rule = alerts.rule "
            "AND s.until > ?) GROUP BY state, severity_rank",
            (now, *params, now),
        ).fetchall()
        suppressed = [*whole_rules, *own]
        by_state: dict[str, int] = dict.fromkeys(SHOWN_STATES, 0)
        by_severity = {name: 0 for name in SEVERITY_RANK if name != "none"}
        for sign, rows in ((1, stored), (-1, suppressed)):
            for state, rank, number in rows:
                by_state[state] += sign * number
                if state != "resolved" and rank in _RANK_NAMES and rank > 0:
                    by_severity[_RANK_NAMES[rank]] += sign * number
        by_state["suppressed"] = sum(number for _, _, number in suppressed)
        return AlertCounts(by_state=by_state, by_severity=by_severity)

    def rules(self, branches: Iterable[str] | None) -> list[str]:
        """Every rule that has an alert in these branches (for a filter's choices)."""
        scope, params = _branch_scope(branches)
        rows = self._read(f"SELECT DISTINCT rule FROM counts WHERE {scope} AND n > 0", params)
        return sorted(row[0] for row in rows)

    def _with_suppression(self, blob: bytes) -> AlertRecord:
        """The stored record with the longest suppression naming it, folded in by the model
        (unless resolved; see ``_suppress``)."""
        record = record_decoder.decode(blob)
        if record.state == "resolved":
            return record
        found = self._read(
            "SELECT event FROM suppressions WHERE branch = ? AND rule = ? AND entity IN (?, '*') "
            "ORDER BY until DESC, ts DESC, event_id DESC LIMIT 1",
            (record.branch, record.rule, record.entity),
        ).fetchone()
        if found is None:
            return record
        return fold(record, suppression_decoder.decode(found[0])) or record

    def _read(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run a query on this thread's own connection (SQLite connections are not shared)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(self.path, readonly=True)
            self._local.connection = connection
            with self._lock:
                self._readers.append(connection)
        return connection.execute(sql, params)


def _branch_scope(branches: Iterable[str] | None, column: str = "branch") -> tuple[str, list[str]]:
    if branches is None:
        return "1", []
    names = list(branches)
    return f"{column} IN ({','.join('?' * len(names))})", names
