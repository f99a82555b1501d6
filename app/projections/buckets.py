"""Time buckets shared by the projections: event time only, so rebuilds are deterministic."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

_TS = attrgetter("ts")

MINUTE = 60
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY


def bucket_start(ts: float, width: int) -> int:
    """The start (Unix seconds) of the ``width``-second bucket holding ``ts``."""
    return int(ts // width) * width


def prune_before(buckets: dict[int, object], cutoff: int) -> None:
    """Drop every bucket starting before ``cutoff`` (keys are bucket starts)."""
    for start in [start for start in buckets if start < cutoff]:
        del buckets[start]


def span(events: Sequence[Any]) -> tuple[float, float]:
    """The oldest and newest ts of a non-empty batch (taken in C)."""
    stamps = list(map(_TS, events))
    return min(stamps), max(stamps)
