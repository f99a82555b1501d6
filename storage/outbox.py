"""The notification outbox (``DATA/analysis/outbox.sqlite``): what must reach a receiver, kept
on disk until it has.

One row per (notification, channel), keyed by the notification's stable id, so adding the same
notification twice is harmless (``INSERT OR IGNORE``) and a receiver can drop a repeat. A row is
``pending`` until its channel delivers it (``delivered``) or gives up on it (``failed``); both
stay visible for a while and are then cleaned up in bounded passes.

Delivery is at least once: ``claim`` hands out due rows and pushes their next attempt one lease
ahead, so a row whose sender died mid-send (a crash, SIGKILL) is simply due again once the
lease has passed. SQLite in WAL mode with ``synchronous=FULL``: a row is on disk when ``add``
returns, and the server's pages read the file (``read_status``) while the worker writes it.

Every SQLite or OS failure leaves as an ``OutboxError`` with a short code (``outbox_full``,
``outbox_busy``, ``outbox_damaged``, ``outbox_unavailable``) for one clear log line.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import msgspec

OUTBOX_FILE = Path("analysis") / "outbox.sqlite"
BUSY_TIMEOUT_S = 10.0
ERROR_CHARS = 500  # of a receiver's error kept per row: enough to diagnose, never a whole body
FAILING_LIMIT = 20

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS notifications (
        id TEXT NOT NULL,
        channel TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_attempt_at REAL,
        last_error TEXT NOT NULL DEFAULT '',
        delivered_at REAL,
        PRIMARY KEY (id, channel)
    )""",
    "CREATE INDEX IF NOT EXISTS notifications_due "
    "ON notifications(channel, status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS notifications_age ON notifications(status, last_attempt_at)",
)

ErrorCode = Literal["outbox_full", "outbox_busy", "outbox_damaged", "outbox_unavailable"]


class OutboxError(Exception):
    """The outbox cannot be used right now; ``code`` says why in one word."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code


class OutboxRow(msgspec.Struct, frozen=True):
    """A claimed row: what a channel sends, and how many attempts it has had (this one too)."""

    id: str
    channel: str
    payload: bytes
    attempts: int


class FailingRow(msgspec.Struct, frozen=True):
    """A notification its channel could not deliver: retrying, or given up ("failed")."""

    id: str
    channel: str
    status: Literal["retrying", "failed"]
    attempts: int
    last_error: str
    last_attempt_at: float | None
    next_attempt_at: float | None  # None once given up


class OutboxCounts(msgspec.Struct):
    """Rows by state; "retrying" are pending rows whose last attempt failed."""

    pending: int = 0
    retrying: int = 0
    delivered: int = 0
    failed: int = 0


class OutboxStatus(msgspec.Struct):
    """Counts by state and the newest failing rows (``GET /api/v1/notifications``)."""

    counts: OutboxCounts = msgspec.field(default_factory=OutboxCounts)
    failing: list[FailingRow] = []
    error: str = ""  # the outbox could not be read: why

    @property
    def failing_total(self) -> int:
        """Notifications that did not reach their receiver: retrying or given up."""
        return self.counts.retrying + self.counts.failed


def outbox_path(data_dir: Path) -> Path:
    """Where the outbox of a data dir lives."""
    return data_dir / OUTBOX_FILE


def outbox_error(error: sqlite3.Error | OSError, path: Path) -> OutboxError:
    """A library error, translated where it enters our code."""
    code: ErrorCode = "outbox_unavailable"
    sqlite_code = getattr(error, "sqlite_errorcode", None)
    if sqlite_code == sqlite3.SQLITE_FULL or getattr(error, "errno", None) == 28:  # ENOSPC
        code = "outbox_full"
    elif sqlite_code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        code = "outbox_busy"
    elif sqlite_code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        code = "outbox_damaged"
    return OutboxError(code, f"outbox {path}: {error}")


class Outbox:
    """The worker's handle on the outbox; opened on first use, so a full or missing volume
    at start-up costs a log line, not the worker. Safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                connection = self._connection or self._open()
                if not write:
                    yield connection
                    return
                connection.execute("BEGIN IMMEDIATE")  # writers of other processes queue here
                try:
                    yield connection
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except (sqlite3.Error, OSError) as error:
                self._forget()  # it may be unusable (a COMMIT that failed): the next call reopens
                raise outbox_error(error, self.path) from None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # durable when add() returns
            for statement in SCHEMA:
                connection.execute(statement)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def _forget(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    def add(self, note_id: str, channels: Sequence[str], payload: bytes, now: float) -> int:
        """Store one notification for each channel (durably); the rows that were new."""
        with self._transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO notifications (id, channel, payload, created_at, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                [(note_id, channel, payload, now, now) for channel in channels],
            )
            return db.total_changes - before

    def claim(self, channel: str, now: float, lease_s: float) -> OutboxRow | None:
        """The channel's most overdue row, counted as one more attempt and leased for
        ``lease_s`` (due again then, should its sender die); None when nothing is due."""
        if self._next_due_row(channel, now) is None:
            return None  # the common case needs no write lock
        with self._transaction() as db:
            found = db.execute(
                "SELECT id, payload, attempts FROM notifications WHERE channel = ? AND "
                "status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT 1",
                (channel, now),
            ).fetchone()
            if found is None:
                return None
            row_id, payload, attempts = found
            db.execute(
                "UPDATE notifications SET attempts = ?, last_attempt_at = ?, next_attempt_at = ? "
                "WHERE id = ? AND channel = ?",
                (attempts + 1, now, now + lease_s, row_id, channel),
            )
        return OutboxRow(row_id, channel, bytes(payload), attempts + 1)

    def _next_due_row(self, channel: str, now: float) -> str | None:
        with self._transaction(write=False) as db:
            found = db.execute(
                "SELECT id FROM notifications WHERE channel = ? AND status = 'pending' AND "
                "next_attempt_at <= ? LIMIT 1",
                (channel, now),
            ).fetchone()
        return None if found is None else str(found[0])

    def delivered(self, row: OutboxRow, now: float) -> None:
        """The receiver took it."""
        with self._transaction() as db:
            db.execute(
                "UPDATE notifications SET status = 'delivered', delivered_at = ?, last_error = '' "
                "WHERE id = ? AND channel = ?",
                (now, row.id, row.channel),
            )

    def attempt_failed(self, row: OutboxRow, error: str, retry_at: float | None) -> None:
        """Record why; due again at ``retry_at``, or given up ("failed") when it is None."""
        with self._transaction() as db:
            db.execute(
                "UPDATE notifications SET last_error = ?, "
                "status = CASE WHEN ? IS NULL THEN 'failed' ELSE 'pending' END, "
                "next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ? AND channel = ?",
                (error[:ERROR_CHARS], retry_at, retry_at, row.id, row.channel),
            )

    def next_due(self, channel: str) -> float | None:
        """When the channel's next pending row is due (None: nothing pending)."""
        with self._transaction(write=False) as db:
            (due,) = db.execute(
                "SELECT MIN(next_attempt_at) FROM notifications "
                "WHERE channel = ? AND status = 'pending'",
                (channel,),
            ).fetchone()
        return None if due is None else float(due)

    def pending(self, channels: Sequence[str]) -> int:
        """Rows of these channels not yet delivered or given up."""
        marks = ",".join("?" * len(channels))
        with self._transaction(write=False) as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM notifications "
                f"WHERE status = 'pending' AND channel IN ({marks})",
                tuple(channels),
            ).fetchone()
        return int(count)

    def give_up_channels_except(self, channels: Sequence[str], now: float) -> int:
        """Mark pending rows of channels no longer configured failed (nobody would send them)."""
        marks = ",".join("?" * len(channels))
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE notifications SET status = 'failed', last_attempt_at = ?, "
                "last_error = 'channel no longer configured' "
                f"WHERE status = 'pending' AND channel NOT IN ({marks})",
                (now, *channels),
            )
            return cursor.rowcount

    def clean_up(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` delivered or failed rows last attempted before ``before``."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM notifications WHERE rowid IN (SELECT rowid FROM notifications "
                "WHERE status IN ('delivered', 'failed') AND last_attempt_at < ? LIMIT ?)",
                (before, limit),
            )
            return cursor.rowcount

    def status(self, limit: int = FAILING_LIMIT) -> OutboxStatus:
        """Counts by state and the newest failing rows."""
        with self._transaction(write=False) as db:
            return _status(db, limit)

    def close(self) -> None:
        """Close the connection (the next call would reopen it)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def read_status(path: Path, limit: int = FAILING_LIMIT) -> OutboxStatus:
    """The status of an outbox from another process, read only (no file: nothing to show)."""
    if not path.exists():
        return OutboxStatus()
    try:
        connection = sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S
        )
    except sqlite3.Error as error:
        return OutboxStatus(error=str(outbox_error(error, path)))
    try:
        return _status(connection, limit)
    except sqlite3.Error as error:
        return OutboxStatus(error=str(outbox_error(error, path)))
    finally:
        connection.close()


def _status(db: sqlite3.Connection, limit: int) -> OutboxStatus:
    counts = OutboxCounts()
    grouped = db.execute(
        "SELECT status, status = 'pending' AND last_error != '', COUNT(*) FROM notifications "
        "GROUP BY 1, 2"
    )
    for state, retrying, count in grouped:
        name = "retrying" if retrying else state
        setattr(counts, name, getattr(counts, name) + count)
    rows = db.execute(
        "SELECT id, channel, status, attempts, last_error, last_attempt_at, next_attempt_at "
        "FROM notifications WHERE status = 'failed' OR (status = 'pending' AND last_error != '') "
        "ORDER BY last_attempt_at DESC LIMIT ?",
        (limit,),
    )
    failing = [
        FailingRow(
            id=row_id,
            channel=channel,
            status="failed" if state == "failed" else "retrying",
            attempts=attempts,
            last_error=error,
            last_attempt_at=last_at,
            next_attempt_at=None if state == "failed" else next_at,
        )
        for row_id, channel, state, attempts, error, last_at, next_at in rows
    ]
    return OutboxStatus(counts=counts, failing=failing)
