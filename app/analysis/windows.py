"""5-minute windows per branch: totals, label mix, attack types, top talkers and domains.

A flow belongs to the window holding its ``ts`` (the time the agent exported it). A window
closes once the branch's newest event is ``grace`` seconds past its end (event time), or, when
the worker has caught up with the log, once the wall clock is (so a quiet branch still gets its
summary). A flow for a window that already closed is late: it is counted in ``late_flows`` and
left out, because the window's summary is already in the log.

The aggregator's whole state is one msgspec Struct so the worker can checkpoint it together
with its log position and resume exactly where it stopped.
"""

from __future__ import annotations

import logging
import math

import msgspec

from netmon.storage.contract.events import (
    DetectionRaised,
    FlowObserved,
    Talker,
    WindowSummarized,
    new_event_id,
)

log = logging.getLogger(__name__)
MAX_TRACKED = 4096  # talkers/domains kept per window; trimmed to the heaviest half beyond this
MAX_EVIDENCE = 40


class WindowState(msgspec.Struct, kw_only=True):
    """Running totals of one (branch, window)."""

    branch: str
    start: float
    end: float
    flows: int = 0
    bytes: int = 0
    packets: int = 0
    labels: dict[str, int] = {}
    attack_types: dict[str, int] = {}
    talkers: dict[str, list[int]] = {}  # ip -> [flows, bytes]
    domains: dict[str, list[int]] = {}
    critical_detections: int = 0
    critical_ids: list[str] = []  # DetectionRaised ids (evidence, capped)
    attack_flow_ids: list[str] = []  # FlowObserved ids labelled attack (evidence, capped)

    @property
    def evidence_ids(self) -> list[str]:
        """The events the window's summary may cite: critical detections, then attack flows."""
        return self.critical_ids + self.attack_flow_ids


class WindowsState(msgspec.Struct, kw_only=True):
    """Every open window plus what is needed to tell late events."""

    open: dict[str, WindowState] = {}  # key "branch|start"
    watermark: dict[str, float] = {}  # branch -> newest ts seen
    closed_until: dict[str, float] = {}  # branch -> end of the newest closed window
    late_flows: int = 0


class WindowAggregator:
    """Folds flows (with their verdicts) and detections into windows; closes them in order."""

    def __init__(self, window_s: float = 300.0, grace_s: float = 60.0, top_n: int = 5) -> None:
        self.window_s, self.grace_s, self.top_n = window_s, grace_s, top_n
        self.state = WindowsState()
        self._current: dict[str, WindowState] = {}  # branch -> window of its latest event

    def restore(self, state: WindowsState) -> None:
        """Continue from a checkpointed state."""
        self.state = state
        self._current.clear()

    def _window(self, branch: str, ts: float) -> WindowState | None:
        window = self._current.get(branch)
        if window is not None and window.start <= ts < window.end:
            if ts > self.state.watermark[branch]:
                self.state.watermark[branch] = ts
            return window
        start = math.floor(ts / self.window_s) * self.window_s
        if start + self.window_s <= self.state.closed_until.get(branch, -math.inf):
            return None
        key = window_key(branch, start)
        window = self.state.open.get(key)
        if window is None:
            window = WindowState(branch=branch, start=start, end=start + self.window_s)
            self.state.open[key] = window
        mark = self.state.watermark.get(branch, -math.inf)
        self.state.watermark[branch] = max(mark, ts)
        self._current[branch] = window
        return window

    def add_flow(self, flow: FlowObserved, label: str, attack_type: str) -> None:
        """Count one classified flow."""
        window = self._window(flow.branch, flow.ts)
        if window is None:
            self.state.late_flows += 1
            log.debug("late flow %s for a closed window of %s", flow.id, flow.branch)
            return
        size = flow.src2dst_bytes + flow.dst2src_bytes
        window.flows += 1
        window.bytes += size
        window.packets += flow.src2dst_packets + flow.dst2src_packets
        window.labels[label] = window.labels.get(label, 0) + 1
        if label == "attack" and attack_type:
            window.attack_types[attack_type] = window.attack_types.get(attack_type, 0) + 1
            if len(window.attack_flow_ids) < MAX_EVIDENCE:
                window.attack_flow_ids.append(flow.id)
        _bump(window.talkers, flow.src_ip, size)
        _bump(window.talkers, flow.dst_ip, size)
        if flow.domain:
            _bump(window.domains, flow.domain, size)

    def add_detection(self, event: DetectionRaised) -> None:
        """Count one critical detection (its id becomes evidence)."""
        if event.severity != "critical":
            return
        window = self._window(event.branch, event.ts)
        if window is None:
            return
        window.critical_detections += 1
        if len(window.critical_ids) < MAX_EVIDENCE:
            window.critical_ids.append(event.id)

    def due(self, now: float | None = None) -> list[WindowState]:
        """Windows that close now (event time, or wall clock ``now`` if caught up), oldest first."""
        ready = []
        for window in self.state.open.values():
            mark = self.state.watermark.get(window.branch, -math.inf)
            if now is not None:
                mark = max(mark, now)
            if window.end + self.grace_s <= mark:
                ready.append(window)
        ready.sort(key=lambda w: (w.start, w.branch))
        for window in ready:
            del self.state.open[window_key(window.branch, window.start)]
            if self._current.get(window.branch) is window:
                del self._current[window.branch]
            closed = self.state.closed_until.get(window.branch, -math.inf)
            self.state.closed_until[window.branch] = max(closed, window.end)
        return ready

    def summarized(self, window: WindowState, now: float) -> WindowSummarized:
        """The WindowSummarized event of a closed window, before its summary text is written."""
        return WindowSummarized(
            id=new_event_id(now),
            ts=window.end,
            branch=window.branch,
            window_start=window.start,
            window_end=window.end,
            flows=window.flows,
            bytes=window.bytes,
            packets=window.packets,
            labels=dict(window.labels),
            attack_types=dict(window.attack_types),
            top_talkers=top(window.talkers, self.top_n),
            top_domains=top(window.domains, self.top_n),
            critical_detections=window.critical_detections,
            evidence_ids=tuple(window.evidence_ids),
        )


def window_key(branch: str, start: float) -> str:
    """How a window is named in state and in the worker's "already done" set."""
    return f"{branch}|{start:.0f}"


def top(table: dict[str, list[int]], n: int) -> tuple[Talker, ...]:
    """The n heaviest entries by bytes (then flows, then key for a stable order)."""
    rows = sorted(table.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:n]
    return tuple(Talker(key=key, flows=flows, bytes=size) for key, (flows, size) in rows)


def _bump(table: dict[str, list[int]], key: str, size: int) -> None:
    row = table.get(key)
    if row is None:
        if len(table) >= MAX_TRACKED:
            # Keep the heaviest half: top talkers stay exact unless a window has thousands of
            # hosts of the same weight, and the checkpoint stays small.
            keep = sorted(table.items(), key=lambda kv: -kv[1][1])[: MAX_TRACKED // 2]
            table.clear()
            table.update(keep)
        table[key] = [1, size]
    else:
        row[0] += 1
        row[1] += size
