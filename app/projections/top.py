"""Top talkers, domains, destination ports and detections per branch, in hour buckets (7 days).

Memory is bounded per hour bucket and dimension: counts are exact until a bucket holds
``PRUNE_AT`` distinct keys; then it is cut to the ``KEEP`` largest by bytes plus the ``KEEP``
largest by flows (ties broken by key). Below that cap the state does not depend on event order,
so a rebuild reproduces it exactly; past it, a key that was cut and comes back restarts from
zero, so its count is a lower bound (heavy hitters survive every cut; documented in
docs/replicas.md). Queries sum the hour buckets of the window and return the top ``k``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from itertools import compress
from operator import add, attrgetter
from typing import Any, cast

import msgspec

from netmon.app.projections.brief import FLOW_TYPES, FeedEvent, FlowBrief
from netmon.app.projections.buckets import HOUR, WEEK, bucket_start, prune_before, span
from netmon.storage.contract.events import FlowObserved

DIMENSIONS = ("src_ip", "dst_ip", "domain", "dst_port", "detection")
PRUNE_AT = 512
KEEP = 128

# dimension -> key -> (flows, bytes). Tuples of ints, not lists: the garbage collector stops
# tracking them, so a full week of buckets (up to a few million entries) costs no GC pauses.
Counts = dict[str, tuple[int, int]]
HourTop = dict[str, Counts]


class TopState(msgspec.Struct):
    """The top-N projection's state: branch -> hour start -> dimension -> key -> (flows, bytes)."""

    watermark: float = 0.0
    branches: dict[str, dict[int, HourTop]] = {}


def apply(state: TopState, feed_event: FeedEvent) -> None:
    """Fold one event into the top lists (only FlowObserved counts; batches use apply_flows)."""
    ts = feed_event.ts
    _advance(state, ts)
    if type(feed_event) not in FLOW_TYPES:  # FlowObserved, or its brief from the live feed
        return
    event = cast("FlowObserved | FlowBrief", feed_event)
    hour = int(ts // HOUR) * HOUR
    bucket = _bucket(state, event.branch, hour)
    if bucket is None:
        return
    size = event.src2dst_bytes + event.dst2src_bytes
    _count(bucket["src_ip"], event.src_ip, size)
    _count(bucket["dst_ip"], event.dst_ip, size)
    _count(bucket["dst_port"], _port_key(event.dst_port), size)
    if event.domain:
        _count(bucket["domain"], event.domain, size)
    for detection in event.detections:
        _count(bucket["detection"], f"{detection.kind}:{detection.rule}", size)


_PORT_KEYS = [str(port) for port in range(65536)]
_SRC_IP, _DST_IP = attrgetter("src_ip"), attrgetter("dst_ip")
_DST_PORT, _DOMAIN = attrgetter("dst_port"), attrgetter("domain")
_DETECTIONS = attrgetter("detections")
_UP, _DOWN = attrgetter("src2dst_bytes"), attrgetter("dst2src_bytes")


def apply_flows(state: TopState, flows: Sequence[FlowObserved | FlowBrief]) -> None:
    """Fold flows of one branch, all in [2000, 2100), as ``apply`` would one by one.

    When the flows end within one hour they share one bucket: each dimension's keys are then
    counted in one tight loop per dimension, in flow order. Dimensions are separate dicts, so
    this is the same sequence of updates (and of cuts) per dict as the one-by-one fold.
    """
    if not flows:
        return
    low, high = span(flows)
    if low // HOUR != high // HOUR:
        for flow in flows:
            apply(state, flow)
        return
    _advance(state, high)
    hour = int(low // HOUR) * HOUR
    bucket = _bucket(state, flows[0].branch, hour)
    if bucket is None:
        return
    sizes = list(map(add, map(_UP, flows), map(_DOWN, flows)))
    _count_all(bucket["src_ip"], map(_SRC_IP, flows), sizes)
    _count_all(bucket["dst_ip"], map(_DST_IP, flows), sizes)
    _count_all(bucket["dst_port"], map(_port_key, map(_DST_PORT, flows)), sizes)
    domains = list(map(_DOMAIN, flows))
    if any(domains):
        named = list(map(bool, domains))
        _count_all(bucket["domain"], compress(domains, named), compress(sizes, named))
    flagged = list(map(bool, map(_DETECTIONS, flows)))
    if any(flagged):
        keys, weights = [], []
        for flow, size in zip(compress(flows, flagged), compress(sizes, flagged), strict=True):
            for detection in flow.detections:
                keys.append(f"{detection.kind}:{detection.rule}")
                weights.append(size)
        _count_all(bucket["detection"], keys, weights)


def _advance(state: TopState, ts: float) -> None:
    """Move the watermark to ``ts`` if newer; entering a new hour drops the hours out of the
    window. Within one hour every cutoff is the same, so advancing once to a batch's newest
    ts equals advancing flow by flow."""
    if ts > state.watermark:
        old_hour = state.watermark // HOUR
        state.watermark = ts
        if ts // HOUR != old_hour:
            for hours in state.branches.values():
                prune_before(hours, _cutoff(ts))  # type: ignore[arg-type]


def _bucket(state: TopState, branch: str, hour: int) -> HourTop | None:
    """The branch's bucket of ``hour`` (made when first needed), None when out of the window."""
    if hour < _cutoff(state.watermark):
        return None
    hours_of_branch = state.branches.setdefault(branch, {})
    bucket = hours_of_branch.get(hour)
    if bucket is None:
        bucket = hours_of_branch[hour] = {name: {} for name in DIMENSIONS}
    return bucket


def _count_all(counts: Counts, keys: Iterable[str], sizes: Iterable[int]) -> None:
    """``_count`` for each (key, size) in order (the hot loop, kept flat)."""
    get = counts.get
    for key, size in zip(keys, sizes, strict=True):
        entry = get(key)
        if entry is None:
            counts[key] = (1, size)
            if len(counts) > PRUNE_AT:
                _cut(counts)
        else:
            counts[key] = (entry[0] + 1, entry[1] + size)


def _port_key(port: int) -> str:
    return _PORT_KEYS[port] if 0 <= port < 65536 else str(port)


def _cutoff(watermark: float) -> int:
    return bucket_start(watermark, HOUR) - WEEK + HOUR


def _count(counts: Counts, key: str, size: int) -> None:
    _count_all(counts, (key,), (size,))


def _cut(counts: Counts) -> None:
    """Keep the KEEP largest keys by bytes and the KEEP largest by flows (ties: larger key)."""
    # Runs every few hundred new keys on high-cardinality traffic (scans): sorting the plain
    # int values and picking by threshold costs half what sorting (value, key) pairs did.
    keys = list(counts)
    entries = list(counts.values())
    keep = _largest(keys, [entry[1] for entry in entries])
    keep.update(_largest(keys, [entry[0] for entry in entries]))
    for key in keys:
        if key not in keep:
            del counts[key]


def _largest(keys: list[str], values: list[int]) -> set[str]:
    """The KEEP keys with the largest values, ties broken by the larger key: what sorting
    (value, key) pairs in reverse and taking the first KEEP would pick."""
    if len(keys) <= KEEP:
        return set(keys)
    threshold = sorted(values, reverse=True)[KEEP - 1]
    chosen = {key for key, value in zip(keys, values, strict=True) if value > threshold}
    ties = sorted(
        [key for key, value in zip(keys, values, strict=True) if value == threshold], reverse=True
    )
    chosen.update(ties[: KEEP - len(chosen)])
    return chosen


def view(
    state: TopState, branches: Iterable[str], now: float, hours: int = 24, k: int = 10
) -> dict[str, Any]:
    """The top ``k`` of every dimension over the last ``hours`` hours, by bytes and by flows."""
    start_from = bucket_start(now, HOUR) - (hours - 1) * HOUR
    totals: dict[str, dict[str, list[int]]] = {name: {} for name in DIMENSIONS}
    for name in branches:
        for hour, bucket in state.branches.get(name, {}).items():
            if start_from <= hour <= now:
                for dimension, counts in bucket.items():
                    into = totals[dimension]
                    for key, (flows, size) in counts.items():
                        entry = into.get(key)
                        if entry is None:
                            into[key] = [flows, size]
                        else:
                            entry[0] += flows
                            entry[1] += size
    result: dict[str, Any] = {"hours": hours}
    for dimension, summed in totals.items():
        result[dimension] = {
            "by_bytes": _top(summed, k, 1),
            "by_flows": _top(summed, k, 0),
        }
    return result


def _top(counts: dict[str, list[int]], k: int, index: int) -> list[dict[str, Any]]:
    best = heapq.nlargest(k, counts.items(), key=lambda item: (item[1][index], item[0]))
    return [{"key": key, "flows": flows, "bytes": size} for key, (flows, size) in best]
