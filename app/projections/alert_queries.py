"""What a reader asks the alert store for: filters, sort and cursor paging, and their SQL.

A page is found through an index in sort order and cut with the sort key of the last row it
showed (the cursor), never with OFFSET: the cost of page 100 is the cost of page 1. The cursor is
opaque to clients (URL-safe base64 of the sort name and key); a cursor made for another sort, or
one that does not decode, is refused as a ``QueryError``. ``parse_query`` turns query-string
parameters (the API's and the Alerts page's) into an ``AlertQuery`` with the same errors.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import msgspec

from netmon.storage.contract.events import SEVERITY_RANK, Severity

StateFilter = Literal["open", "acknowledged", "suppressed", "resolved", "unresolved", "any"]
Sort = Literal["severity", "last_seen", "count"]
STATE_FILTERS: tuple[str, ...] = get_args(StateFilter)
SORTS: tuple[str, ...] = get_args(Sort)
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_TEXT = 256  # a rule or entity longer than this names nothing
# Each sort: its columns, most significant first; alert_id last makes every key unique.
SORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "severity": ("severity_rank", "last_seen", "alert_id"),
    "last_seen": ("last_seen", "alert_id"),
    "count": ("count", "last_seen", "alert_id"),
}


# An unresolved alert is suppressed by a suppression of its entity (its row's column) or of its
# whole rule ("*", looked up: one suppression may name thousands of alerts, see alert_store.py).
SUPPRESSED = (
    "(suppressed_until > ? OR EXISTS (SELECT 1 FROM suppressions AS s WHERE s.entity = '*' "
    "AND s.branch = alerts.branch AND s.rule = alerts.rule AND s.until > ?))"
)


class QueryError(ValueError):
    """A filter, sort or cursor the store cannot use; the message names the parameter."""


class AlertQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which alerts, in which order, from where (``cursor``), how many."""

    state: StateFilter = "any"
    min_severity: Severity = "none"
    rule: str = ""
    entity: str = ""
    branches: tuple[str, ...] | None = None  # None: every branch
    since: float | None = None  # on last_seen, inclusive
    until: float | None = None  # on last_seen, exclusive
    sort: Sort = "severity"
    cursor: str = ""
    limit: int = DEFAULT_LIMIT


def encode_cursor(sort: str, key: Sequence[Any]) -> str:
    """The opaque cursor after a row whose sort key is ``key``."""
    raw = msgspec.msgpack.encode([sort, list(key)])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, ...]:
    """The sort key in ``cursor``; QueryError when it is not one of ours for this sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, key = msgspec.msgpack.decode(raw, type=tuple[str, list[float | int | str]])
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise QueryError("cursor: not a cursor this server made") from None
    columns = SORT_COLUMNS[sort]
    if made_for != sort or len(key) != len(columns) or not isinstance(key[-1], str):
        raise QueryError(f"cursor: made for another sort than {sort!r}")
    if any(isinstance(value, str) for value in key[:-1]):
        raise QueryError("cursor: not a cursor this server made")
    return tuple(key)


def row_key(sort: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The sort key of a row (``row`` maps column names to values)."""
    return tuple(row[column] for column in SORT_COLUMNS[sort])


def where_clause(query: AlertQuery, now: float) -> tuple[str, list[Any]]:
    """The SQL condition (with ``?`` parameters) selecting the query's alerts, cursor included.

    Unresolved states name ``state != 'resolved'`` literally, so SQLite can use the partial
    indexes on unresolved alerts (app/projections/alert_store.py).
    """
    terms: list[str] = []
    params: list[Any] = []
    if query.state in ("open", "acknowledged"):
        terms += ["state != 'resolved'", "state = ?", f"NOT {SUPPRESSED}"]
        params += [query.state, now, now]
    elif query.state == "suppressed":
        terms += ["state != 'resolved'", SUPPRESSED]
        params += [now, now]
    elif query.state == "unresolved":
        terms.append("state != 'resolved'")
    elif query.state == "resolved":
        terms.append("state = 'resolved'")
    if query.min_severity != "none":
        terms.append("severity_rank >= ?")
        params.append(SEVERITY_RANK[query.min_severity])
    for column in ("rule", "entity"):
        if value := getattr(query, column):
            terms.append(f"{column} = ?")
            params.append(value)
    if query.branches is not None:
        terms.append(f"branch IN ({','.join('?' * len(query.branches))})")
        params += query.branches
    if query.since is not None:
        terms.append("last_seen >= ?")
        params.append(query.since)
    if query.until is not None:
        terms.append("last_seen < ?")
        params.append(query.until)
    if query.cursor:
        columns = SORT_COLUMNS[query.sort]
        terms.append(f"({', '.join(columns)}) < ({', '.join('?' * len(columns))})")
        params += decode_cursor(query.cursor, query.sort)
    return (" AND ".join(terms) or "1"), params


def order_clause(sort: str) -> str:
    """ORDER BY of a sort: every column descending (newest, highest first)."""
    return ", ".join(f"{column} DESC" for column in SORT_COLUMNS[sort])


def parse_query(
    params: Mapping[str, str],
    branches: tuple[str, ...] | None,
    *,
    default_state: StateFilter = "any",
) -> AlertQuery:
    """An ``AlertQuery`` from query-string parameters; QueryError names a bad one.

    ``state``, ``severity`` (the minimum), ``rule``, ``entity``, ``since``/``until`` (UNIX
    seconds, on last_seen), ``sort``, ``cursor``, ``limit``; ``branches`` are the caller's,
    already cut down to what they may see. Empty values count as absent (a form's blank field).
    """
    state = _choice(params, "state", STATE_FILTERS, default_state)
    severity = _choice(params, "severity", tuple(SEVERITY_RANK), "none")
    sort = _choice(params, "sort", SORTS, "severity")
    query = AlertQuery(
        state=state,  # type: ignore[arg-type]
        min_severity=severity,  # type: ignore[arg-type]
        rule=_text(params, "rule"),
        entity=_text(params, "entity"),
        branches=branches,
        since=_time(params, "since"),
        until=_time(params, "until"),
        sort=sort,  # type: ignore[arg-type]
        cursor=_text(params, "cursor"),
        limit=_limit(params),
    )
    if query.cursor:
        decode_cursor(query.cursor, query.sort)  # refuse a bad cursor before any SQL
    return query


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name) or default
    if value not in allowed:
        raise QueryError(f"{name} must be one of {', '.join(allowed)}; got {value[:40]!r}")
    return value


def _text(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if len(value) > MAX_TEXT:
        raise QueryError(f"{name} is longer than {MAX_TEXT} characters")
    return value


def _time(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"{name} must be UNIX seconds, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise QueryError(f"{name} must be a finite number of UNIX seconds")
    return value


def _limit(params: Mapping[str, str]) -> int:
    raw = params.get("limit")
    if not raw:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"limit must be an integer, got {raw[:40]!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {value}")
    return value
