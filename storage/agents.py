"""The agent registry: who may send events, for which branch, with which keys.

Each agent has its own Fernet key (never one key shared by all agents). Keys are stored
encrypted with the server secret (``server.secret_key``, a Fernet key or a comma-separated list
of them, newest first, so the secret itself can be rotated). Rotating an agent's key puts a new
key in front of the old ones: ``MultiFernet`` encrypts with the first and accepts all, so
batches spooled or archived under the old key are still accepted until it is retired.

The table lives in the shared SQLite file ``DATA_DIR/netmon.sqlite3``; this module creates it
if needed (``CREATE TABLE IF NOT EXISTS``) so it does not depend on the order of migrations.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from netmon.storage.names import validate_name

DB_NAME = "netmon.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    branch TEXT NOT NULL,
    keys_encrypted BLOB NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    rotated REAL NOT NULL
)
"""


class AgentRegistryError(Exception):
    """An operation on the registry that cannot be done; the message says why."""


class SecretKeyError(AgentRegistryError):
    """``server.secret_key`` is missing or is not a Fernet key."""


class AgentRecord(msgspec.Struct, frozen=True):
    """One enrolled agent, without its keys."""

    agent_id: str
    branch: str
    enabled: bool
    created: float
    rotated: float
    key_count: int


def server_fernet(secret_key: str) -> MultiFernet:
    """The server secret(s) as a MultiFernet; raise SecretKeyError if missing or invalid."""
    keys = [part.strip() for part in secret_key.split(",") if part.strip()]
    if not keys:
        raise SecretKeyError(
            "server.secret_key (NETMON_SERVER__SECRET_KEY) is not set: generate one with python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError:
        raise SecretKeyError(
            "server.secret_key is not a valid Fernet key (32 url-safe base64-encoded bytes)"
        ) from None


class AgentRegistry:
    """Agents and their encrypted keys in ``DATA_DIR/netmon.sqlite3`` (short-lived connections,
    so several processes can share the file)."""

    def __init__(self, data_dir: Path, secret_key: str, *, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self._path = Path(data_dir) / DB_NAME
        self._secret = server_fernet(secret_key)
        self._clock = clock
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._path, timeout=10.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def add(self, agent_id: str, branch: str) -> str:
        """Enrol an agent; return its new key (shown once, to put in the agent's config)."""
        validate_name("agent", agent_id)
        validate_name("branch", branch)
        key = Fernet.generate_key().decode()
        now = self._clock()
        with self._connect() as db:
            try:
                db.execute(
                    "INSERT INTO agents (agent_id, branch, keys_encrypted, enabled, created,"
                    " rotated) VALUES (?, ?, ?, 1, ?, ?)",
                    (agent_id, branch, self._seal([key]), now, now),
                )
            except sqlite3.IntegrityError:
                raise AgentRegistryError(f"agent {agent_id!r} already exists") from None
        return key

    def rotate(self, agent_id: str, *, retire_old: bool = False) -> str:
        """Give the agent a new key; the old keys stay valid unless ``retire_old``."""
        keys = self._keys(agent_id)
        new_key = Fernet.generate_key().decode()
        kept = [] if retire_old else keys
        self._update(
            agent_id, "keys_encrypted = ?, rotated = ?", self._seal([new_key, *kept]), self._clock()
        )
        return new_key

    def retire_old_keys(self, agent_id: str) -> None:
        """End a rotation: keep only the newest key."""
        self._update(agent_id, "keys_encrypted = ?", self._seal(self._keys(agent_id)[:1]))

    def set_enabled(self, agent_id: str, enabled: bool) -> None:
        """Enable or disable an agent (a disabled agent's handshakes are refused)."""
        self._update(agent_id, "enabled = ?", int(enabled))

    def get(self, agent_id: str) -> AgentRecord | None:
        """The agent's record, or None if it is not enrolled."""
        with self._connect() as db:
            row = db.execute(
                "SELECT agent_id, branch, enabled, created, rotated, keys_encrypted"
                " FROM agents WHERE agent_id = ?",
                (agent_id,),
            ).fetchone()
        return None if row is None else self._record(row)

    def agents(self) -> list[AgentRecord]:
        """Every enrolled agent, by id."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT agent_id, branch, enabled, created, rotated, keys_encrypted"
                " FROM agents ORDER BY agent_id"
            ).fetchall()
        return [self._record(row) for row in rows]

    def fernet(self, agent_id: str) -> MultiFernet:
        """The agent's keys (newest first) as one MultiFernet."""
        return MultiFernet([Fernet(key) for key in self._keys(agent_id)])

    def _record(self, row: tuple) -> AgentRecord:  # type: ignore[type-arg]
        agent_id, branch, enabled, created, rotated, sealed = row
        return AgentRecord(
            agent_id, branch, bool(enabled), created, rotated, len(self._open(sealed))
        )

    def _keys(self, agent_id: str) -> list[str]:
        with self._connect() as db:
            row = db.execute(
                "SELECT keys_encrypted FROM agents WHERE agent_id = ?", (agent_id,)
            ).fetchone()
        if row is None:
            raise AgentRegistryError(f"no agent {agent_id!r}")
        return self._open(row[0])

    def _update(self, agent_id: str, assignments: str, *values: object) -> None:
        with self._connect() as db:
            cursor = db.execute(
                f"UPDATE agents SET {assignments} WHERE agent_id = ?", (*values, agent_id)
            )
        if cursor.rowcount == 0:
            raise AgentRegistryError(f"no agent {agent_id!r}")

    def _seal(self, keys: list[str]) -> bytes:
        return self._secret.encrypt(msgspec.json.encode(keys))

    def _open(self, sealed: bytes) -> list[str]:
        try:
            return msgspec.json.decode(self._secret.decrypt(sealed), type=list[str])
        except InvalidToken:
            raise SecretKeyError(
                "agent keys cannot be decrypted with server.secret_key: was the secret changed? "
                "List the old secret after the new one (comma-separated) to rotate it"
            ) from None
