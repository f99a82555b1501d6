"""Bounded state for detectors: tables that forget the least recently seen entity past a cap.

A detector keeps one tracker per entity (a source, a pair, a victim port). With a million
distinct sources in a day the tables would grow without end, so each is capped: touching an
entry moves it to the back, and inserting past the cap drops the front (least recently seen).
Python dicts keep insertion order, so pop-and-reinsert is the whole LRU; the table stays a plain
dict that msgspec can save with the worker's checkpoint.

Evicting one key at a time from the front of a dict is quadratic in CPython (each ``next(iter())``
walks over the slots freed before it until the dict is next resized), so the oldest tenth goes
at once: the table holds between 90% and 100% of its cap.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruTable(Generic[K, V]):
    """A dict capped at ``cap`` entries, evicting the least recently touched."""

    def __init__(self, cap: int, entries: dict[K, V] | None = None) -> None:
        self.cap = max(1, cap)
        self.entries: dict[K, V] = entries if entries is not None else {}
        self.evicted = 0

    def touch(self, key: K, create: Callable[[], V]) -> V:
        """The entry for ``key`` (made with ``create`` when absent), now the most recent."""
        entries = self.entries
        value = entries.pop(key, None)
        if value is None:
            value = create()
            if len(entries) >= self.cap:
                self.evicted += evict_oldest(entries, self.cap)
        entries[key] = value
        return value

    def get(self, key: K) -> V | None:
        """The entry, without touching it."""
        return self.entries.get(key)

    def drop(self, key: K) -> None:
        """Forget an entry (an episode ended)."""
        self.entries.pop(key, None)

    def __len__(self) -> int:
        return len(self.entries)


def evict_oldest(entries: dict[Any, Any], cap: int) -> int:
    """Drop the oldest tenth of ``entries`` (at least one) once it holds ``cap``; how many."""
    if len(entries) < cap:
        return 0
    oldest = list(itertools.islice(entries, max(1, cap // 10)))
    for key in oldest:
        del entries[key]
    return len(oldest)


def add_capped(values: set[K], value: K, cap: int) -> bool:
    """Add ``value`` to ``values`` unless the set is full; True when it was new and added."""
    if value in values or len(values) >= cap:
        return False
    values.add(value)
    return True


def sample(values: set[K] | list[K], size: int) -> tuple[K, ...]:
    """A stable, bounded sample for evidence (sorted, so replays write the same values)."""
    return tuple(sorted(values)[:size])  # type: ignore[type-var]
