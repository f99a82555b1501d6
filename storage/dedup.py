"""Which agent batches are already stored: exactly-once ingest across reconnects, replicas,
ZIP uploads and server restarts.

A batch is named by (agent id, boot id, sequence). Before appending a batch a replica *claims*
it in ``DATA_DIR/ingest/dedup.sqlite3`` (WAL, ``synchronous=FULL``): the primary key makes the
claim atomic across processes, so two replicas sharing the data dir never both append it. The
claim records the writer and the id of the batch's last event; after the append is durable the
claim is marked done.

If the process dies between the append and the mark (kill -9), the claim stays "pending". On
start, each writer resolves its own pending claims against the event log itself: if the batch's
last event is in the log the batch was stored (mark done), otherwise it was not (drop the claim,
the agent sends it again). The log stays the source of truth; this index only remembers it.

A claim left pending by a replica that is gone for good (its writer lock in the event log is
free) is taken over by the replica that receives the batch again: it checks the log itself,
exactly as a restart would (see ``app/ingest/ingestor.py``).

To stay small, claims of a boot that are done without holes are folded into a per-boot
watermark ("everything up to seq N is stored").
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Literal

import msgspec

DEDUP_FILE = Path("ingest") / "dedup.sqlite3"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS claims (
        agent_id TEXT NOT NULL, boot_id TEXT NOT NULL, seq INTEGER NOT NULL,
        state TEXT NOT NULL, writer TEXT NOT NULL, last_event_id TEXT NOT NULL,
        events INTEGER NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (agent_id, boot_id, seq)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS claims_pending ON claims (writer, state)",
    """CREATE TABLE IF NOT EXISTS watermarks (
        agent_id TEXT NOT NULL, boot_id TEXT NOT NULL, done_through INTEGER NOT NULL,
        PRIMARY KEY (agent_id, boot_id)) WITHOUT ROWID""",
)
COMPACT_EVERY = 256  # claims between two watermark compactions

ClaimOutcome = Literal["new", "duplicate", "busy"]


class PendingClaim(msgspec.Struct, frozen=True):
    """A claim whose append may or may not have happened (its writer stopped in between)."""

    agent_id: str
    boot_id: str
    seq: int
    last_event_id: str


class DedupIndex:
    """The claim table of one writer (replica); thread-safe, one SQLite connection."""

    def __init__(self, data_dir: Path, writer: str, *, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.writer = writer
        path = Path(data_dir) / DEDUP_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a claim is on disk before the append it guards starts (power-failure safe).
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA:
            self._db.execute(statement)
        self._writer = writer
        self._clock = clock
        self._lock = threading.Lock()
        self._since_compact = 0

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def claim(
        self, agent_id: str, boot_id: str, seq: int, last_event_id: str, events: int
    ) -> ClaimOutcome:
        """Claim a batch for appending: "new" (go ahead), "duplicate" (already stored) or
        "busy" (another writer is appending it right now)."""
        with self._lock:
            mark = self._db.execute(
                "SELECT done_through FROM watermarks WHERE agent_id = ? AND boot_id = ?",
                (agent_id, boot_id),
            ).fetchone()
            if mark is not None and seq <= mark[0]:
                return "duplicate"
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO claims VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
                (agent_id, boot_id, seq, self._writer, last_event_id, events, self._clock()),
            )
            if cursor.rowcount == 1:
                return "new"
            row = self._db.execute(
                "SELECT state FROM claims WHERE agent_id = ? AND boot_id = ? AND seq = ?",
                (agent_id, boot_id, seq),
            ).fetchone()
        return "duplicate" if row is not None and row[0] == "done" else "busy"

    def mark_done(self, agent_id: str, boot_id: str, seq: int) -> None:
        """The claimed batch is durably appended."""
        with self._lock:
            # No fsync for the mark: if it is lost, the claim stays pending and the restart
            # resolves it against the log, which already holds the batch durably.
            self._db.execute("PRAGMA synchronous=OFF")
            try:
                self._db.execute(
                    "UPDATE claims SET state = 'done'"
                    " WHERE agent_id = ? AND boot_id = ? AND seq = ?",
                    (agent_id, boot_id, seq),
                )
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
            self._since_compact += 1
            if self._since_compact >= COMPACT_EVERY:
                self._since_compact = 0
                self._compact_locked()

    def release(self, agent_id: str, boot_id: str, seq: int) -> None:
        """The append failed: forget the claim so the batch can be sent again."""
        with self._lock:
            self._db.execute(
                "DELETE FROM claims WHERE agent_id = ? AND boot_id = ? AND seq = ?"
                " AND state = 'pending'",
                (agent_id, boot_id, seq),
            )

    def owner(self, agent_id: str, boot_id: str, seq: int) -> tuple[str, str] | None:
        """(writer, last event id) of a pending claim, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT writer, last_event_id FROM claims WHERE agent_id = ? AND boot_id = ?"
                " AND seq = ? AND state = 'pending'",
                (agent_id, boot_id, seq),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def take_over(self, agent_id: str, boot_id: str, seq: int, dead_writer: str) -> bool:
        """Make a dead writer's pending claim ours; False if someone else was faster."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE claims SET writer = ?, at = ? WHERE agent_id = ? AND boot_id = ?"
                " AND seq = ? AND state = 'pending' AND writer = ?",
                (self._writer, self._clock(), agent_id, boot_id, seq, dead_writer),
            )
        return cursor.rowcount == 1

    def pending(self) -> list[PendingClaim]:
        """This writer's claims left pending by a previous run."""
        with self._lock:
            rows = self._db.execute(
                "SELECT agent_id, boot_id, seq, last_event_id FROM claims"
                " WHERE writer = ? AND state = 'pending'",
                (self._writer,),
            ).fetchall()
        return [PendingClaim(*row) for row in rows]

    def is_stored(self, agent_id: str, boot_id: str, seq: int) -> bool:
        """True if the batch is known to be durably stored."""
        with self._lock:
            mark = self._db.execute(
                "SELECT done_through FROM watermarks WHERE agent_id = ? AND boot_id = ?",
                (agent_id, boot_id),
            ).fetchone()
            if mark is not None and seq <= mark[0]:
                return True
            row = self._db.execute(
                "SELECT state FROM claims WHERE agent_id = ? AND boot_id = ? AND seq = ?",
                (agent_id, boot_id, seq),
            ).fetchone()
        return row is not None and row[0] == "done"

    def compact(self) -> None:
        """Fold done claims without holes into the per-boot watermarks."""
        with self._lock:
            self._compact_locked()

    def _compact_locked(self) -> None:
        boots = self._db.execute(
            "SELECT DISTINCT agent_id, boot_id FROM claims WHERE state = 'done'"
        ).fetchall()
        for agent_id, boot_id in boots:
            mark = self._db.execute(
                "SELECT done_through FROM watermarks WHERE agent_id = ? AND boot_id = ?",
                (agent_id, boot_id),
            ).fetchone()
            through = -1 if mark is None else mark[0]
            start = through
            for (seq,) in self._db.execute(
                "SELECT seq FROM claims WHERE agent_id = ? AND boot_id = ? AND state = 'done'"
                " AND seq > ? ORDER BY seq",
                (agent_id, boot_id, through),
            ).fetchall():
                if seq != through + 1:
                    break
                through = seq
            if through == start:
                continue
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO watermarks VALUES (?, ?, ?) ON CONFLICT (agent_id, boot_id)"
                    " DO UPDATE SET done_through = max(done_through, excluded.done_through)",
                    (agent_id, boot_id, through),
                )
                self._db.execute(
                    "DELETE FROM claims WHERE agent_id = ? AND boot_id = ? AND seq <= ?"
                    " AND state = 'done'",
                    (agent_id, boot_id, through),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


def writer_alive(data_dir: Path, writer: str) -> bool:
    """True while some process holds the event-log lock of ``writer`` (read from /proc/locks,
    without taking the lock, so a replica starting up is never refused its own name)."""
    lock = Path(data_dir) / "events" / "_writers" / f"{writer}.lock"
    try:
        inode = lock.stat().st_ino
    except FileNotFoundError:
        return False  # that writer never wrote into this data dir
    try:
        locks = Path("/proc/locks").read_text()
    except OSError:
        return True  # cannot tell: assume alive (the batch stays "busy")
    for line in locks.splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF"
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False
