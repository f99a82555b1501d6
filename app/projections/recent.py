"""What a dashboard starts from when it (re)connects: per branch, the wall's grouped rows
(app/projections/wall.py) and the newest critical events themselves (the JSON feed's snapshot).

The events are kept sorted by (ts, id) and cut to ``RECENT_PER_BRANCH``, and the wall's rows merge
their events in any order, so neither depends on the order events were read in.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from operator import attrgetter
from typing import TypeGuard

import msgspec

from netmon.app.projections import wall
from netmon.app.projections.brief import FLOW_TYPE_SET, FeedEvent, FlowBrief
from netmon.storage.contract.events import (
    SEVERITY_RANK,
    AlertAcknowledged,
    AlertEscalated,
    AlertOpened,
    AlertResolved,
    AlertUpdated,
    AnyEvent,
    DetectionRaised,
    Event,
    FlowObserved,
    GapReported,
)

RECENT_PER_BRANCH = 50
_PUSHED_SEVERITIES = frozenset(
    severity for severity, rank in SEVERITY_RANK.items() if rank >= SEVERITY_RANK["high"]
)
_SEVERITY = attrgetter("severity")
LIVE_TYPES = (
    DetectionRaised,
    AlertOpened,
    AlertUpdated,
    AlertEscalated,
    AlertAcknowledged,
    AlertResolved,
    GapReported,
)


def is_critical(event: object) -> TypeGuard[AnyEvent]:
    """Whether the live feed pushes this event: detections, alerts, gaps, high/critical flows."""
    if type(event) is FlowBrief:  # most events: the feed decodes critical flows fully
        return False
    if isinstance(event, FlowObserved):
        return event.severity in _PUSHED_SEVERITIES
    return isinstance(event, LIVE_TYPES)


class RecentState(msgspec.Struct):
    """Per branch: its newest critical events (oldest first) and its wall."""

    branches: dict[str, list[AnyEvent]] = {}
    walls: dict[str, wall.BranchWall] = {}


def _order(event: Event) -> tuple[float, str]:
    return (event.ts, event.id)


def apply(state: RecentState, event: FeedEvent) -> None:
    """Fold a critical event into its branch's wall; keep it if among the newest of its branch."""
    if not is_critical(event):
        return
    branch_wall = state.walls.get(event.branch)
    if branch_wall is None:
        branch_wall = state.walls[event.branch] = wall.BranchWall()
    wall.apply(branch_wall, event)
    events = state.branches.setdefault(event.branch, [])
    key = _order(event)
    if len(events) >= RECENT_PER_BRANCH and key <= _order(events[0]):
        return
    index = bisect.bisect_left(events, key, key=_order)
    if index < len(events) and events[index].id == event.id:
        return  # the same event read twice (a replayed batch): keep one
    events.insert(index, event)
    if len(events) > RECENT_PER_BRANCH:
        del events[0]


def critical_among(events: list[FeedEvent]) -> list[AnyEvent]:
    """The events ``is_critical`` picks, in order; a batch of quiet flows is told in C."""
    if set(map(type, events)) <= FLOW_TYPE_SET and _PUSHED_SEVERITIES.isdisjoint(
        map(_SEVERITY, events)
    ):
        return []
    return [event for event in events if is_critical(event)]


def apply_flows(state: RecentState, flows: list[FeedEvent]) -> None:
    """Keep the critical ones among flows (briefs never are: the feed decodes those fully)."""
    for flow in critical_among(flows):
        apply(state, flow)


def view(state: RecentState, branches: Iterable[str]) -> list[AnyEvent]:
    """The recent critical events of the given branches, oldest first (the wall's rows:
    ``wall_rows.view``)."""
    merged: list[AnyEvent] = []
    for name in branches:
        merged.extend(state.branches.get(name, ()))
    merged.sort(key=_order)
    return merged
