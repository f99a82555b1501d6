"""The alert projection's SQLite file: its tables, its connections, and how one transaction
writes the records it changed (``RowWriter``). The store (app/projections/alert_store.py) decides
what to fold; this module knows where it goes.

Indexes: each list query finds its first page through one of them, in sort order, and stops
after ``limit`` rows; "open_" ones are partial (unresolved alerts: the work queue), and the
branch and rule ones serve a user of one branch and a rule filter.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import msgspec

from netmon.app.projections.alert_model import AboutOneAlert, AlertRecord
from netmon.storage.contract.events import SEVERITY_RANK, AlertSuppressed

SCHEMA_VERSION = 1
MMAP_BYTES = 256 * 1024 * 1024
WRITER_CACHE_KIB = 16 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT NOT NULL UNIQUE,
    branch TEXT NOT NULL,
    rule TEXT NOT NULL,
    entity TEXT NOT NULL,
    state TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    opened REAL NOT NULL,
    last_seen REAL NOT NULL,
    count INTEGER NOT NULL,
    suppressed_until REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS by_severity ON alerts (severity_rank, last_seen, alert_id);
CREATE INDEX IF NOT EXISTS by_last_seen ON alerts (last_seen, alert_id);
CREATE INDEX IF NOT EXISTS by_count ON alerts (count, last_seen, alert_id);
CREATE INDEX IF NOT EXISTS branch_by_severity
    ON alerts (branch, severity_rank, last_seen, alert_id);
CREATE INDEX IF NOT EXISTS branch_by_last_seen ON alerts (branch, last_seen, alert_id);
CREATE INDEX IF NOT EXISTS branch_by_count ON alerts (branch, count, last_seen, alert_id);
CREATE INDEX IF NOT EXISTS rule_by_severity ON alerts (rule, severity_rank, last_seen, alert_id);
CREATE INDEX IF NOT EXISTS rule_by_last_seen ON alerts (rule, last_seen, alert_id);
CREATE INDEX IF NOT EXISTS entity_by_last_seen ON alerts (entity, last_seen, alert_id);
CREATE INDEX IF NOT EXISTS open_by_severity ON alerts (severity_rank, last_seen, alert_id)
    WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS open_by_last_seen ON alerts (last_seen, alert_id)
    WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS open_by_count ON alerts (count, last_seen, alert_id)
    WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS open_branch_by_severity
    ON alerts (branch, severity_rank, last_seen, alert_id) WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS open_rule_by_severity
    ON alerts (rule, severity_rank, last_seen, alert_id) WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS open_by_suppression ON alerts (suppressed_until)
    WHERE state != 'resolved';
CREATE TABLE IF NOT EXISTS counts (
    branch TEXT NOT NULL, rule TEXT NOT NULL, state TEXT NOT NULL, severity_rank INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (branch, rule, state, severity_rank)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS suppressions (
    branch TEXT NOT NULL, rule TEXT NOT NULL, entity TEXT NOT NULL,
    until REAL NOT NULL, ts REAL NOT NULL, event_id TEXT NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (branch, rule, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    event_id TEXT PRIMARY KEY, alert_id TEXT NOT NULL, ts REAL NOT NULL, event BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_by_alert ON pending (alert_id, ts, event_id);
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 1), offsets BLOB NOT NULL, folded INTEGER NOT NULL
);
"""

record_decoder = msgspec.msgpack.Decoder(AlertRecord)
pending_decoder: msgspec.msgpack.Decoder[AboutOneAlert] = msgspec.msgpack.Decoder(AboutOneAlert)
suppression_decoder = msgspec.msgpack.Decoder(AlertSuppressed)
offsets_decoder = msgspec.msgpack.Decoder(dict[str, int])
encode = msgspec.msgpack.Encoder().encode


class RowWriter:
    """The records one transaction changes, read once and written once at its end."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.before: dict[str, AlertRecord | None] = {}
        self.now: dict[str, AlertRecord] = {}

    def get(self, alert_id: str) -> AlertRecord | None:
        if alert_id in self.now:
            return self.now[alert_id]
        if alert_id not in self.before:
            row = self.db.execute(
                "SELECT record FROM alerts WHERE alert_id = ?", (alert_id,)
            ).fetchone()
            self.before[alert_id] = None if row is None else record_decoder.decode(row[0])
        return self.before[alert_id]

    def put(self, record: AlertRecord) -> None:
        self.get(record.alert_id)  # remember what it was, for the counts
        self.now[record.alert_id] = record

    def changed_ids(self) -> list[str]:
        return list(self.now)

    def save(self) -> None:
        """Write the changed rows and move their counts; a row's suppression expiry is the
        longest suppression naming it (0 once resolved)."""
        for alert_id, record in self.now.items():
            before = self.before.get(alert_id)
            if before is not None:
                self._count(before, -1)
            self._count(record, 1)
            self.db.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (alert_id) DO UPDATE SET state = excluded.state, "
                "severity_rank = excluded.severity_rank, last_seen = excluded.last_seen, "
                "count = excluded.count, suppressed_until = excluded.suppressed_until, "
                "record = excluded.record",
                (
                    alert_id,
                    record.branch,
                    record.rule,
                    record.entity,
                    record.state,
                    SEVERITY_RANK[record.severity],
                    record.opened,
                    record.last_seen,
                    record.evidence.count,
                    self._suppressed_until(record),
                    encode(record),
                ),
            )

    def _suppressed_until(self, record: AlertRecord) -> float:
        if record.state == "resolved":
            return 0.0
        row = self.db.execute(
            "SELECT until FROM suppressions WHERE branch = ? AND rule = ? AND entity = ?",
            (record.branch, record.rule, record.entity),
        ).fetchone()
        return float(row[0]) if row else 0.0

    def _count(self, record: AlertRecord, sign: int) -> None:
        self.db.execute(
            "INSERT INTO counts VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET n = n + excluded.n",
            (record.branch, record.rule, record.state, SEVERITY_RANK[record.severity], sign),
        )


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, NORMAL sync: a crash
    keeps every committed transaction but the last few, and never a torn one."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    # Reads through the OS page cache (shared by every connection), not per-connection copies.
    connection.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    if readonly:
        connection.execute("PRAGMA query_only = 1")
        return connection
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        connection.close()
        raise sqlite3.DatabaseError(
            f"schema version {version}, this release reads {SCHEMA_VERSION}"
        )
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")  # the indexes' upper pages
    connection.executescript(SCHEMA)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    os.chmod(path, 0o600)
    return connection


def set_aside(path: Path) -> Path:
    number = 1
    while (aside := path.with_name(f"{path.name}.corrupt-{number}")).exists():
        number += 1
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return aside
