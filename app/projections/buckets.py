"""Time buckets shared by the projections: event time only, so rebuilds are deterministic."""

from __future__ import annotations

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
