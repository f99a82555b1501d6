"""The audit trail: who did what, when and from where, hash-chained in the SQLite database.

Each record carries the SHA-256 of the previous record (``prev_hash``) and its own hash over
its sequence number, its fields and ``prev_hash``; the first record chains to ``GENESIS``. So
``verify()`` finds an edited record (its hash no longer matches), a deleted one (a gap in the
sequence, or a ``prev_hash`` that points at nothing) and a deleted last record (SQLite's
AUTOINCREMENT counter remembers the highest number ever handed out).

The chain proves the trail was not changed by anyone who cannot also recompute every later
hash; it is not a signature (see docs/security.md for what that means operationally).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from netmon.storage.database import Database

GENESIS = "0" * 64
VERIFY_PAGE = 5000
_COLUMNS = "seq, ts, actor, action, target, source, outcome, detail, prev_hash, hash"


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One audited action. ``actor`` is a username (or "system"/"anonymous"), ``source`` an IP."""

    seq: int
    ts: float
    actor: str
    action: str  # dotted: "auth.login", "user.created", "alert.acknowledged", "export.download"
    target: str = ""
    source: str = ""
    outcome: str = "ok"  # "ok", "failed", "denied", ...
    detail: dict[str, Any] = {}
    prev_hash: str
    hash: str


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters for listing the trail; every field is optional."""

    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("auth.")
    target: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None
    after_seq: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of checking the chain; ``first_bad`` is the first record found wrong."""

    ok: bool
    checked: int
    first_bad: int | None = None
    reason: str = ""


def record_hash(prev_hash: str, seq: int, fields: tuple[Any, ...]) -> str:
    """The hash of one record: SHA-256 over a canonical JSON array of its content."""
    canonical = msgspec.json.encode([prev_hash, seq, *fields], order="sorted")
    return hashlib.sha256(canonical).hexdigest()


def _record(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        seq=row[0],
        ts=row[1],
        actor=row[2],
        action=row[3],
        target=row[4],
        source=row[5],
        outcome=row[6],
        detail=msgspec.json.decode(row[7]),
        prev_hash=row[8],
        hash=row[9],
    )


class AuditTrail:
    """Appends to and reads the audit trail; one instance per process (the server's is
    ``ServerState.auth.audit``)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record(
        self,
        action: str,
        *,
        actor: str,
        target: str = "",
        source: str = "",
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record to the chain and return it."""
        detail = detail or {}
        detail_json = msgspec.json.encode(detail, order="sorted").decode()
        ts = time.time()
        async with self._db.write() as connection:
            # Inside BEGIN IMMEDIATE: no other replica can append between this read and the insert.
            last = await (
                await connection.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            ).fetchone()
            counter = await (
                await connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")
            ).fetchone()
            # After a deleted last record the counter is ahead: the gap stays visible to verify.
            seq = max(last[0] if last else 0, counter[0] if counter else 0) + 1
            prev_hash = last[1] if last else GENESIS
            fields = (ts, actor, action, target, source, outcome, detail_json)
            digest = record_hash(prev_hash, seq, fields)
            await connection.execute(
                f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, *fields, prev_hash, digest),
            )
        return AuditRecord(
            seq=seq,
            ts=ts,
            actor=actor,
            action=action,
            target=target,
            source=source,
            outcome=outcome,
            detail=detail,
            prev_hash=prev_hash,
            hash=digest,
        )

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching the filters, oldest first, at most ``query.limit``."""
        where: list[str] = ["seq > ?"]
        params: list[Any] = [query.after_seq]
        for column in ("actor", "target", "outcome"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.action is not None:
            if query.action.endswith("."):
                # substr() rather than LIKE: "%" and "_" in a filter must match literally.
                where.append("substr(action, 1, ?) = ?")
                params.extend([len(query.action), query.action])
            else:
                where.append("action = ?")
                params.append(query.action)
        if query.since is not None:
            where.append("ts >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("ts < ?")
            params.append(query.until)
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            (*params, query.limit),
        )
        return [_record(row) for row in rows]

    async def count(self) -> int:
        """How many records the trail holds."""
        row = await self._db.fetch_one("SELECT COUNT(*) FROM audit")
        return int(row[0]) if row else 0

    async def verify(
        self, progress: Callable[[int], None] | None = None, page: int = VERIFY_PAGE
    ) -> VerifyResult:
        """Walk the whole chain; report the first record that is missing or altered.

        Reads the trail ``page`` records at a time; ``progress(n)`` is called after each page.
        """
        prev_hash, expected_seq, checked = GENESIS, 1, 0
        while True:
            rows = await self._db.fetch_all(
                f"SELECT {_COLUMNS} FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?",
                (expected_seq, page),
            )
            for row in rows:
                problem = _check_row(row, expected_seq, prev_hash)
                if problem is not None:
                    first_bad, reason = problem
                    return VerifyResult(
                        ok=False, checked=checked, first_bad=first_bad, reason=reason
                    )
                prev_hash, expected_seq, checked = row[9], row[0] + 1, checked + 1
            if progress is not None and rows:
                progress(len(rows))
            if len(rows) < page:
                break
        counter = await self._db.fetch_one("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")
        if counter is not None and counter[0] >= expected_seq:
            return VerifyResult(
                ok=False,
                checked=checked,
                first_bad=expected_seq,
                reason=f"record {expected_seq} is missing (the trail ends early)",
            )
        return VerifyResult(ok=True, checked=checked)


def _check_row(row: tuple[Any, ...], expected_seq: int, prev_hash: str) -> tuple[int, str] | None:
    """(first bad record, reason) when ``row`` is not the expected next link of the chain."""
    seq, stored_prev, stored_hash = row[0], row[8], row[9]
    if seq != expected_seq:
        return expected_seq, f"record {expected_seq} is missing (next present is {seq})"
    if stored_prev != prev_hash:
        return seq, f"record {seq} does not chain to record {seq - 1}"
    if record_hash(stored_prev, seq, tuple(row[1:8])) != stored_hash:
        return seq, f"record {seq} was altered (hash mismatch)"
    return None
