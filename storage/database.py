"""The server's SQLite database (``DATA_DIR/netmon.sqlite3``): users, sessions, audit, agents.

One file shared by the replicas of a data dir, in WAL mode so readers never wait for the
writer. Each process writes through one connection and one lock (``Database.write``), and every
write transaction starts with ``BEGIN IMMEDIATE`` so writers of other replicas queue on SQLite's
busy timeout instead of failing half-way.

Schema changes are the ordered ``MIGRATIONS`` list; migration *n* (1-based) brings the schema
from ``PRAGMA user_version`` n-1 to n. Never edit or reorder an entry that has shipped: append a
new one (see docs/security.md, "Adding a table").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite

log = logging.getLogger(__name__)

DATABASE_FILE = "netmon.sqlite3"
BUSY_TIMEOUT_MS = 10_000


class Migration(NamedTuple):
    """One schema step: a name for the log and the statements that make it."""

    name: str
    statements: tuple[str, ...]


MIGRATIONS: list[Migration] = [
    Migration(
        "users, sessions, revoked tokens, login throttle, secrets, audit trail",
        (
            """CREATE TABLE users (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                username TEXT NOT NULL UNIQUE,
                display_name TEXT NOT NULL DEFAULT '',
                role TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'viewer')),
                branches TEXT NOT NULL DEFAULT '[]',
                password_hash TEXT NOT NULL,
                token_generation INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            """CREATE TABLE sessions (
                token_hash TEXT PRIMARY KEY,
                user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                csrf_token TEXT NOT NULL,
                created_at REAL NOT NULL,
                last_seen REAL NOT NULL,
                expires_at REAL NOT NULL,
                source TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX sessions_user ON sessions(user_id)",
            """CREATE TABLE revoked_tokens (
                jti TEXT PRIMARY KEY,
                expires_at REAL NOT NULL
            )""",
            """CREATE TABLE login_throttle (
                key TEXT PRIMARY KEY,
                failures INTEGER NOT NULL,
                last_failure REAL NOT NULL,
                blocked_until REAL NOT NULL
            )""",
            """CREATE TABLE secrets (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )""",
            """CREATE TABLE audit (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                ts REAL NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                source TEXT NOT NULL,
                outcome TEXT NOT NULL,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            "CREATE INDEX audit_actor ON audit(actor)",
            "CREATE INDEX audit_action ON audit(action)",
            "CREATE INDEX audit_ts ON audit(ts)",
        ),
    ),
    # Append new migrations here, e.g. the transport's agents table:
    # Migration("agents", ("CREATE TABLE agents (...)", "CREATE INDEX ...")),
]


class DatabaseError(Exception):
    """The database file cannot be opened or migrated; the message says why."""


class Database:
    """One aiosqlite connection with a write lock; open with ``Database.open(path)``."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._connection = connection
        self._write_lock = asyncio.Lock()
        self.path = path

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[Migration] | None = None) -> Database:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing commits implicitly.
            connection = await aiosqlite.connect(path, isolation_level=None)
        except Exception as error:  # sqlite3.Error, OSError: both mean "cannot use this file"
            raise DatabaseError(f"cannot open database {path}: {error}") from None
        database = cls(connection, path)
        try:
            await database._configure()
            await database.migrate(MIGRATIONS if migrations is None else migrations)
        except BaseException:
            await connection.close()
            raise
        return database

    async def close(self) -> None:
        """Close the connection (after pending writes)."""
        async with self._write_lock:
            await self._connection.close()

    async def _configure(self) -> None:
        for pragma in (
            f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
            "PRAGMA foreign_keys = ON",
        ):
            await self._connection.execute(pragma)
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)  # password hashes and the generated JWT key live here

    async def schema_version(self) -> int:
        """The number of migrations applied."""
        row = await self.fetch_one("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def migrate(self, migrations: Sequence[Migration]) -> None:
        """Apply the migrations this file has not seen yet, each in its own transaction."""
        for number, migration in enumerate(migrations, start=1):
            async with self.write() as connection:
                # Re-read inside the transaction: another replica may have just migrated.
                row = await (await connection.execute("PRAGMA user_version")).fetchone()
                current = int(row[0]) if row else 0
                if current >= number:
                    continue
                if current != number - 1:
                    raise DatabaseError(f"{self.path}: schema version {current} skips {number}")
                log.info("database %s: migration %d (%s)", self.path, number, migration.name)
                try:
                    for statement in migration.statements:
                        await connection.execute(statement)
                except sqlite3.Error as error:
                    raise DatabaseError(
                        f"{self.path}: migration {number} ({migration.name}) failed: {error}"
                    ) from None
                await connection.execute(f"PRAGMA user_version = {number}")
        version = await self.schema_version()
        if version > len(migrations):
            raise DatabaseError(
                f"{self.path} has schema version {version}, newer than this Netmon "
                f"({len(migrations)}): upgrade Netmon or use another data dir"
            )

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        async with self._write_lock:
            await self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                await self._connection.execute("ROLLBACK")
                raise
            await self._connection.execute("COMMIT")

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write statement in its own transaction; return the number of changed rows."""
        async with self.write() as connection:
            cursor = await connection.execute(sql, tuple(params))
            return cursor.rowcount

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        async with self._connection.execute(sql, tuple(params)) as cursor:
            row = await cursor.fetchone()
        return tuple(row) if row is not None else None

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        async with self._connection.execute(sql, tuple(params)) as cursor:
            rows = await cursor.fetchall()
        return [tuple(row) for row in rows]


def database_path(data_dir: Path) -> Path:
    """Where the database of a data dir lives."""
    return data_dir / DATABASE_FILE
