"""The live hub: the wall's rows and critical events fanned out to dashboard clients, each
through a bounded queue.

A dashboard (HTML) client gets the wall's grouped rows (app/projections/wall.py): after each
batch, every row the batch changed, once, rendered as a ``<tr>`` that replaces the row with the
same id in place (netmon.js prepends it when the page has no such row yet). A flood from one
source is one row whose counters grow, never a screenful of rows. A script (JSON) client gets
every critical event itself.

Publishing never waits: a client whose queue is full (a slow or stalled connection) has its queue
emptied and replaced by one resync marker, and everything meant for it meanwhile is only counted.
When its sender reaches the marker it sends "N events missed" and a fresh snapshot taken at that
instant from the projections, which already hold every event published so far; so the client
ends up exactly current, and ingest and other clients never notice it.

Fragments are rendered from the dashboard's partials (web/templates/_*.html) by the
``FragmentRenderer`` the server's composition root passes in (web/templating.py: the one Jinja
environment, autoescape on), so a domain such as ``<img src=x onerror=alert(1)>.evil`` reaches
the browser as text.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, Protocol

import msgspec

from netmon.app.projections import wall_rows
from netmon.app.projections.brief import FeedEvent
from netmon.app.projections.recent import RecentState, critical_among
from netmon.app.projections.wall_rows import WallRow
from netmon.storage.contract.events import AnyEvent

log = logging.getLogger(__name__)

RENDER_CACHE = 4096  # rendered events kept for the other clients of this replica


class AgentStatusChanged(msgspec.Struct, frozen=True):
    """An agent came up (first event after a silence) or went down (silent past the timeout)."""

    agent_id: str
    branch: str
    status: Literal["up", "down"]
    ts: float


class _Resync:
    """Queue marker: the client fell behind; send the missed count and a snapshot here."""


RESYNC = _Resync()
LiveItem = AnyEvent | WallRow | AgentStatusChanged | _Resync


class LiveClient:
    """One dashboard connection's view of the hub: a branch filter, what it wants (the wall's
    rows, or critical events for scripts) and a bounded queue."""

    def __init__(self, branches: frozenset[str] | None, queue_size: int, rows: bool = True) -> None:
        self.branches = branches  # None: every branch
        self.rows = rows  # True: the wall's rows; False: the critical events themselves
        self.queue: asyncio.Queue[LiveItem] = asyncio.Queue(queue_size)
        self.missed = 0  # items dropped since the last resync was sent
        self.resync_pending = False
        self.delivered = 0
        self.dropped = 0  # items dropped over the connection's life (for /metrics)

    def wants(self, branch: str) -> bool:
        """Whether this client sees ``branch``."""
        return self.branches is None or branch in self.branches

    def offer(self, item: LiveItem) -> None:
        """Queue an item without ever waiting; on overflow switch to resync mode."""
        if self.resync_pending:
            self.missed += 1
            self.dropped += 1
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.missed += self.queue.qsize() + 1
            self.dropped += self.queue.qsize() + 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.resync_pending = True
            self.queue.put_nowait(RESYNC)

    async def next(self) -> tuple[LiveItem, int]:
        """The next item, and for a resync marker the number of items missed.

        After a marker the caller must take its snapshot before awaiting anything, so that the
        snapshot covers exactly what was dropped.
        """
        item = await self.queue.get()
        missed = 0
        if item is RESYNC:
            missed, self.missed, self.resync_pending = self.missed, 0, False
        return item, missed


class LiveHub:
    """Every connected client of this replica; ``publish`` is called by the feed loop."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self.clients: set[LiveClient] = set()
        self.published = 0
        self.dropped_closed = 0  # dropped items of clients that have disconnected

    def connect(self, branches: frozenset[str] | None, rows: bool = True) -> LiveClient:
        """Register a client (its snapshot is sent by the caller); ``rows=False``: a script's,
        which gets events instead of the wall's rows."""
        client = LiveClient(branches, self.queue_size, rows)
        self.clients.add(client)
        return client

    def disconnect(self, client: LiveClient) -> None:
        """Forget a client."""
        if client in self.clients:
            self.clients.discard(client)
            self.dropped_closed += client.dropped

    def publish(self, events: list[FeedEvent], recent: RecentState) -> None:
        """Offer a batch to the clients that see its branches (never waits): the wall's rows it
        changed, read from ``recent`` once the batch is folded into it, or its critical events.
        """
        critical = critical_among(events)
        if not critical:
            return
        self.published += len(critical)
        rows: list[WallRow] | None = None
        for client in self.clients:
            if not client.rows:
                for event in critical:
                    if client.wants(event.branch):
                        client.offer(event)
                continue
            if rows is None:
                rows = wall_rows.touched(recent.walls, critical)
            for row in rows:
                if client.wants(row.branch):
                    client.offer(row)

    def publish_status(self, change: AgentStatusChanged) -> None:
        """Offer an agent up/down change to the clients that see its branch."""
        for client in self.clients:
            if client.wants(change.branch):
                client.offer(change)


class FragmentRenderer(Protocol):
    """Renders one of the dashboard's partial templates to a string (web/templating.py's
    ``Renderer``; app/ never imports web/, so the composition root hands one in)."""

    def fragment(self, name: str, **context: Any) -> str:
        """The template ``name`` rendered with ``context``, escaped."""
        ...


class LiveRenderer:
    """HTML fragments (htmx out-of-band swaps) and JSON messages for the live feed."""

    def __init__(self, replica: str, fragments: FragmentRenderer) -> None:
        self.replica = replica
        self.fragments = fragments
        self._encoder = msgspec.json.Encoder()
        # Every client of this replica gets the same text for an event, or a row at one
        # version (events folded into it): render it once.
        self._rendered: OrderedDict[tuple[str, int, str], str] = OrderedDict()

    def _once(self, key: tuple[str, int], form: str, render: Callable[[], str]) -> str:
        text = self._rendered.get((*key, form))
        if text is None:
            text = self._rendered[(*key, form)] = render()
            if len(self._rendered) > RENDER_CACHE:
                self._rendered.popitem(last=False)
        return text

    def row_html(self, row: WallRow) -> str:
        """One wall row, replacing the row with its id (netmon.js prepends a new one)."""
        return self._once((row.id, row.version), "html", lambda: self._row_html(row))

    def _row_html(self, row: WallRow) -> str:
        return self.fragments.fragment("_live_row.html", row=row, oob=True)

    def snapshot_html(
        self, rows: list[WallRow], missed: int, agents: list[dict[str, Any]] | None = None
    ) -> str:
        """The whole wall (newest first, as ``wall_rows.view`` gives it), the agents' rows (as
        ``agents.view`` gives them) and the status line."""
        return self.fragments.fragment(
            "_live_snapshot.html", rows=rows, missed=missed, replica=self.replica, agents=agents
        )

    def status_html(self, change: AgentStatusChanged) -> str:
        """An agent row replaced in #agent-rows."""
        return self.fragments.fragment(
            "_agent_row.html",
            agent_id=change.agent_id,
            branch=change.branch,
            status=change.status,
            ts=change.ts,
        )

    def event_json(self, event: AnyEvent) -> str:
        """``{"type": "event", "event": {...}}``."""
        return self._once((event.id, 0), "json", lambda: self._event_json(event))

    def _event_json(self, event: AnyEvent) -> str:
        return self._encoder.encode({"type": "event", "event": event}).decode()

    def snapshot_json(self, events: list[AnyEvent], missed: int, rows: list[WallRow]) -> str:
        """``{"type": "snapshot", "replica": ..., "missed": N, "events": [...], "rows": [...]}``:
        the recent critical events oldest first, the wall's rows newest first."""
        message = {
            "type": "snapshot",
            "replica": self.replica,
            "missed": missed,
            "events": events,
            "rows": rows,
        }
        return self._encoder.encode(message).decode()

    def status_json(self, change: AgentStatusChanged) -> str:
        """``{"type": "agent", "agent_id": ..., "status": "up"|"down", ...}``."""
        return self._encoder.encode({"type": "agent", **msgspec.structs.asdict(change)}).decode()
