"""Login throttling per account and per client IP, with growing delays, shared by replicas.

Counters live in the database so an attacker gains nothing by spreading attempts over the
replicas behind nginx. The first ``throttle_free_attempts`` failures of a key cost nothing;
each further failure blocks the key for base * 2^(failures - free) seconds (capped), during
which attempts are refused without checking the password (HTTP 429 with Retry-After). A key's
count restarts after ``throttle_reset_s`` without failures; a successful login clears the
account's counter (not the IP's, or one valid account would unlock guessing at others).
"""

from __future__ import annotations

import hashlib
import math
import time

from netmon.app.settings import AuthSettings
from netmon.storage.database import Database


def account_key(username: str) -> str:
    """The throttle key of an account (hashed: usernames may be long or odd)."""
    return "user:" + hashlib.sha256(username.encode()).hexdigest()


def address_key(address: str) -> str:
    """The throttle key of a client IP."""
    return "ip:" + address


class LoginThrottle:
    """Decides whether a login attempt may proceed and counts failures."""

    def __init__(self, database: Database, settings: AuthSettings) -> None:
        self._db = database
        self._settings = settings

    async def retry_after(self, keys: tuple[str, ...], now: float | None = None) -> float:
        """Seconds until an attempt for these keys is allowed (0: allowed now)."""
        now = time.time() if now is None else now
        marks = ",".join("?" * len(keys))
        row = await self._db.fetch_one(
            f"SELECT MAX(blocked_until) FROM login_throttle WHERE key IN ({marks})", keys
        )
        blocked_until = float(row[0]) if row and row[0] is not None else 0.0
        return max(0.0, blocked_until - now)

    async def failed(self, keys: tuple[str, ...], now: float | None = None) -> dict[str, float]:
        """Count a failure for every key; return the keys now blocked, with their delay."""
        now = time.time() if now is None else now
        settings = self._settings
        blocked: dict[str, float] = {}
        async with self._db.write() as connection:
            # Forget keys that are quiet and unblocked, so guessed names do not pile up forever.
            await connection.execute(
                "DELETE FROM login_throttle WHERE last_failure < ? AND blocked_until < ?",
                (now - settings.throttle_reset_s, now),
            )
            for key in keys:
                row = await (
                    await connection.execute(
                        "SELECT failures, last_failure FROM login_throttle WHERE key = ?", (key,)
                    )
                ).fetchone()
                if row is None or now - float(row[1]) > settings.throttle_reset_s:
                    failures = 1
                else:
                    failures = int(row[0]) + 1
                delay = self._delay(failures)
                if delay > 0:
                    blocked[key] = delay
                await connection.execute(
                    "INSERT INTO login_throttle (key, failures, last_failure, blocked_until)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                    " failures = excluded.failures, last_failure = excluded.last_failure,"
                    " blocked_until = excluded.blocked_until",
                    (key, failures, now, now + delay),
                )
        return blocked

    async def succeeded(self, key: str) -> None:
        """Forget the failures of an account after a successful login."""
        await self._db.execute("DELETE FROM login_throttle WHERE key = ?", (key,))

    def _delay(self, failures: int) -> float:
        over = failures - self._settings.throttle_free_attempts
        if over < 0:
            return 0.0
        # 2 ** over grows past any cap quickly; clamp the exponent so it never overflows.
        delay = self._settings.throttle_base_delay_s * math.pow(2, min(over, 60))
        return min(delay, self._settings.throttle_max_delay_s)
