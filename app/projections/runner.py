"""Runs every projection over the log and saves all states with their log position, together.

The snapshot (one msgpack file per replica, ``DATA/projections/REPLICA.msgpack``) is written to a
temporary file, fsynced and renamed over the old one, so after a crash it holds either the old or
the new states, each with the position it reflects: restarting resumes exactly there. A snapshot
that cannot be read is set aside (renamed ``*.corrupt-N``), logged, and the projections are rebuilt
from the start of the log: the log is the source of truth, nothing is lost.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec

from netmon.app.projections import agents, recent, summary, top
from netmon.app.projections.brief import FLOW_TYPE_SET, FeedEvent
from netmon.storage.contract.files import write_atomically

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
MIN_TS = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_TS = 4_102_444_800.0  # 2100-01-01T00:00:00Z
_TS, _BRANCH = attrgetter("ts"), attrgetter("branch")


class ProjectionSnapshot(msgspec.Struct):
    """Every projection's state and the log position they reflect, saved as one file."""

    format: int = SNAPSHOT_FORMAT
    offsets: dict[str, int] = {}  # the follower's position (see app/follower.py)
    events: int = 0  # events read since the start of the log
    skipped: int = 0  # of which not folded (see apply_all)
    summary: summary.SummaryState = msgspec.field(default_factory=summary.SummaryState)
    top: top.TopState = msgspec.field(default_factory=top.TopState)
    agents: agents.AgentsState = msgspec.field(default_factory=agents.AgentsState)
    recent: recent.RecentState = msgspec.field(default_factory=recent.RecentState)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ProjectionSnapshot)


def snapshot_path(data_dir: Path, replica: str) -> Path:
    """Where a replica keeps its projections."""
    return data_dir / "projections" / f"{replica}.msgpack"


def apply_all(
    state: ProjectionSnapshot, events: Iterable[FeedEvent], *, fold_top: bool = True
) -> None:
    """Fold events into every projection (the one place that lists them).

    Windows follow the newest event time, so one event from a clock gone wild (year 2200) would
    push every real event out of them: events outside [2000, 2100) are skipped and counted
    instead. An event a projection cannot fold (a bug; never expected from validated events) is
    logged and skipped too. Both are deterministic, so a rebuild skips the same events.

    Flows (nearly every event) are folded per branch with each projection's ``apply_flows``,
    which equals folding them one by one at a fraction of the cost; the other events go one
    by one. Each projection's state is independent of how flows and other events interleave
    (see each module), so the result is the one-by-one fold's, whatever the batch boundaries.
    ``fold_top=False`` leaves the top lists alone (a replica whose projector folds them).
    """
    batch = events if isinstance(events, list) else list(events)
    flows_by_branch, others = _split(batch)
    for flows in flows_by_branch.values():
        _apply_flows(state, flows, fold_top)
    for event in others:
        _apply_one(state, event, fold_top)


def _split(batch: list[FeedEvent]) -> tuple[dict[str, list[Any]], list[FeedEvent]]:
    """Flows with a valid ts, by branch (in order), and every other event."""
    if not batch:
        return {}, []
    stamps = list(map(_TS, batch))
    branches = set(map(_BRANCH, batch))
    if (
        len(branches) == 1
        and set(map(type, batch)) <= FLOW_TYPE_SET
        and math.isfinite(sum(stamps))
        and min(stamps) >= MIN_TS
        and max(stamps) < MAX_TS
    ):
        return {branches.pop(): batch}, []  # the usual batch: one agent's flows
    flows: dict[str, list[Any]] = {}
    others: list[FeedEvent] = []
    for event in batch:
        if type(event) in FLOW_TYPE_SET and MIN_TS <= event.ts < MAX_TS:
            flows.setdefault(event.branch, []).append(event)
        else:
            others.append(event)
    return flows, others


def _apply_flows(state: ProjectionSnapshot, flows: list[Any], fold_top: bool) -> None:
    state.events += len(flows)
    try:
        summary.apply_flows(state.summary, flows)
        if fold_top:
            top.apply_flows(state.top, flows)
        agents.apply_flows(state.agents, flows)
        recent.apply_flows(state.recent, flows)
    except Exception as error:
        _skipped(state, flows[0], error, len(flows))


def _apply_one(state: ProjectionSnapshot, event: FeedEvent, fold_top: bool) -> None:
    state.events += 1
    try:
        if not MIN_TS <= event.ts < MAX_TS:
            raise ValueError(f"ts {event.ts!r} outside [{MIN_TS}, {MAX_TS})")
        summary.apply(state.summary, event)
        if fold_top:
            top.apply(state.top, event)
        agents.apply(state.agents, event)
        recent.apply(state.recent, event)
    except Exception as error:
        _skipped(state, event, error, 1)


def _skipped(state: ProjectionSnapshot, event: FeedEvent, error: Exception, count: int) -> None:
    """Count ``count`` events not folded; log the 1st, 2nd, 4th, 8th... time (bounded logs)."""
    before = state.skipped
    state.skipped += count
    if before & (before + 1) == 0 or count > 1:
        what = f"event {event.id}" if count == 1 else f"{count} flows from event {event.id} on"
        log.error(
            "projections: skipped %s (%s): %s (%d skipped so far)",
            what,
            type(event).__name__,
            error,
            state.skipped,
        )


class ProjectionRunner:
    """Holds the projections of one replica, applies batches, saves snapshots."""

    def __init__(self, path: Path, *, fold_top: bool = True) -> None:
        self.path = path
        self.fold_top = fold_top  # False in a replica whose projector process folds them
        self.state = ProjectionSnapshot()

    def load(self) -> ProjectionSnapshot:
        """Read the saved snapshot; start empty when there is none or it is unreadable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self.state = ProjectionSnapshot()
            return self.state
        try:
            state = _decoder.decode(data)
            if state.format != SNAPSHOT_FORMAT:
                raise msgspec.ValidationError(f"snapshot format {state.format} is not supported")
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            aside = self._set_aside()
            log.error(
                "projection snapshot %s is unreadable (%s); moved to %s, rebuilding from the log",
                self.path,
                error,
                aside,
            )
            state = ProjectionSnapshot()
        self.state = state
        return state

    def apply(self, events: Iterable[FeedEvent], offsets: dict[str, int]) -> None:
        """Fold a batch into every projection and move the position past it."""
        apply_all(self.state, events, fold_top=self.fold_top)
        self.state.offsets = dict(offsets)

    def encode(self) -> bytes:
        """The current snapshot as bytes (cheap; do it on the loop, write elsewhere)."""
        return _encoder.encode(self.state)

    def save(self, data: bytes | None = None) -> None:
        """Atomically replace the snapshot file (blocking: call from a thread in servers)."""
        data = self.encode() if data is None else data
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A save still running in a thread after its task was cancelled cannot collide with the
        # next one: the temp name is per thread. Each rename is atomic; either wins.
        write_atomically(self.path, data, mode=0o600)  # 0600, as mkstemp made it before

    def _set_aside(self) -> Path:
        number = 1
        while (aside := self.path.with_name(f"{self.path.name}.corrupt-{number}")).exists():
            number += 1
        os.replace(self.path, aside)
        return aside
