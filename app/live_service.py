"""The live service: this replica's projections and hub, kept current from the shared log.

``open_live`` is the lifespan resource: it loads this replica's projection snapshot, follows the
shared log from the saved position, applies every batch to the projections, and, once caught up,
publishes the batch to the hub (a restarting replica does not replay history to its dashboards;
they get it from the snapshot they receive on connect). The routes that serve the hub to browsers
and scripts are in app/live_routes.py; the projector process runs a ``LiveService`` too.

The replica's service also keeps its alert projection (``alerts``, app/projections/
alert_store.py) current, in the same step as it publishes a batch: a page refreshed by a push
reads the change the push announced. The projector process keeps no alert store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from operator import attrgetter
from typing import Any

import anyio

from netmon.app.follower import Feed, FileFeed
from netmon.app.live import AgentStatusChanged, FragmentRenderer, LiveHub, LiveRenderer
from netmon.app.projections import agents, recent, wall_rows
from netmon.app.projections.alert_store import AlertStore, alert_store_path
from netmon.app.projections.brief import FLOW_TYPE_SET, FROM_AGENTS, FeedEvent
from netmon.app.projections.runner import ProjectionRunner, snapshot_path
from netmon.app.projections.wall_rows import WallRow
from netmon.app.projector_link import ProjectorLink
from netmon.app.settings import Settings
from netmon.storage.contract.events import AnyEvent
from netmon.storage.eventlog import EventLog
from netmon.storage.tap import AppendTap

log = logging.getLogger(__name__)
_AGENT_ID = attrgetter("agent_id")
MIN_SAVE_PAUSE_S = 0.01


class LiveService:
    """This replica's projections, hub and renderer, kept current by ``run`` (the projector
    process runs one too, with no renderer: it serves no dashboards)."""

    def __init__(
        self,
        feed: Feed,
        runner: ProjectionRunner,
        hub: LiveHub,
        renderer: LiveRenderer | None,
        *,
        save_interval_s: float | None = 1.0,
        agent_timeout_s: float = 90.0,
        clock: Callable[[], float] = time.time,
        projector: ProjectorLink | None = None,
        alerts: AlertStore | None = None,
    ) -> None:
        self.feed, self.runner, self.hub, self.renderer = feed, runner, hub, renderer
        # The alert projection: fed by ``_follow`` once ``_catch_up_alerts`` has brought it to
        # the end of the log (it keeps its own position; it may be behind or ahead of ours).
        self.alerts = alerts
        self.alerts_ready = False
        self._awaited: dict[str, anyio.Event] = {}  # alert event id -> set once folded
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
            if self.alerts is not None:
                group.start_soon(self._catch_up_alerts, self.alerts)
            await self._follow()
            group.cancel_scope.cancel()

    async def _follow(self) -> None:
        async for batch in self.feed.batches(self.runner.state.offsets):
            if batch.events:
                # Apply, then publish, with no await in between: the wall's rows pushed are
                # read from the projections holding the batch, and a client resynced later
                # gets a snapshot that holds everything it was offered.
                self.runner.apply(batch.events, batch.offsets)
                if self.alerts_ready:
                    assert self.alerts is not None
                    folded = self.alerts.apply(batch.events, batch.offsets)
                    if self._awaited:
                        for event in folded:
                            if (done := self._awaited.pop(event.id, None)) is not None:
                                done.set()
                if self.caught_up.is_set():
                    self.hub.publish(batch.events, self.runner.state.recent)
                    for change in self._agent_changes(batch.events):
                        self.hub.publish_status(change)
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

    async def _catch_up_alerts(self, alerts: AlertStore) -> None:
        """Read the log from the alert store's own position to its end (in a thread), then
        once more on the loop, so no batch the feed delivers meanwhile is missed: every batch
        before ``alerts_ready`` was in the log by that last read, every one after is applied."""
        started = time.monotonic()
        read = await anyio.to_thread.run_sync(alerts.catch_up)
        read += alerts.catch_up()  # what arrived meanwhile: little, and no await until ready
        self.alerts_ready = True
        log.info(
            "alerts: caught up with the log (%d events read in %.1f s, %d alert events folded)",
            read,
            time.monotonic() - started,
            alerts.folded,
        )

    @contextlib.asynccontextmanager
    async def alert_folded(self, event_id: str, within_s: float = 5.0) -> AsyncIterator[None]:
        """Around an append of an alert event: on leaving, wait (up to ``within_s``) until the
        alert store has folded it, so the next read on this replica sees it."""
        done = anyio.Event()
        if self.alerts is None or not self.alerts_ready:
            done.set()  # catching up: the catch-up reads it, nothing to wait for here
        else:
            self._awaited[event_id] = done
        try:
            yield
            with anyio.move_on_after(within_s):
                await done.wait()
        finally:
            self._awaited.pop(event_id, None)

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
        """The recent critical events a (re)connecting script starts from."""
        state = self.runner.state.recent
        names = state.branches.keys() if branches is None else branches
        return recent.view(state, names)

    def snapshot_rows(self, branches: frozenset[str] | None) -> list[WallRow]:
        """The wall's rows a (re)connecting dashboard starts from, newest first."""
        walls = self.runner.state.recent.walls
        return wall_rows.view(walls, walls.keys() if branches is None else branches)


@contextlib.asynccontextmanager
async def open_live(
    settings: Settings, event_log: EventLog, fragments: FragmentRenderer
) -> AsyncIterator[LiveService]:
    """Lifespan resource: load the snapshot, run the feed loop; save once more on shutdown.
    ``event_log`` is this replica's own (its appends reach the feed without a re-read);
    ``fragments`` renders the dashboard's partials (web/templating.py's renderer)."""
    live = settings.live
    runner = ProjectionRunner(
        snapshot_path(settings.data_dir, settings.server.replica), fold_top=not live.projector
    )
    await anyio.to_thread.run_sync(runner.load)
    alerts = await anyio.to_thread.run_sync(
        AlertStore.open,
        alert_store_path(settings.data_dir, settings.server.replica),
        settings.data_dir,
    )
    projector = ProjectorLink(settings, runner) if live.projector else None
    tap = AppendTap()
    tap.listen_to(event_log)
    service = LiveService(
        FileFeed(settings.data_dir, poll_interval=live.poll_interval_s, tap=tap),
        runner,
        LiveHub(live.queue_size),
        LiveRenderer(settings.server.replica, fragments),
        save_interval_s=None if projector else live.save_interval_s,
        agent_timeout_s=live.agent_timeout_s,
        projector=projector,
        alerts=alerts,
    )
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
            tap.stop_listening(event_log)
    with anyio.CancelScope(shield=True):
        await service.save()
        await anyio.to_thread.run_sync(alerts.close)
