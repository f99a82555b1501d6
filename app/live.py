"""The live hub: critical events fanned out to dashboard clients, each through a bounded queue.

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

from netmon.app.projections.brief import FeedEvent
from netmon.app.projections.recent import critical_among
from netmon.storage.contract.events import (
    AlertAcknowledged,
    AlertOpened,
    AlertResolved,
    AnyEvent,
    DetectionRaised,
    FlowObserved,
    GapReported,
)

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
LiveItem = AnyEvent | AgentStatusChanged | _Resync


class LiveClient:
    """One dashboard connection's view of the hub: a branch filter and a bounded queue."""

    def __init__(self, branches: frozenset[str] | None, queue_size: int) -> None:
        self.branches = branches  # None: every branch
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

    def connect(self, branches: frozenset[str] | None) -> LiveClient:
        """Register a client (its snapshot is sent by the caller)."""
        client = LiveClient(branches, self.queue_size)
        self.clients.add(client)
        return client

    def disconnect(self, client: LiveClient) -> None:
        """Forget a client."""
        if client in self.clients:
            self.clients.discard(client)
            self.dropped_closed += client.dropped

    def publish(self, events: list[FeedEvent]) -> None:
        """Offer every critical event to the clients that see its branch (never waits)."""
        for event in critical_among(events):
            self.published += 1
            for client in self.clients:
                if client.wants(event.branch):
                    client.offer(event)

    def publish_status(self, change: AgentStatusChanged) -> None:
        """Offer an agent up/down change to the clients that see its branch."""
        for client in self.clients:
            if client.wants(change.branch):
                client.offer(change)


def describe(event: AnyEvent) -> dict[str, Any]:
    """The row fields of a critical event (plain text; escaping and the time's format happen in
    the template)."""
    row: dict[str, Any] = {
        "event": event,
        "kind": type(event).__name__,
        "severity": "",
        "what": "",
        "domain": "",
        "detail": "",
    }
    match event:
        case FlowObserved():
            kinds = ", ".join(d.kind for d in event.detections)
            row.update(kind=kinds or "flow", severity=event.severity, domain=event.domain)
            row["what"] = f"{event.src_ip}:{event.src_port} → {event.dst_ip}:{event.dst_port}"
            row["detail"] = "; ".join(d.detail for d in event.detections)
        case DetectionRaised():
            row.update(kind=event.detection.kind, severity=event.severity, domain=event.domain)
            row["what"] = f"{event.src_ip}:{event.src_port} → {event.dst_ip}:{event.dst_port}"
            row["detail"] = event.detection.detail
        case AlertOpened():
            row.update(kind=f"alert {event.rule}", severity=event.severity, what=event.entity)
            row["detail"] = event.title
        case AlertAcknowledged() | AlertResolved():
            note = f": {event.note}" if event.note else ""
            row.update(what=event.alert_id, detail=f"by {event.by}{note}")
        case GapReported():
            row.update(kind="gap", severity="high", what=event.agent_id)
            row["detail"] = f"{event.events_dropped} events dropped ({event.reason})"
    return row


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
        # Every client of this replica gets the same text for an event: render it once.
        self._rendered: OrderedDict[tuple[str, str], str] = OrderedDict()

    def _once(self, event: AnyEvent, form: str, render: Callable[[AnyEvent], str]) -> str:
        key = (event.id, form)
        text = self._rendered.get(key)
        if text is None:
            text = self._rendered[key] = render(event)
            if len(self._rendered) > RENDER_CACHE:
                self._rendered.popitem(last=False)
        return text

    def event_html(self, event: AnyEvent) -> str:
        """One event as a row prepended to #live-rows."""
        return self._once(event, "html", self._event_html)

    def _event_html(self, event: AnyEvent) -> str:
        return self.fragments.fragment("_live_event.html", **describe(event))

    def snapshot_html(
        self, events: list[AnyEvent], missed: int, agents: list[dict[str, Any]] | None = None
    ) -> str:
        """The whole table (newest first), the agents' rows (as ``agents.view`` gives them)
        and the status line."""
        rows = [describe(event) for event in reversed(events)]
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
        return self._once(event, "json", self._event_json)

    def _event_json(self, event: AnyEvent) -> str:
        return self._encoder.encode({"type": "event", "event": event}).decode()

    def snapshot_json(self, events: list[AnyEvent], missed: int) -> str:
        """``{"type": "snapshot", "replica": ..., "missed": N, "events": [...]}`` (oldest first)."""
        message = {"type": "snapshot", "replica": self.replica, "missed": missed, "events": events}
        return self._encoder.encode(message).decode()

    def status_json(self, change: AgentStatusChanged) -> str:
        """``{"type": "agent", "agent_id": ..., "status": "up"|"down", ...}``."""
        return self._encoder.encode({"type": "agent", **msgspec.structs.asdict(change)}).decode()
