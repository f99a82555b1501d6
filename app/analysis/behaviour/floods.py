"""SYN floods: many half-open handshakes to one (host, port) in a short window.

A flood differs from a SYN scan by its target: a scan leaves one half-open handshake on each
of many ports, a flood leaves thousands on one port (often from many spoofed sources), so the
tracker is keyed by the victim's (host, port) and the alert names the victim, with the senders
as evidence. The default (500 in 10 s) sits between home-gateway IDS defaults (100 unfinished
handshakes/s per host) and old Bro's synflood policy (15,000 per minute).
"""

from __future__ import annotations

import msgspec

from netmon.app.analysis.behaviour.findings import MAX_SAMPLE_IDS, Finding
from netmon.app.analysis.behaviour.probes import is_half_open
from netmon.app.analysis.behaviour.tracked import TrackedDetector
from netmon.app.detection_settings import Thresholds
from netmon.storage.contract.events import AlertEvidence, FlowObserved

SOURCES_CAP = 1024
FLOOD_QUIET_WINDOWS = 6  # a flood quiet for six windows is over; the next one starts afresh


class FloodTracker(msgspec.Struct, kw_only=True):
    """Half-open handshakes to one (host, port): per-second counts of the recent window."""

    branch: str
    host: str
    port: int
    first: float
    last: float
    seconds: dict[int, int] = {}  # whole second -> half-open handshakes started in it
    total: int = 0
    sources: dict[str, int] = {}  # sender -> half-open handshakes (the first SOURCES_CAP senders)
    fired: bool = False
    new_ids: list[str] = []


class FloodState(msgspec.Struct):
    """Every tracked victim port."""

    targets: dict[str, FloodTracker] = {}


class FloodDetector(TrackedDetector[FloodTracker]):
    """Counts half-open handshakes per victim port in a sliding window."""

    rules: tuple[str, ...] = ("syn_flood",)

    def __init__(self, max_tracked: int, state: FloodState | None = None) -> None:
        self.state = state or FloodState()
        super().__init__(max_tracked, self.state.targets)

    def observe(self, flow: FlowObserved, th: Thresholds) -> None:
        """Count a half-open handshake against its destination port."""
        if not is_half_open(flow):
            return
        key = f"{flow.dst_ip}|{flow.dst_port}"
        when = flow.first_seen
        tracker = self.table.touch(
            key,
            lambda: FloodTracker(
                branch=flow.branch, host=flow.dst_ip, port=flow.dst_port, first=when, last=when
            ),
        )
        if when - tracker.last > th.flood_window_s * FLOOD_QUIET_WINDOWS:  # a new episode
            tracker = FloodTracker(
                branch=flow.branch, host=flow.dst_ip, port=flow.dst_port, first=when, last=when
            )
            self.table.entries[key] = tracker
        second = int(when)
        tracker.seconds[second] = tracker.seconds.get(second, 0) + 1
        horizon = second - int(th.flood_window_s)
        for old in [s for s in tracker.seconds if s <= horizon]:
            del tracker.seconds[old]
        tracker.total += 1
        tracker.last = max(tracker.last, when)
        senders = tracker.sources
        if flow.src_ip in senders or len(senders) < SOURCES_CAP:
            senders[flow.src_ip] = senders.get(flow.src_ip, 0) + 1
        if len(tracker.new_ids) < MAX_SAMPLE_IDS:
            tracker.new_ids.append(flow.id)
        if not tracker.fired and sum(tracker.seconds.values()) >= th.flood_half_open:
            tracker.fired = True
        if tracker.fired:
            self.dirty.add(key)

    def finding(self, key: str, t: FloodTracker, th: Thresholds) -> Finding | None:
        """The finding about a victim port whose flood grew."""
        duration = max(t.last - t.first, 0.0)
        ranked = sorted(t.sources, key=lambda ip: (-t.sources[ip], ip))
        senders = tuple(ranked[:10])
        who = _senders(ranked, t.sources, t.total)
        evidence = AlertEvidence(
            count=t.total,
            first_seen=t.first,
            last_seen=t.last,
            distinct_targets=1,
            distinct_ports=1,
            targets=(t.host,),
            ports=(t.port,),
            sources=senders,
        )
        return Finding(
            rule="syn_flood",
            entity=t.host,
            branch=t.branch,
            ts=t.last,
            severity="high",
            title=(
                f"SYN flood against {t.host}:{t.port}: {t.total} half-open handshakes"
                f" in {duration:.0f} s from {who}"
            ),
            evidence=evidence,
            evidence_ids=tuple(t.new_ids),
            threshold=th.flood_half_open,
        )


def _senders(ranked: list[str], counts: dict[str, int], total: int) -> str:
    """Who sent it: one address when it sent nearly all (a probe of a scanner may add one)."""
    top = ranked[0]
    if len(ranked) == 1:
        return top
    if counts[top] >= 0.9 * total:
        return (
            f"{top} (and {len(ranked) - 1} other)"
            if len(ranked) == 2
            else f"{top} (and {len(ranked) - 1} others)"
        )
    return f"{len(ranked)} sources"
