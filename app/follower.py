"""Following the shared event log: the feed every replica's live hub and projections consume.

``Feed`` is the small interface the rest of the server depends on. ``FileFeed`` implements it on
top of the event store's reader, following every writer's segments in the shared data directory,
so an event appended by replica A reaches dashboards connected to replica B. A broker (NATS
JetStream, say) can carry the feed between hosts later by implementing the same Protocol: its
position would be ``{"stream-name": sequence}`` instead of byte offsets per segment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import anyio
import msgspec

from netmon.app.projections.brief import FeedEvent, brief_decoder, needs_full
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from netmon.storage.tap import AppendTap

log = logging.getLogger(__name__)


class FeedBatch(msgspec.Struct, frozen=True):
    """Events read in one go, the position just after them, and whether the feed is caught up.

    A non-critical flow comes as a ``FlowBrief`` (the fields the projections read); every other
    event, critical flows included, as the full event (app/projections/brief.py).
    """

    events: list[FeedEvent]
    offsets: dict[str, int]  # shared with the reader's position: copy it before changing it
    caught_up: bool  # True when nothing more was waiting when this batch was read


class Feed(Protocol):
    """An ordered, resumable stream of every event in the shared log."""

    def batches(self, offsets: dict[str, int]) -> AsyncIterator[FeedBatch]:
        """Yield batches from ``offsets`` on, forever.

        When the feed runs dry it yields one empty batch with ``caught_up`` set, then nothing
        until new events arrive.
        """
        ...


class FileFeed:
    """A ``Feed`` over the JSONL segments of ``DATA/``, read by ``EventLogReader``."""

    # At most ``max_events`` per batch: the batch is applied on the event loop, so this bounds
    # how long ingest and dashboards wait for it (~1,000 events ≈ 10 ms) when catching up.
    # With ``tap`` (fed by this process's EventLog), what this replica appended is taken as
    # the Structs ingest already holds instead of being read and decoded again.
    def __init__(
        self,
        root: Path,
        *,
        poll_interval: float = 0.02,
        max_events: int = 1_000,
        tap: AppendTap | None = None,
    ):
        self.reader = EventLogReader(
            root, tail_decoder=brief_decoder, needs_full=needs_full, tap=tap, follow_forward=True
        )
        self.poll_interval = poll_interval
        self.max_events = max_events

    async def batches(self, offsets: dict[str, int]) -> AsyncIterator[FeedBatch]:
        """Poll the reader off the event loop; sleep ``poll_interval`` only when idle."""
        position = Position(offsets=dict(offsets))
        idle = False
        while True:
            events, position = await anyio.to_thread.run_sync(
                self.reader.read_new, position, self.max_events
            )
            if events:
                idle = False
                # the position's own dict: read_new never changes it (it returns a new one)
                yield FeedBatch(events=events, offsets=position.offsets, caught_up=False)
                if len(events) >= self.max_events:
                    continue  # more is waiting: read on without pausing
            elif not idle:
                idle = True
                yield FeedBatch(events=[], offsets=position.offsets, caught_up=True)
            await anyio.sleep(self.poll_interval)


def read_to_end(
    root: Path, offsets: dict[str, int], max_events: int = 50_000
) -> Iterator[FeedBatch]:
    """Every batch from ``offsets`` up to the current end of the log, then stop (for rebuilds)."""
    reader = EventLogReader(
        root, tail_decoder=brief_decoder, needs_full=needs_full, follow_forward=True
    )
    position = Position(offsets=dict(offsets))
    while True:
        events, position = reader.read_new(position, max_events)
        if not events:
            return
        yield FeedBatch(events=events, offsets=position.offsets, caught_up=False)
