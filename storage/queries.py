"""What a search asks for (``Query``) and how it maps onto the store: which partitions to
visit, which raw bytes every matching line must contain, which sealed segments to skip."""

from __future__ import annotations

import bisect
from datetime import UTC, date, datetime

import msgspec

from netmon.storage.contract.events import AnyEvent, DetectionRaised, FlowObserved
from netmon.storage.segment_index import SegmentIndex


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """What a search asks for; every given criterion must hold (AND).

    ``ip`` matches the source or destination of flows and detections, ``port`` either port,
    ``domain`` the flow's domain exactly. ``start``/``end`` bound ``ts`` (start <= ts < end).
    """

    ip: str | None = None
    port: int | None = None
    domain: str | None = None
    start: float | None = None
    end: float | None = None
    branches: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None

    def matches(self, event: AnyEvent) -> bool:
        """Whether ``event`` is one the query asks for."""
        if self.types is not None and type(event).__name__ not in self.types:
            return False
        if self.branches is not None and event.branch not in self.branches:
            return False
        if self.start is not None and event.ts < self.start:
            return False
        if self.end is not None and event.ts >= self.end:
            return False
        if self.ip is None and self.port is None and self.domain is None:
            return True
        if not isinstance(event, FlowObserved | DetectionRaised):
            return False
        return (
            (self.ip is None or self.ip in (event.src_ip, event.dst_ip))
            and (self.port is None or self.port in (event.src_port, event.dst_port))
            and (self.domain is None or self.domain == event.domain)
        )


def dates_between(start: float | None, end: float | None) -> list[date] | None:
    """The UTC dates [start, end) touches, or None (every date) when either end is open."""
    if start is None or end is None:
        return None  # open-ended: every partition, the sidecars' time ranges prune the rest
    first = datetime.fromtimestamp(start, tz=UTC).date()
    last = datetime.fromtimestamp(max(start, end - 1e-6), tz=UTC).date()
    return [date.fromordinal(day) for day in range(first.toordinal(), last.toordinal() + 1)]


def query_needles(query: Query) -> tuple[bytes, ...]:
    """The most selective raw byte string every matching line must contain."""
    if query.ip is not None:
        return (_json_string(query.ip),)
    if query.domain is not None:
        return (b'"domain":' + _json_string(query.domain),)
    if query.port is not None:
        return (f'_port":{query.port},'.encode(),)
    return ()


def _json_string(value: str) -> bytes:
    return msgspec.json.encode(value)


def index_may_match(index: SegmentIndex, query: Query) -> bool:
    """False when the sidecar proves the segment holds no event the query asks for."""
    if index.events == 0:
        return False
    if query.start is not None and index.max_ts < query.start:
        return False
    if query.end is not None and index.min_ts >= query.end:
        return False
    if query.types is not None and not any(name in index.types for name in query.types):
        return False
    if query.ip is not None and not _sorted_contains(index.ips, query.ip):
        return False
    if query.port is not None and not _sorted_contains(index.ports, query.port):
        return False
    return query.domain is None or _sorted_contains(index.domains, query.domain)


def _sorted_contains(values: list[str] | list[int], wanted: str | int) -> bool:
    at = bisect.bisect_left(values, wanted)  # type: ignore[arg-type,unused-ignore]
    return at < len(values) and values[at] == wanted
