"""The SQLite database: WAL, ordered migrations, and two writers sharing one audit chain."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from netmon.storage.audit import AuditTrail
from netmon.storage.database import MIGRATIONS, Database, DatabaseError, Migration, database_path
from tests.app.auth.live import run


def test_open_creates_the_schema_in_wal_mode(tmp_path: Path) -> None:
    async def check() -> tuple[str, int, list[str]]:
        db = await Database.open(database_path(tmp_path))
        try:
            mode = await db.fetch_one("PRAGMA journal_mode")
            tables = await db.fetch_all(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
            return str(mode[0]) if mode else "", await db.schema_version(), [t[0] for t in tables]
        finally:
            await db.close()

    mode, version, tables = run(check())
    assert mode == "wal" and version == len(MIGRATIONS)
    assert {"users", "sessions", "revoked_tokens", "login_throttle", "audit", "secrets"} <= set(
        tables
    )
    assert (database_path(tmp_path).stat().st_mode & 0o077) == 0  # hashes inside: owner only


def test_an_appended_migration_runs_once(tmp_path: Path) -> None:
    extended = [*MIGRATIONS, Migration("agents", ("CREATE TABLE agents (id TEXT PRIMARY KEY)",))]

    async def open_twice() -> int:
        for _ in range(2):  # the second open must not re-run (CREATE TABLE would fail)
            db = await Database.open(database_path(tmp_path), extended)
            version = await db.schema_version()
            await db.close()
        return version

    assert run(open_twice()) == len(MIGRATIONS) + 1


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    broken = [*MIGRATIONS, Migration("broken", ("CREATE TABLE t (x)", "THIS IS NOT SQL"))]

    async def attempt() -> int:
        with pytest.raises(DatabaseError, match="migration .* failed: .*syntax error"):
            await Database.open(database_path(tmp_path), broken)
        db = await Database.open(database_path(tmp_path))
        try:
            assert await db.fetch_one("SELECT name FROM sqlite_master WHERE name = 't'") is None
            return await db.schema_version()
        finally:
            await db.close()

    assert run(attempt()) == len(MIGRATIONS)


def test_a_database_from_a_newer_netmon_is_refused(tmp_path: Path) -> None:
    newer = [*MIGRATIONS, Migration("future", ("CREATE TABLE future (x)",))]

    async def attempt() -> None:
        await (await Database.open(database_path(tmp_path), newer)).close()
        with pytest.raises(DatabaseError, match="newer than this Netmon"):
            await Database.open(database_path(tmp_path))

    run(attempt())


def test_two_connections_appending_concurrently_keep_one_intact_chain(tmp_path: Path) -> None:
    async def replicas() -> tuple[bool, int]:
        first = await Database.open(database_path(tmp_path))
        second = await Database.open(database_path(tmp_path))
        try:
            trails = (AuditTrail(first), AuditTrail(second))
            await asyncio.gather(
                *(
                    trails[n % 2].record(
                        "test.concurrent", actor=f"replica{n % 2}", detail={"n": n}
                    )
                    for n in range(60)
                )
            )
            result = await trails[0].verify()
            return result.ok, result.checked
        finally:
            await first.close()
            await second.close()

    assert run(replicas()) == (True, 60)
