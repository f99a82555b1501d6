"""What every behaviour detector shares: a capped table of trackers, and the findings of those
that changed in a batch (one per entity, however many flows touched it)."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from netmon.app.analysis.behaviour.bounded import LruTable
from netmon.app.analysis.behaviour.findings import Finding, ThresholdsOf
from netmon.app.detection_settings import Thresholds


class Tracker(Protocol):
    """A detector's state about one entity: its branch and the flow ids not reported yet."""

    branch: str
    new_ids: list[str]


T = TypeVar("T", bound=Tracker)


class TrackedDetector(Generic[T]):
    """A table of trackers (least recently seen dropped past ``max_tracked``) and the keys
    whose tracker changed since the last ``findings`` call."""

    rules: tuple[str, ...] = ()

    def __init__(self, max_tracked: int, entries: dict[str, T]) -> None:
        self.table: LruTable[str, T] = LruTable(max_tracked, entries)
        self.dirty: set[str] = set()

    def findings(self, th_of: ThresholdsOf) -> list[Finding]:
        """One finding per tracker that changed (and fired) since the last call."""
        out: list[Finding] = []
        for key in self.dirty:
            tracker = self.table.get(key)
            if tracker is None:
                continue  # dropped from the table meanwhile
            finding = self.finding(key, tracker, th_of(tracker.branch))
            if finding is not None:
                out.append(finding)
                tracker.new_ids = []
        self.dirty.clear()
        return out

    def finding(self, key: str, tracker: T, th: Thresholds) -> Finding | None:
        """The finding about one changed tracker (None: nothing to report)."""
        raise NotImplementedError
