"""storage/users.py on its own: sessions housekeeping, cascades, generations, last admin."""

from __future__ import annotations

from pathlib import Path

import pytest

from netmon.storage.database import Database, database_path
from netmon.storage.users import LastAdminError, Session, UserExistsError, UserStore
from tests.app.auth.live import run


def _session(token_hash: str, user_id: int, created: float, expires: float) -> Session:
    return Session(
        token_hash=token_hash,
        user_id=user_id,
        csrf_token="c",
        created_at=created,
        last_seen=created,
        expires_at=expires,
    )


def test_user_store_lifecycle(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await Database.open(database_path(tmp_path))
        store = UserStore(db)
        try:
            boss = await store.create("boss", "h1", "admin")
            worker = await store.create("worker", "h2", "viewer", ("north", "north", "east"))
            assert worker.branches == ("east", "north")  # de-duplicated, sorted
            with pytest.raises(UserExistsError):
                await store.create("worker", "h3", "viewer")
            await store.create_session(_session("old", worker.id, 100.0, 200.0))
            await store.create_session(_session("new", worker.id, 1000.0, 2000.0))
            assert await store.session("old") is None  # expired ones go when a new one starts
            changed = await store.set_password(worker.id, "h4")
            assert changed is not None and changed.token_generation == 1
            assert await store.session("new") is None  # a password change ends sessions
            await store.create_session(_session("again", worker.id, 3000.0, 1e12))
            assert await store.delete(worker.id)
            assert await store.session("again") is None  # cascade
            with pytest.raises(LastAdminError):
                await store.update(boss.id, role="viewer")
            with pytest.raises(LastAdminError):
                await store.delete(boss.id)
            assert await store.update(12345, role="viewer") is None
            assert not await store.delete(12345)
            await store.revoke_token("jti-1", 1e12)
            assert await store.is_revoked("jti-1") and not await store.is_revoked("jti-2")
        finally:
            await db.close()

    run(scenario())
