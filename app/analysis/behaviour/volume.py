"""Unusual outbound volume: a source sending far more in an hour than it usually does.

Each source's bytes sent (as the initiator of its flows) are summed per clock hour; closed hours
feed an exponentially weighted mean (hours without traffic count as zero), and once the source
has ``volume_baseline_hours`` of history, an hour above both ``volume_factor`` times that mean
and ``volume_min_bytes`` fires. A host without a baseline yet (new, or a one-off backup on its
first day) never fires: the rule compares a host with itself.
"""

from __future__ import annotations

import msgspec

from netmon.app.analysis.behaviour.findings import MAX_SAMPLE_IDS, Finding
from netmon.app.analysis.behaviour.tracked import TrackedDetector
from netmon.app.detection_settings import Thresholds
from netmon.storage.contract.events import AlertEvidence, FlowObserved

HOUR = 3600
EWMA_ALPHA = 1 / 24  # a day of hours dominates the mean
MAX_GAP_HOURS = 24 * 7  # quiet hours folded in one step are capped (a week of zeros)


class VolumeTracker(msgspec.Struct, kw_only=True):
    """One source's current hour and its hourly mean so far."""

    branch: str
    hour: int
    sent: int = 0
    flows: int = 0
    mean: float = 0.0
    hours: int = 0  # closed hours folded into the mean
    fired_hour: int = -1
    new_ids: list[str] = []


class VolumeState(msgspec.Struct):
    """Every tracked source."""

    sources: dict[str, VolumeTracker] = {}


class VolumeDetector(TrackedDetector[VolumeTracker]):
    """Sums bytes sent per source and hour against the source's own mean."""

    rules: tuple[str, ...] = ("outbound_volume",)

    def __init__(self, max_tracked: int, state: VolumeState | None = None) -> None:
        self.state = state or VolumeState()
        super().__init__(max_tracked, self.state.sources)

    def observe(self, flow: FlowObserved, th: Thresholds) -> None:
        """Add the flow's bytes sent by its initiator to the initiator's hour."""
        hour = int(flow.first_seen // HOUR)
        tracker = self.table.touch(
            flow.src_ip, lambda: VolumeTracker(branch=flow.branch, hour=hour)
        )
        if hour > tracker.hour:
            self._close_hours(tracker, hour)
        tracker.sent += flow.src2dst_bytes
        tracker.flows += 1
        if len(tracker.new_ids) < MAX_SAMPLE_IDS and flow.src2dst_bytes > th.volume_min_bytes / 100:
            tracker.new_ids.append(flow.id)
        if tracker.hours < th.volume_baseline_hours or tracker.sent < th.volume_min_bytes:
            return
        if tracker.sent > th.volume_factor * tracker.mean:
            tracker.fired_hour = tracker.hour
            self.dirty.add(flow.src_ip)

    @staticmethod
    def _close_hours(tracker: VolumeTracker, hour: int) -> None:
        """Fold the finished hour, then the silent ones after it (as zeros), into the mean."""
        gap = min(hour - tracker.hour, MAX_GAP_HOURS)
        mean = tracker.mean if tracker.hours else float(tracker.sent)
        mean += EWMA_ALPHA * (tracker.sent - mean) if tracker.hours else 0.0
        mean *= (1 - EWMA_ALPHA) ** (gap - 1)
        tracker.mean, tracker.hours = mean, tracker.hours + gap
        tracker.hour, tracker.sent, tracker.flows, tracker.new_ids = hour, 0, 0, []

    def finding(self, source: str, t: VolumeTracker, th: Thresholds) -> Finding | None:
        """The finding about a source over its baseline in the current hour."""
        if t.fired_hour != t.hour:
            return None
        ratio = t.sent / max(t.mean, 1.0)
        return Finding(
            rule="outbound_volume",
            entity=source,
            branch=t.branch,
            ts=t.hour * HOUR,
            severity="medium",
            title=(
                f"{source} sent {t.sent / 1e6:.0f} MB in one hour, {ratio:.0f}x its"
                f" usual {t.mean / 1e6:.1f} MB/h"
            ),
            evidence=AlertEvidence(
                count=t.flows,
                first_seen=t.hour * HOUR,
                last_seen=t.hour * HOUR + HOUR,
                bytes=t.sent,
            ),
            evidence_ids=tuple(t.new_ids),
            threshold=max(t.flows, 1),  # escalates if the hour's flows grow tenfold
        )
