"""A timing wheel of flow deadlines: one-second buckets, checked lazily.

Each flow costs one list slot per scheduled deadline (a heap entry would cost a tuple, a float
and an int: ~120 bytes, 12% of a flow with a million of them). Entries are never removed
early: a popped flow is re-checked by the caller (it may be done, or its real deadline may have
moved on), which keeps packets away from the wheel entirely.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class DeadlineWheel(Generic[T]):
    """Items bucketed by the second after their deadline; pops the due ones, oldest first."""

    __slots__ = ("_buckets", "_cursor")

    def __init__(self) -> None:
        self._buckets: dict[int, list[T]] = {}
        self._cursor = -1  # the lowest bucket that may hold items; -1 when empty

    def schedule(self, item: T, deadline: float) -> None:
        """Make ``item`` due once time passes ``deadline``."""
        second = int(deadline) + 1
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [item]
        else:
            bucket.append(item)
        if self._cursor < 0 or second < self._cursor:
            self._cursor = second

    def pop_due(self, now: float) -> T | None:
        """An item whose bucket is due at ``now`` (its deadline is < now), or None."""
        bucket = self._first_bucket()
        if bucket is None or self._cursor > now:
            return None
        item = bucket.pop()
        if not bucket:
            del self._buckets[self._cursor]
        return item

    def pop_earliest(self) -> T | None:
        """The item of the earliest bucket whatever the time (eviction), or None."""
        bucket = self._first_bucket()
        if bucket is None:
            return None
        item = bucket.pop()
        if not bucket:
            del self._buckets[self._cursor]
        return item

    def _first_bucket(self) -> list[T] | None:
        buckets = self._buckets
        if not buckets:
            self._cursor = -1
            return None
        bucket = buckets.get(self._cursor)
        if bucket is None:
            # Jump over empty seconds at once (packet time can leap, e.g. between files).
            self._cursor = min(buckets)
            bucket = buckets[self._cursor]
        return bucket

    def clear(self) -> None:
        """Forget every entry."""
        self._buckets.clear()
        self._cursor = -1

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())
