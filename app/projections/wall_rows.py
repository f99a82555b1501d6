"""The live wall's rows as a dashboard shows them: texts for people, numbers for scripts, read
from the wall's state (app/projections/wall.py) for a snapshot or for the rows a batch changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

import msgspec

from netmon.app.projections.wall import (
    ACTIVITY_TYPES,
    ALERT_TYPES,
    TARGETS_KEPT,
    Activity,
    AlertRow,
    BranchWall,
    activity_key,
    activity_name,
)
from netmon.storage.contract.events import AnyEvent

WALL_ROWS = 200  # rows a snapshot sends (the page trims to its own ``rows``)


class WallRow(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the wall, ready to show: texts for people, numbers for scripts."""

    id: str  # stable element id of the row ("w-" + 16 hex digits)
    branch: str
    kind: Literal["activity", "alert"]
    entity: str  # who: the source address, an agent, or what an alert is about
    severity: str
    first: float
    last: float
    what: str  # "542 flows to 500 ports of 10.20.0.9"
    why: str  # "suspicious IP (threat list demo)", or an alert's rule and tags
    domains: tuple[str, ...] = ()
    version: int = 0  # events folded into it: a row and its version render the same text
    newest: str = ""  # id of the newest event folded (activity rows)
    flows: int = 0
    targets: int = 0  # distinct destinations (TARGETS_KEPT + 1 means "more than TARGETS_KEPT")
    ports: int = 0  # distinct destination ports
    alert_id: str = ""
    state: str = ""  # alerts: open, acknowledged, resolved
    by: str = ""  # who acknowledged or resolved it


def row_id(branch: str, name: str) -> str:
    """A stable element id for a row (its parts may hold any text, so they are hashed)."""
    digest = hashlib.blake2b(f"{branch}|{name}".encode(), digest_size=8).hexdigest()
    return f"w-{digest}"


def activity_row(branch: str, activity: Activity) -> WallRow:
    """An activity row as the wall shows it."""
    bits = int.from_bytes(activity.ports, "little")
    flows = activity.flows + max(0, activity.raised - activity.carried)
    return WallRow(
        id=row_id(branch, activity_name(activity.period, activity.entity)),
        branch=branch,
        kind="activity",
        entity=activity.entity,
        severity=activity.severity,
        first=activity.first,
        last=activity.last,
        what=_activity_what(activity, flows, bits),
        why=", ".join(activity.labels),
        domains=tuple(activity.domains),
        version=activity.events,
        newest=activity.newest,
        flows=flows,
        targets=len(activity.targets),
        ports=bits.bit_count(),
    )


def _activity_what(activity: Activity, flows: int, bits: int) -> str:
    """ "542 flows to 500 ports of 10.20.0.9", "3 flows to port 22 on 3 hosts", ..."""
    parts = []
    if flows:
        words = [_plural(flows, "flow")]
        ports = bits.bit_count()
        if ports:
            words.append(
                f"to port {bits.bit_length() - 1}" if ports == 1 else f"to {ports:,} ports"
            )
        targets = activity.targets
        if len(targets) == 1:
            words.append(f"of {targets[0]}" if ports else f"to {targets[0]}")
        elif len(targets) > TARGETS_KEPT:
            words.append(f"on {TARGETS_KEPT}+ hosts")
        else:
            words.append(f"on {len(targets)} hosts")
        parts.append(" ".join(words))
    if activity.dropped:
        parts.append(f"{_plural(activity.dropped, 'event')} dropped by the agent")
    return "; ".join(parts)


def alert_row(branch: str, alert: AlertRow) -> WallRow:
    """An alert row as the wall shows it."""
    evidence = alert.evidence
    what = alert.title
    if evidence.count > 1:  # one event: the title says it all
        spread = []
        if evidence.distinct_ports:
            spread.append(_plural(evidence.distinct_ports, "port"))
        if evidence.distinct_targets:
            spread.append(_plural(evidence.distinct_targets, "host"))
        counts = ", ".join([_plural(evidence.count, "event"), *spread])
        what = f"{what} ({counts})" if what else counts
    why = " · ".join([f"alert {alert.rule}", *alert.tags])
    return WallRow(
        id=row_id(branch, f"alert|{alert.alert_id}"),
        branch=branch,
        kind="alert",
        entity=alert.entity,
        severity=alert.severity,
        first=alert.first,
        last=alert.last,
        what=what,
        why=why,
        version=alert.events,
        flows=evidence.count,
        targets=evidence.distinct_targets,
        ports=evidence.distinct_ports,
        alert_id=alert.alert_id,
        state=alert.state,
        by=alert.by,
    )


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def rows_of(walls: dict[str, BranchWall], branches: Iterable[str]) -> list[WallRow]:
    """Every row of the given branches, least recently active first (an alert shows once it is
    opened)."""
    rows: list[WallRow] = []
    for branch in branches:
        wall = walls.get(branch)
        if wall is None:
            continue
        rows.extend(activity_row(branch, activity) for activity in wall.activity.values())
        rows.extend(alert_row(branch, alert) for alert in wall.alerts.values() if alert.rule)
    rows.sort(key=_row_order)
    return rows


def _row_order(row: WallRow) -> tuple[float, str]:
    """Rows stand by their last activity: a row that changes moves to the top of the wall."""
    return (row.last, row.id)


def view(
    walls: dict[str, BranchWall], branches: Iterable[str], limit: int = WALL_ROWS
) -> list[WallRow]:
    """The rows a (re)connecting wall starts from, most recently active first, at most ``limit``:
    the newest half whatever their severity, then critical rows before others (the page trims
    the same way, static/netmon.js)."""
    rows = rows_of(walls, branches)[::-1]
    return rows[: limit // 2] + keep_critical(rows[limit // 2 :], limit - limit // 2)


def keep_critical(rows: list[WallRow], room: int) -> list[WallRow]:
    """``room`` of ``rows`` (most recent first), dropping the oldest rows that are not critical
    first: so a storm of lesser rows never pushes a critical one off the wall."""
    excess = len(rows) - room
    if excess <= 0:
        return rows
    kept: list[WallRow] = []
    for row in reversed(rows):  # the oldest first
        if excess > 0 and row.severity != "critical":
            excess -= 1
        else:
            kept.append(row)
    kept.reverse()
    return kept[: len(kept) - excess] if excess > 0 else kept


def touched(walls: dict[str, BranchWall], events: list[AnyEvent]) -> list[WallRow]:
    """The rows these (already folded) events changed, each once, least recently active first:
    what the hub pushes after a batch (once per row, however many events it took)."""
    names: dict[tuple[str, str], None] = {}  # ordered, each once
    for event in events:
        if isinstance(event, ACTIVITY_TYPES):
            names[(event.branch, activity_name(*activity_key(event)))] = None
        elif isinstance(event, ALERT_TYPES):
            names[(event.branch, f"alert|{event.alert_id}")] = None
    rows = []
    for branch, name in names:
        wall = walls.get(branch)
        if wall is None:
            continue
        if name.startswith("alert|"):
            alert = wall.alerts.get(name[6:])
            if alert is not None and alert.rule:
                rows.append(alert_row(branch, alert))
        else:
            activity = wall.activity.get(name)
            if activity is not None:
                rows.append(activity_row(branch, activity))
    rows.sort(key=_row_order)
    return rows
