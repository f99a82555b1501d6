"""Password hashing (argon2id) and the password policy.

Hashing runs in a worker thread: argon2id is deliberately slow and memory-hungry, and the event
loop must keep serving other requests meanwhile.
"""

from __future__ import annotations

import functools
import secrets
import string
from importlib import resources

import anyio.to_thread
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from netmon.app.settings import AuthSettings

MAX_PASSWORD_LENGTH = 16_384  # long passphrases are fine; argon2 pre-hashes them
_DECORATION = string.digits + string.punctuation + " "


class PasswordPolicyError(ValueError):
    """The password is not acceptable; the message says why (never repeats the password)."""


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common/breached passwords, lower case."""
    text = resources.files("netmon.app.auth").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def check_policy(password: str, username: str, min_length: int) -> None:
    """Raise PasswordPolicyError unless the password is long, uncommon and not the username."""
    if len(password) < min_length:
        raise PasswordPolicyError(f"password too short: use at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    lowered = password.lower()
    # "Password2024!" is as guessable as "password": strip the usual decorations too.
    if lowered in common_passwords() or lowered.rstrip(_DECORATION) in common_passwords():
        raise PasswordPolicyError("password is in the list of common or breached passwords")
    if len(set(password)) < 4:
        raise PasswordPolicyError("password repeats too few distinct characters")
    if len(username) >= 4 and username.lower() in lowered:
        raise PasswordPolicyError("password must not contain the username")


def generate_password() -> str:
    """A random password that satisfies the policy (about 143 bits)."""
    return secrets.token_urlsafe(18)


class Passwords:
    """Hashes and verifies passwords with argon2id at the configured cost."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        # Verifying against this when the user does not exist keeps the timing the same.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    def check_policy(self, password: str, username: str) -> None:
        """Raise PasswordPolicyError for a password the policy refuses."""
        check_policy(password, username, self._settings.password_min_length)

    async def hash(self, password: str) -> str:
        """The argon2id hash of a password."""
        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; a None hash (no such user) costs the same and fails."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return False
        target = stored_hash if stored_hash is not None else self._dummy_hash
        try:
            await anyio.to_thread.run_sync(self._hasher.verify, target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether the hash was made with other cost parameters than the configured ones."""
        return self._hasher.check_needs_rehash(stored_hash)
