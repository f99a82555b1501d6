"""The identity resources of one process, opened in the lifespan: ``ServerState.auth``.

Opening them also bootstraps what a first start needs: the database schema, the token signing
key (from ``auth.jwt_secret`` or generated once and kept in the database) and, when there is
no user at all, a first admin whose one-time password is printed to the console only.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

from netmon.app.auth.passwords import Passwords, generate_password
from netmon.app.auth.sessions import SessionManager, allowed_origins
from netmon.app.auth.throttle import LoginThrottle
from netmon.app.auth.tokens import TokenService, generate_secret
from netmon.app.settings import AuthSettings, Settings, SettingsError
from netmon.storage.audit import AuditTrail
from netmon.storage.database import Database, database_path
from netmon.storage.users import UserExistsError, UserStore

log = logging.getLogger(__name__)

FIRST_ADMIN = "admin"
SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class AuthContext:
    """Everything the auth middleware and routes use, built once per process."""

    settings: AuthSettings
    db: Database
    users: UserStore
    audit: AuditTrail
    passwords: Passwords
    tokens: TokenService
    sessions: SessionManager
    throttle: LoginThrottle
    origins: frozenset[str]


@contextlib.asynccontextmanager
async def open_auth(
    settings: Settings, console: TextIO | None = None
) -> AsyncIterator[AuthContext]:
    """Open the database and build the auth context; bootstrap the first admin if needed."""
    db = await Database.open(database_path(settings.data_dir))
    try:
        users = UserStore(db)
        context = AuthContext(
            settings=settings.auth,
            db=db,
            users=users,
            audit=AuditTrail(db),
            passwords=Passwords(settings.auth),
            tokens=await token_service(db, settings.auth),
            sessions=SessionManager(users, settings.auth),
            throttle=LoginThrottle(db, settings.auth),
            origins=allowed_origins(settings.auth),
        )
        await bootstrap_first_admin(context, console or sys.stdout)
        yield context
    finally:
        await db.close()


async def token_service(db: Database, settings: AuthSettings) -> TokenService:
    """The token service with the configured or stored key; SettingsError for a weak key."""
    try:
        return TokenService(await signing_secret(db, settings), settings)
    except ValueError as error:
        raise SettingsError(f"auth.jwt_secret (NETMON_AUTH__JWT_SECRET): {error}") from None


async def signing_secret(db: Database, settings: AuthSettings) -> str:
    """The JWT key: the setting when given, else the one generated on first start."""
    if settings.jwt_secret:
        return settings.jwt_secret
    async with db.write() as connection:
        # INSERT OR IGNORE: two replicas starting together end up with the same key.
        await connection.execute(
            "INSERT OR IGNORE INTO secrets (name, value) VALUES ('jwt', ?)", (generate_secret(),)
        )
    row = await db.fetch_one("SELECT value FROM secrets WHERE name = 'jwt'")
    assert row is not None
    return str(row[0])


async def bootstrap_first_admin(context: AuthContext, console: TextIO) -> None:
    """With no user at all, create "admin" with a one-time password shown on the console."""
    if await context.users.count() > 0:
        return
    password = generate_password()
    try:
        user = await context.users.create(
            FIRST_ADMIN, await context.passwords.hash(password), "admin"
        )
    except (UserExistsError, sqlite3.IntegrityError):
        return  # another replica bootstrapped at the same moment; it printed the password
    # Printed, never logged: logs are shipped and kept, the console is seen once.
    print(
        f"netmon: no users existed, created admin user {FIRST_ADMIN!r} with one-time password:"
        f"\n\n    {password}\n\nLog in and change it (or run `netmon users reset-password`).",
        file=console,
        flush=True,
    )
    log.warning(
        "first start: created admin user %r (password printed on the console)", user.username
    )
    await context.audit.record(
        "user.created",
        actor=SYSTEM_ACTOR,
        target=user.username,
        detail={"role": "admin", "bootstrap": True},
    )
