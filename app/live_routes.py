"""The live feed's routes and the loop that drives it: follow the log → projections → hub.

``/ws/live`` pushes HTML fragments for htmx, ``/ws/live.json`` (or ``?format=json``) JSON for
scripts; ``?branch=NAME`` (repeatable) narrows the feed, and the principal's branches always cut
it down. ``live_service`` is the lifespan resource: it loads this replica's projection snapshot,
follows the shared log from the saved position, applies every batch to the projections, and,
once caught up, publishes the batch to the hub (a restarting replica does not replay history to
its dashboards; they get it from the snapshot they receive on connect).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from operator import attrgetter
from typing import Any

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from netmon.app.access import SecuredWebSocketRoute
from netmon.app.follower import Feed, FileFeed
from netmon.app.live import RESYNC, AgentStatusChanged, LiveClient, LiveHub, LiveRenderer
from netmon.app.projections import agents, recent
from netmon.app.projections.brief import FLOW_TYPE_SET, FROM_AGENTS, FeedEvent
from netmon.app.projections.runner import ProjectionRunner, snapshot_path
from netmon.app.projector import ProjectorLink
from netmon.app.settings import Settings
from netmon.storage.contract.events import AnyEvent
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import AppendTap

log = logging.getLogger(__name__)
_AGENT_ID = attrgetter("agent_id")
MIN_SAVE_PAUSE_S = 0.01


class LiveService:
    """This replica's projections, hub and renderer, kept current by ``run``."""

    def __init__(
        self,
        feed: Feed,
        runner: ProjectionRunner,
        hub: LiveHub,
        renderer: LiveRenderer,
        *,
        save_interval_s: float | None = 1.0,
        agent_timeout_s: float = 90.0,
        clock: Callable[[], float] = time.time,
        projector: ProjectorLink | None = None,
    ) -> None:
        self.feed, self.runner, self.hub, self.renderer = feed, runner, hub, renderer
        # None: this service never saves; its projector process owns the snapshot and folds
        # the top lists, which ``projector`` mirrors into ``runner.state.top``.
        self.save_interval_s = save_interval_s
        self.projector = projector
        self.agent_timeout_s = agent_timeout_s
        self.clock = clock
        self.caught_up = anyio.Event()
        self.agents_up: set[str] = set()
        self._saving = anyio.Lock()
        self._dirty = False  # applied events not in the saved snapshot yet
        self.last_save_s = 0.0  # how long the last snapshot save took

    async def run(self) -> None:
        """Follow the log forever: apply, publish once caught up, save every ``save_interval_s``."""
        async with anyio.create_task_group() as group:
            if self.save_interval_s is not None:
                group.start_soon(self._save_while_running)
            await self._follow()
            group.cancel_scope.cancel()

    async def _follow(self) -> None:
        async for batch in self.feed.batches(self.runner.state.offsets):
            if batch.events:
                # Publish, then apply, with no await in between: a client resynced later gets
                # a snapshot that holds everything it was offered (and publishing first saves
                # the apply time on the latency of critical events).
                if self.caught_up.is_set():
                    self.hub.publish(batch.events)
                    for change in self._agent_changes(batch.events):
                        self.hub.publish_status(change)
                self.runner.apply(batch.events, batch.offsets)
                self._dirty = True
            if batch.caught_up and not self.caught_up.is_set():
                now = self.clock()
                self.agents_up = {
                    agent_id
                    for agent_id, agent in self.runner.state.agents.agents.items()
                    if agents.is_connected(agent, now, self.agent_timeout_s)
                }
                self.caught_up.set()
                log.info("live: caught up with the log (%d events)", self.runner.state.events)

    async def _save_while_running(self) -> None:
        """Save whenever something changed, every ``save_interval_s``: on a timer, not on the
        next batch, so the last events before a quiet spell reach the snapshot too (the
        replica mirrors its top lists from the projector's snapshot)."""
        assert self.save_interval_s is not None
        while True:
            # A big state takes long to write: keep saving to at most ~10% of the time.
            await anyio.sleep(max(self.save_interval_s, 10 * self.last_save_s, MIN_SAVE_PAUSE_S))
            if self._dirty:
                self._dirty = False  # changes made while this save runs mark it again
                await self.save()

    async def save(self) -> None:
        """Encode on the loop (consistent), write and fsync in a thread; one save at a time."""
        if self.save_interval_s is None:
            return  # the projector process saves
        async with self._saving:
            started = time.monotonic()
            data = self.runner.encode()
            try:
                await anyio.to_thread.run_sync(self.runner.save, data)
            except OSError as error:
                # Disk full: the snapshot only shortens the next start (the log is the truth).
                # Raising here ended the lifespan and left a replica that accepted agents but
                # could store nothing (found by the chaos soak).
                log.error("live: projection snapshot not saved, will retry: %s", error)
                return
            self.last_save_s = time.monotonic() - started

    def _agent_changes(self, events: list[FeedEvent]) -> list[AgentStatusChanged]:
        """Agents that speak after being silent longer than the timeout (or for the first time)."""
        if set(map(type, events)) <= FLOW_TYPE_SET and self.agents_up.issuperset(
            map(_AGENT_ID, events)
        ):
            return []  # the usual batch: flows from agents already up (told in C)
        changes = []
        for event in events:
            if not isinstance(event, FROM_AGENTS):
                continue
            agent_id: str = event.agent_id  # type: ignore[union-attr]
            if agent_id in self.agents_up:
                continue
            # Not up: never seen, or announced down by watch_agents since.
            self.agents_up.add(agent_id)
            changes.append(AgentStatusChanged(agent_id, event.branch, "up", event.ts))
        return changes

    async def watch_agents(self, interval_s: float = 1.0) -> None:
        """Announce agents that fell silent past the timeout (wall clock), every ``interval_s``."""
        await self.caught_up.wait()
        while True:
            now = self.clock()
            for agent_id in sorted(self.agents_up):
                agent = self.runner.state.agents.agents.get(agent_id)
                if agent is not None and not agents.is_connected(agent, now, self.agent_timeout_s):
                    self.agents_up.discard(agent_id)
                    self.hub.publish_status(AgentStatusChanged(agent_id, agent.branch, "down", now))
            await anyio.sleep(interval_s)

    @property
    def top_events(self) -> int:
        """How many events the top lists reflect (they may lag behind, see app/projector.py)."""
        return self.projector.events if self.projector is not None else self.runner.state.events

    def snapshot_agents(self, branches: frozenset[str] | None) -> list[dict[str, Any]]:
        """Every agent of these branches with its status now (the Live page's agents table)."""
        return agents.view(
            self.runner.state.agents,
            None if branches is None else set(branches),
            self.clock(),
            self.agent_timeout_s,
        )

    def snapshot_events(self, branches: frozenset[str] | None) -> list[AnyEvent]:
        """The recent critical events a (re)connecting client starts from."""
        state = self.runner.state.recent
        names = state.branches.keys() if branches is None else branches
        return recent.view(state, names)


@contextlib.asynccontextmanager
async def live_service(settings: Settings, app_state: Any) -> AsyncIterator[LiveService]:
    """Lifespan resource: load the snapshot, run the feed loop; save once more on shutdown."""
    live = settings.live
    runner = ProjectionRunner(
        snapshot_path(settings.data_dir, settings.server.replica), fold_top=not live.projector
    )
    await anyio.to_thread.run_sync(runner.load)
    projector = ProjectorLink(settings, runner) if live.projector else None
    event_log: EventLog | None = getattr(app_state, "event_log", None)
    tap = AppendTap()
    if event_log is not None:  # this replica's own appends reach the feed without a re-read
        tap.listen_to(event_log)
    service = LiveService(
        FileFeed(settings.data_dir, poll_interval=live.poll_interval_s, tap=tap),
        runner,
        LiveHub(live.queue_size),
        LiveRenderer(settings.server.replica),
        save_interval_s=None if projector else live.save_interval_s,
        agent_timeout_s=live.agent_timeout_s,
        projector=projector,
    )
    app_state.live = service
    async with anyio.create_task_group() as group:
        group.start_soon(service.run)
        group.start_soon(service.watch_agents)
        if projector is not None:
            group.start_soon(projector.supervise)
            group.start_soon(projector.mirror)
        try:
            yield service
        finally:
            group.cancel_scope.cancel()
            if event_log is not None:
                tap.stop_listening(event_log)
    with anyio.CancelScope(shield=True):
        await service.save()


def requested_branches(websocket: WebSocket) -> frozenset[str] | None:
    """The branches this connection may see: what it asked for, cut down to the principal's."""
    asked = websocket.query_params.getlist("branch") or None
    principal = getattr(websocket.state, "principal", None)
    if principal is None:
        # Only apps built without the identity middleware (it refuses anonymous viewers).
        return None if asked is None else frozenset(asked)
    allowed: frozenset[str] | None = principal.allowed_branches(asked)
    return allowed


async def live_socket(websocket: WebSocket) -> None:
    """The live feed: a snapshot on connect, then pushes; a resync whenever it fell behind."""
    service: LiveService = websocket.app.state.live
    as_json = websocket.url.path.endswith(".json") or websocket.query_params.get("format") == "json"
    branches = requested_branches(websocket)
    await websocket.accept()
    client = service.hub.connect(branches)
    try:
        await _send_snapshot(websocket, service, client, as_json, missed=0)
        async with anyio.create_task_group() as group:
            group.start_soon(_drain_incoming, websocket, group.cancel_scope)
            await _send_loop(websocket, service, client, as_json)
    except* WebSocketDisconnect:  # the client went away while we were sending (task group)
        pass
    finally:
        service.hub.disconnect(client)


async def _drain_incoming(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    scope.cancel()


async def _send_loop(
    websocket: WebSocket, service: LiveService, client: LiveClient, as_json: bool
) -> None:
    renderer = service.renderer
    while True:
        item, missed = await client.next()
        if item is RESYNC:
            await _send_snapshot(websocket, service, client, as_json, missed)
        elif isinstance(item, AgentStatusChanged):
            text = renderer.status_json(item) if as_json else renderer.status_html(item)
            await websocket.send_text(text)
        else:
            text = renderer.event_json(item) if as_json else renderer.event_html(item)  # type: ignore[arg-type]
            await websocket.send_text(text)
        client.delivered += 1


async def _send_snapshot(
    websocket: WebSocket, service: LiveService, client: LiveClient, as_json: bool, missed: int
) -> None:
    # Taken synchronously right after the marker was dequeued: covers exactly what was dropped.
    events = service.snapshot_events(client.branches)
    renderer = service.renderer
    if as_json:
        if missed:
            await websocket.send_text(f'{{"type":"missed","count":{missed}}}')
        await websocket.send_text(renderer.snapshot_json(events, missed))
    else:
        agent_rows = service.snapshot_agents(client.branches)
        await websocket.send_text(renderer.snapshot_html(events, missed, agent_rows))


def routes() -> list[SecuredWebSocketRoute]:
    """The live feed's routes (viewer and up; branches scoped per principal)."""
    return [
        SecuredWebSocketRoute("/ws/live", live_socket, access="viewer"),
        SecuredWebSocketRoute("/ws/live.json", live_socket, access="viewer"),
    ]
