"""Users, browser sessions and revoked token ids, stored in the SQLite database.

Password hashes are opaque strings here (argon2id, app/auth/passwords.py). Every value is
passed as a query parameter, never formatted into SQL, so any text is stored literally.
``token_generation`` goes up on every password change: access tokens carry the generation they
were issued under, so a change revokes them all at once.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Literal

import msgspec

from netmon.storage.database import Database

Role = Literal["admin", "analyst", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "analyst", "viewer")
_USER_COLUMNS = (
    "id, username, display_name, role, branches, token_generation, created_at, updated_at"
)


class User(msgspec.Struct, frozen=True, kw_only=True):
    """A user as the rest of the server sees it (never with the password hash)."""

    id: int
    username: str
    display_name: str
    role: Role
    branches: tuple[str, ...]
    token_generation: int
    created_at: float
    updated_at: float


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A browser session; the cookie holds a token whose SHA-256 is ``token_hash``."""

    token_hash: str
    user_id: int
    csrf_token: str
    created_at: float
    last_seen: float
    expires_at: float
    source: str = ""


class UserExistsError(Exception):
    """A user with that username already exists."""


class LastAdminError(Exception):
    """The change would leave no admin able to manage users."""


def _user(row: tuple[object, ...]) -> User:
    return User(
        id=int(row[0]),  # type: ignore[call-overload]
        username=str(row[1]),
        display_name=str(row[2]),
        role=row[3],  # type: ignore[arg-type]
        branches=tuple(msgspec.json.decode(str(row[4]), type=list[str])),
        token_generation=int(row[5]),  # type: ignore[call-overload]
        created_at=float(row[6]),  # type: ignore[arg-type]
        updated_at=float(row[7]),  # type: ignore[arg-type]
    )


def _session(row: tuple[object, ...]) -> Session:
    return Session(
        token_hash=str(row[0]),
        user_id=int(row[1]),  # type: ignore[call-overload]
        csrf_token=str(row[2]),
        created_at=float(row[3]),  # type: ignore[arg-type]
        last_seen=float(row[4]),  # type: ignore[arg-type]
        expires_at=float(row[5]),  # type: ignore[arg-type]
        source=str(row[6]),
    )


class UserStore:
    """Reads and writes users, sessions and token revocations."""

    def __init__(self, database: Database) -> None:
        self._db = database

    # --- users ------------------------------------------------------------------------------

    async def count(self) -> int:
        """How many users exist."""
        row = await self._db.fetch_one("SELECT COUNT(*) FROM users")
        return int(row[0]) if row else 0

    async def create(
        self,
        username: str,
        password_hash: str,
        role: Role,
        branches: tuple[str, ...] = (),
        display_name: str = "",
    ) -> User:
        """Add a user; raise UserExistsError if the username is taken."""
        now = time.time()
        try:
            async with self._db.write() as connection:
                cursor = await connection.execute(
                    "INSERT INTO users (username, display_name, role, branches, password_hash,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        username,
                        display_name,
                        role,
                        _branches_json(branches),
                        password_hash,
                        now,
                        now,
                    ),
                )
                user_id = cursor.lastrowid
        except sqlite3.IntegrityError:
            raise UserExistsError(f"user {username!r} already exists") from None
        user = await self.get(int(user_id or 0))
        assert user is not None
        return user

    async def get(self, user_id: int) -> User | None:
        """The user with this id, or None."""
        row = await self._db.fetch_one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
        )
        return _user(row) if row else None

    async def get_by_username(self, username: str) -> User | None:
        """The user with this exact username, or None."""
        row = await self._db.fetch_one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,)
        )
        return _user(row) if row else None

    async def password_hash(self, user_id: int) -> str | None:
        """The stored argon2 hash of a user, or None if the user does not exist."""
        row = await self._db.fetch_one("SELECT password_hash FROM users WHERE id = ?", (user_id,))
        return str(row[0]) if row else None

    async def all(self) -> list[User]:
        """Every user, by id."""
        rows = await self._db.fetch_all(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")
        return [_user(row) for row in rows]

    async def update(
        self,
        user_id: int,
        *,
        role: Role | None = None,
        branches: tuple[str, ...] | None = None,
        display_name: str | None = None,
    ) -> User | None:
        """Change a user's role, branches or display name; None if the user does not exist."""
        async with self._db.write() as connection:
            current = await (
                await connection.execute("SELECT role FROM users WHERE id = ?", (user_id,))
            ).fetchone()
            if current is None:
                return None
            if current[0] == "admin" and role not in (None, "admin"):
                await _refuse_if_last_admin(connection)
            await connection.execute(
                "UPDATE users SET role = COALESCE(?, role), branches = COALESCE(?, branches),"
                " display_name = COALESCE(?, display_name), updated_at = ? WHERE id = ?",
                (
                    role,
                    None if branches is None else _branches_json(branches),
                    display_name,
                    time.time(),
                    user_id,
                ),
            )
        return await self.get(user_id)

    async def set_password(self, user_id: int, password_hash: str) -> User | None:
        """Store a new hash, revoke every token and end every session of the user."""
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "UPDATE users SET password_hash = ?, token_generation = token_generation + 1,"
                " updated_at = ? WHERE id = ?",
                (password_hash, time.time(), user_id),
            )
            if cursor.rowcount == 0:
                return None
            await connection.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
        return await self.get(user_id)

    async def upgrade_hash(self, user_id: int, password_hash: str) -> None:
        """Replace a hash by one of the same password at a new cost (tokens stay valid)."""
        await self._db.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
        )

    async def delete(self, user_id: int) -> bool:
        """Remove a user (and, by cascade, their sessions); False if there was none."""
        async with self._db.write() as connection:
            row = await (
                await connection.execute("SELECT role FROM users WHERE id = ?", (user_id,))
            ).fetchone()
            if row is None:
                return False
            if row[0] == "admin":
                await _refuse_if_last_admin(connection)
            await connection.execute("DELETE FROM users WHERE id = ?", (user_id,))
        return True

    # --- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: Session) -> None:
        """Store a new browser session (and drop expired ones while holding the lock)."""
        async with self._db.write() as connection:
            await connection.execute(
                "DELETE FROM sessions WHERE expires_at < ?", (session.created_at,)
            )
            await connection.execute(
                "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, last_seen,"
                " expires_at, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.token_hash,
                    session.user_id,
                    session.csrf_token,
                    session.created_at,
                    session.last_seen,
                    session.expires_at,
                    session.source,
                ),
            )

    async def session_with_user(self, token_hash: str) -> tuple[Session, User] | None:
        """The session with this token hash and its user, in one query (every request)."""
        row = await self._db.fetch_one(
            "SELECT s.token_hash, s.user_id, s.csrf_token, s.created_at, s.last_seen,"
            " s.expires_at, s.source, "
            + ", ".join(f"u.{column.strip()}" for column in _USER_COLUMNS.split(","))
            + " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
            (token_hash,),
        )
        if row is None:
            return None
        return _session(row[:7]), _user(row[7:])

    async def token_user(self, user_id: int, jti: str) -> tuple[User, bool] | None:
        """The user a token names and whether the token id was revoked, in one query."""
        row = await self._db.fetch_one(
            f"SELECT {_USER_COLUMNS}, EXISTS(SELECT 1 FROM revoked_tokens WHERE jti = ?)"
            " FROM users WHERE id = ?",
            (jti, user_id),
        )
        return (_user(row[:8]), bool(row[8])) if row else None

    async def session(self, token_hash: str) -> Session | None:
        """The session with this token hash, or None."""
        row = await self._db.fetch_one(
            "SELECT token_hash, user_id, csrf_token, created_at, last_seen, expires_at, source"
            " FROM sessions WHERE token_hash = ?",
            (token_hash,),
        )
        return _session(row) if row else None

    async def touch_session(self, token_hash: str, now: float) -> None:
        """Record activity on a session (for the idle timeout)."""
        await self._db.execute(
            "UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, token_hash)
        )

    async def delete_session(self, token_hash: str) -> None:
        """End one session."""
        await self._db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    # --- revoked access tokens --------------------------------------------------------------

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        """Refuse the token with this id from now on (kept until it would have expired)."""
        async with self._db.write() as connection:
            await connection.execute(
                "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)",
                (jti, expires_at),
            )
            # Expired ids can never be presented again: drop them while we hold the lock.
            await connection.execute(
                "DELETE FROM revoked_tokens WHERE expires_at < ?", (time.time() - 60,)
            )

    async def is_revoked(self, jti: str) -> bool:
        """Whether the token id was revoked."""
        row = await self._db.fetch_one("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,))
        return row is not None


def _branches_json(branches: tuple[str, ...]) -> str:
    return msgspec.json.encode(sorted(set(branches))).decode()


async def _refuse_if_last_admin(connection: object) -> None:
    cursor = await connection.execute(  # type: ignore[attr-defined]
        "SELECT COUNT(*) FROM users WHERE role = 'admin'"
    )
    row = await cursor.fetchone()
    if row is None or int(row[0]) <= 1:
        raise LastAdminError("refused: this is the last admin")
