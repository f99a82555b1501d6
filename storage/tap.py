"""The append tap: a same-process reader takes what this process's ``EventLog`` just appended
from memory instead of reading and decoding its lines again (storage/log_reader.py uses it).
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from netmon.storage.eventlog import AppendedPart, EventLog


class AppendTap:
    """What this process's ``EventLog`` appended, kept for a tailing reader in the same process
    (``EventLog.add_listener``): the reader takes a batch it would read next from here instead
    of reading and decoding its lines again. Bounded: past ``max_events`` waiting, everything
    is dropped and the reader reads the file as usual, so a stalled reader costs no memory.

    While it listens, the tap also says how far its writer's open segments hold reported
    (durable) appends (``durable_end``), and the reader reads them no further: the bytes past
    that are being written (the reader would decode them from the file, only for the tap to
    drop them a moment later) or belong to a failed write about to be cut off.
    """

    def __init__(self, max_events: int = 20_000) -> None:
        self.writer: str | None = None  # the EventLog's writer while the tap listens to it
        self.max_events = max_events
        self.taken = 0  # events handed over without reading the file (for tests and benches)
        self._lock = threading.Lock()
        self._parts: dict[str, collections.deque[tuple[int, int, list[Any]]]] = {}
        self._waiting = 0
        self._ends: dict[str, int] = {}  # segment -> end of the last append reported there

    def listen_to(self, event_log: EventLog) -> None:
        """Receive ``event_log``'s appends from now on."""
        self.writer = event_log.writer
        event_log.add_listener(self)

    def stop_listening(self, event_log: EventLog) -> None:
        """No more appends come here: its segments are read from the file like any other."""
        event_log.remove_listener(self)
        self.writer = None

    def durable_end(self, segment: str) -> int | None:
        """How far ``segment`` holds reported (durable) appends, if the tapped writer writes
        it; None for any other writer's segment."""
        writer = self.writer
        if writer is None or segment.rpartition("/")[2].rpartition("-")[0] != writer:
            return None
        with self._lock:
            return self._ends.get(segment, 0)

    def __call__(self, parts: list[AppendedPart]) -> None:
        """The EventLog listener (appending thread)."""
        with self._lock:
            for segment, start, end, events in parts:
                self._ends[segment] = end
                if not events:
                    continue  # where a segment ended when the tap was added
                queue = self._parts.get(segment)
                if queue is None:
                    queue = self._parts[segment] = collections.deque()
                queue.append((start, end, events))
                self._waiting += len(events)
            if self._waiting > self.max_events:
                self._parts.clear()
                self._waiting = 0

    def take(self, segment: str, offset: int) -> tuple[int, list[Any]] | None:
        """The batch appended to ``segment`` at ``offset`` and the offset after it, if kept.
        Batches before ``offset`` were read from the file meanwhile: they are dropped."""
        with self._lock:
            queue = self._parts.get(segment)
            while queue and queue[0][0] < offset:
                self._waiting -= len(queue.popleft()[2])
            if not queue or queue[0][0] != offset:
                return None
            _, end, events = queue.popleft()
            self._waiting -= len(events)
            if not queue:
                del self._parts[segment]
        self.taken += len(events)
        return end, events
