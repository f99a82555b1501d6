"""The audit trail: actions recorded with who/what/where, and `netmon audit verify` as a process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from netmon.storage.audit import AuditQuery, AuditTrail
from netmon.storage.database import Database, database_path
from tests.app.auth.live import PASSWORD, LiveServer, run, server_settings


def _netmon(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NETMON_STORE__DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "netmon.app.cli", "--log-level", "WARNING", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _trail(data_dir: Path, count: int) -> None:
    async def write() -> None:
        db = await Database.open(database_path(data_dir))
        try:
            trail = AuditTrail(db)
            for number in range(count):
                await trail.record(
                    "alert.acknowledged",
                    actor=f"user{number}",
                    target=f"alert-{number}",
                    source="192.0.2.1",
                    detail={"note": "it's fine; --", "n": number},
                )
        finally:
            await db.close()

    run(write())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    _trail(tmp_path, 6)
    return tmp_path


def test_verify_passes_on_a_clean_trail(data_dir: Path) -> None:
    result = _netmon(data_dir, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "6 records, chain intact" in result.stdout


def test_verify_names_an_edited_record(data_dir: Path) -> None:
    with sqlite3.connect(database_path(data_dir)) as db:
        db.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 4")
    result = _netmon(data_dir, "audit", "verify")
    assert result.returncode == 1
    assert "BROKEN at record 4" in result.stdout and "altered" in result.stdout


def test_verify_names_a_record_edited_with_its_hash_recomputed(data_dir: Path) -> None:
    from netmon.storage.audit import record_hash

    with sqlite3.connect(database_path(data_dir)) as db:
        row = db.execute(
            "SELECT ts, actor, action, target, source, outcome, detail, prev_hash"
            " FROM audit WHERE seq = 3"
        ).fetchone()
        forged = (row[0], "forger", *row[2:7])
        db.execute(
            "UPDATE audit SET actor = 'forger', hash = ? WHERE seq = 3",
            (record_hash(row[7], 3, forged),),
        )
    result = _netmon(data_dir, "audit", "verify")
    assert result.returncode == 1
    assert "BROKEN at record 4" in result.stdout  # record 4 no longer chains to the forged 3


@pytest.mark.parametrize("seq", [1, 3, 6])
def test_verify_names_a_deleted_record(data_dir: Path, seq: int) -> None:
    with sqlite3.connect(database_path(data_dir)) as db:
        db.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    result = _netmon(data_dir, "audit", "verify")
    assert result.returncode == 1
    assert f"BROKEN at record {seq}" in result.stdout and "missing" in result.stdout


def test_records_after_a_deleted_last_record_keep_the_gap_visible(data_dir: Path) -> None:
    with sqlite3.connect(database_path(data_dir)) as db:
        db.execute("DELETE FROM audit WHERE seq = 6")
    _trail(data_dir, 1)
    result = _netmon(data_dir, "audit", "verify")
    assert result.returncode == 1 and "BROKEN at record 6" in result.stdout


def test_verify_without_a_database_is_a_clear_error(tmp_path: Path) -> None:
    result = _netmon(tmp_path / "nothing-here", "audit", "verify")
    assert result.returncode == 2 and "no database" in result.stderr


def test_logins_user_changes_and_lockouts_are_audited_with_who_and_where(
    server: LiveServer,
) -> None:
    with server.client(headers={"X-Forwarded-For": "192.0.2.77"}) as client:
        client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": "viewer", "password": "wrong-wrong"},
        )
        client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": "viewer", "password": PASSWORD},
        )
    with server.client(
        headers={**server.bearer("admin"), "X-Forwarded-For": "192.0.2.78"}
    ) as admin:
        admin.post("/api/v1/users", json={"username": "audited", "role": "viewer"})
        logins = admin.get(
            "/api/v1/audit", params={"action": "auth.login", "actor": "viewer"}
        ).json()["records"]
        created = admin.get(
            "/api/v1/audit", params={"action": "user.created", "target": "audited"}
        ).json()["records"]
        bad = admin.get("/api/v1/audit", params={"since": "yesterday"})
    assert [(r["outcome"], r["source"]) for r in logins] == [
        ("failed", "192.0.2.77"),
        ("ok", "192.0.2.77"),
    ]
    assert [(r["actor"], r["source"]) for r in created] == [("admin", "192.0.2.78")]
    assert bad.status_code == 400 and "since" in bad.json()["detail"]


def test_audit_query_filters_and_pages(tmp_path: Path) -> None:
    _trail(tmp_path, 5)

    async def query() -> tuple[list[int], list[int], list[int]]:
        db = await Database.open(database_path(tmp_path))
        try:
            trail = AuditTrail(db)
            first = await trail.query(AuditQuery(limit=2))
            rest = await trail.query(AuditQuery(after_seq=first[-1].seq))
            one = await trail.query(AuditQuery(actor="user3"))
            none = await trail.query(AuditQuery(action="alert%"))  # LIKE metacharacters are literal
            assert none == []
            return [r.seq for r in first], [r.seq for r in rest], [r.seq for r in one]
        finally:
            await db.close()

    assert run(query()) == ([1, 2], [3, 4, 5], [4])


def test_first_start_prints_a_one_time_admin_password(tmp_path: Path) -> None:
    import io

    from netmon.app.auth.context import open_auth

    settings = server_settings(tmp_path)
    console = io.StringIO()

    async def start_twice() -> list[str]:
        async with open_auth(settings, console) as auth:
            users = [u.username for u in await auth.users.all()]
        async with open_auth(settings, console):
            pass
        return users

    assert run(start_twice()) == ["admin"]
    printed = console.getvalue()
    assert printed.count("one-time password") == 1  # the second start creates nothing
    password = printed.split("one-time password:")[1].split()[0]

    async def can_log_in() -> bool:
        async with open_auth(settings, console) as auth:
            user = await auth.users.get_by_username("admin")
            assert user is not None
            return await auth.passwords.verify(await auth.users.password_hash(user.id), password)

    assert run(can_log_in())


def test_create_admin_cli_generates_and_prints_the_password_once(tmp_path: Path) -> None:
    made = _netmon(tmp_path, "users", "create-admin", "--username", "root'; --", "--generate")
    assert made.returncode == 0, made.stderr
    assert "password (shown once):" in made.stdout
    again = _netmon(tmp_path, "users", "create-admin", "--username", "root'; --", "--generate")
    assert again.returncode == 1 and "already exists" in again.stderr
    listed = _netmon(tmp_path, "users", "list")
    assert "admin\t-\troot'; --" in listed.stdout
    assert _netmon(tmp_path, "audit", "verify").returncode == 0


@pytest.mark.parametrize(("delete", "bad"), [(None, None), (2, 2), (3, 3), (5, 5)])
def test_verify_reads_page_by_page_across_boundaries(
    data_dir: Path, delete: int | None, bad: int | None
) -> None:
    if delete is not None:
        with sqlite3.connect(database_path(data_dir)) as db:
            db.execute("DELETE FROM audit WHERE seq = ?", (delete,))

    async def verify() -> tuple[bool, int | None, list[int]]:
        pages: list[int] = []
        db = await Database.open(database_path(data_dir))
        try:
            result = await AuditTrail(db).verify(progress=pages.append, page=2)
        finally:
            await db.close()
        return result.ok, result.first_bad, pages

    ok, first_bad, pages = run(verify())
    assert (ok, first_bad) == (delete is None, bad)
    if delete is None:
        assert pages == [2, 2, 2]
