"""7-day summary per branch: flows, bytes, packets and critical events by kind, per minute for
the last 24 hours and per hour for the last 7 days.

Windows are relative to the newest event time seen (the watermark), never the wall clock, so the
state is a function of the events alone. A bucket older than its window is dropped once the
watermark has moved past it, and an event that arrives for an already-dropped bucket is ignored:
either way the final state holds exactly the buckets within the window of the final watermark,
whatever order the writers' events were read in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any, cast

import msgspec

from netmon.app.projections.brief import FLOW_TYPES, FeedEvent, FlowBrief
from netmon.app.projections.buckets import DAY, HOUR, MINUTE, WEEK, bucket_start, prune_before, span
from netmon.storage.contract.events import AlertOpened, DetectionRaised, FlowObserved, GapReported


class Counts(msgspec.Struct):
    """Totals of one time bucket."""

    flows: int = 0
    bytes: int = 0
    packets: int = 0
    critical: dict[str, int] = {}  # critical events by kind


class BranchSummary(msgspec.Struct):
    """One branch's buckets, keyed by bucket start (Unix seconds)."""

    minutes: dict[int, Counts] = {}
    hours: dict[int, Counts] = {}


class SummaryState(msgspec.Struct):
    """The summary projection's state."""

    watermark: float = 0.0  # newest event ts seen
    branches: dict[str, BranchSummary] = {}


def critical_kind(event: FeedEvent) -> str | None:
    """The kind a critical event is counted under, or None when it is not one.

    A critical flow is counted once, by its DetectionRaised (the agent raises one on the first
    matching packet); the later FlowObserved feeds the top-detections projection instead.
    """
    if isinstance(event, DetectionRaised):
        return event.detection.kind
    if isinstance(event, AlertOpened):
        return "alert"
    if isinstance(event, GapReported):
        return "gap"
    return None


def apply(state: SummaryState, event: FeedEvent) -> None:
    """Fold one event into the summary (batches of flows take ``apply_flows``)."""
    ts = event.ts
    _advance(state, ts)
    if type(event) in FLOW_TYPES:  # FlowObserved, or its brief from the live feed
        kind = None
    else:
        kind = critical_kind(event)
        if kind is None:
            return
    branch = state.branches.get(event.branch)
    if branch is None:
        branch = state.branches[event.branch] = BranchSummary()
    minute = bucket_start(ts, MINUTE)
    if minute >= _minute_cutoff(state.watermark):
        _add(branch.minutes, minute, event, kind)
    hour = bucket_start(ts, HOUR)
    if hour >= _hour_cutoff(state.watermark):
        _add(branch.hours, hour, event, kind)


_UP_BYTES, _DOWN_BYTES = attrgetter("src2dst_bytes"), attrgetter("dst2src_bytes")
_UP_PACKETS, _DOWN_PACKETS = attrgetter("src2dst_packets"), attrgetter("dst2src_packets")


def apply_flows(state: SummaryState, flows: Sequence[FlowObserved | FlowBrief]) -> None:
    """Fold flows of one branch, all in [2000, 2100), as ``apply`` would one by one.

    The usual batch (one agent's, or a run of one segment) ends within one minute: then every
    flow lands in the same two buckets, so the sums are taken in C (``map``, ``sum``). The
    watermark moves once, to the newest ts; a prune it triggers uses the same minute (and hour)
    cutoff the first moving flow would have used, so the state equals the one-by-one fold.
    """
    if not flows:
        return
    low, high = span(flows)
    if low // MINUTE != high // MINUTE:
        for flow in flows:
            apply(state, flow)
        return
    _advance(state, high)
    branch_name = flows[0].branch
    branch = state.branches.get(branch_name)
    if branch is None:
        branch = state.branches[branch_name] = BranchSummary()
    totals = (
        len(flows),
        sum(map(_UP_BYTES, flows)) + sum(map(_DOWN_BYTES, flows)),
        sum(map(_UP_PACKETS, flows)) + sum(map(_DOWN_PACKETS, flows)),
    )
    minute = bucket_start(low, MINUTE)
    if minute >= _minute_cutoff(state.watermark):
        _add_totals(branch.minutes, minute, totals)
    hour = bucket_start(low, HOUR)
    if hour >= _hour_cutoff(state.watermark):
        _add_totals(branch.hours, hour, totals)


def _advance(state: SummaryState, ts: float) -> None:
    """Move the watermark to ``ts`` if newer; entering a new minute drops what left the
    windows. Within one minute every cutoff is the same, so advancing once to a batch's
    newest ts equals advancing flow by flow."""
    if ts > state.watermark:
        old_minute = state.watermark // MINUTE
        state.watermark = ts
        if ts // MINUTE != old_minute:
            _prune(state)


def _add_totals(buckets: dict[int, Counts], start: int, totals: tuple[int, int, int]) -> None:
    counts = buckets.get(start)
    if counts is None:
        counts = buckets[start] = Counts()
    counts.flows += totals[0]
    counts.bytes += totals[1]
    counts.packets += totals[2]


def _minute_cutoff(watermark: float) -> int:
    return bucket_start(watermark, MINUTE) - DAY + MINUTE


def _hour_cutoff(watermark: float) -> int:
    return bucket_start(watermark, HOUR) - WEEK + HOUR


def _prune(state: SummaryState) -> None:
    minute_cutoff, hour_cutoff = _minute_cutoff(state.watermark), _hour_cutoff(state.watermark)
    for branch in state.branches.values():
        prune_before(branch.minutes, minute_cutoff)  # type: ignore[arg-type]
        prune_before(branch.hours, hour_cutoff)  # type: ignore[arg-type]


def _add(buckets: dict[int, Counts], start: int, event: FeedEvent, kind: str | None) -> None:
    if kind is None:  # a flow
        flow = cast("FlowObserved | FlowBrief", event)
        size = flow.src2dst_bytes + flow.dst2src_bytes
        _add_totals(buckets, start, (1, size, flow.src2dst_packets + flow.dst2src_packets))
        return
    counts = buckets.get(start)
    if counts is None:
        counts = buckets[start] = Counts()
    counts.critical[kind] = counts.critical.get(kind, 0) + 1


def view(state: SummaryState, branches: Iterable[str], now: float) -> dict[str, Any]:
    """The summary of the given branches as seen at ``now``: totals and sparse series."""
    minute_from = bucket_start(now, MINUTE) - DAY + MINUTE
    hour_from = bucket_start(now, HOUR) - WEEK + HOUR
    minutes: dict[int, Counts] = {}
    hours: dict[int, Counts] = {}
    for name in branches:
        branch = state.branches.get(name)
        if branch is None:
            continue
        _merge_into(minutes, branch.minutes, minute_from)
        _merge_into(hours, branch.hours, hour_from)
    return {
        "now": now,
        "watermark": state.watermark,
        "last_24h": _total(minutes.values()),
        "last_7d": _total(hours.values()),
        "per_minute": [_row(start, minutes[start]) for start in sorted(minutes)],
        "per_hour": [_row(start, hours[start]) for start in sorted(hours)],
    }


def _merge_into(into: dict[int, Counts], source: dict[int, Counts], start_from: int) -> None:
    for start, counts in source.items():
        if start < start_from:
            continue
        total = into.setdefault(start, Counts())
        total.flows += counts.flows
        total.bytes += counts.bytes
        total.packets += counts.packets
        for kind, number in counts.critical.items():
            total.critical[kind] = total.critical.get(kind, 0) + number


def _total(buckets: Iterable[Counts]) -> dict[str, Any]:
    total = Counts()
    for counts in buckets:
        total.flows += counts.flows
        total.bytes += counts.bytes
        total.packets += counts.packets
        for kind, number in counts.critical.items():
            total.critical[kind] = total.critical.get(kind, 0) + number
    return msgspec.structs.asdict(total)


def _row(start: int, counts: Counts) -> dict[str, Any]:
    return {"start": start, **msgspec.structs.asdict(counts)}
