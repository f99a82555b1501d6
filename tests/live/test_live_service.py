"""The replica's feed loop over a real log: history goes to the snapshot, not the live feed
(the wall's rows to dashboards, events to scripts); agents are announced up when they speak and
down when they fall silent (injectable clock)."""

from __future__ import annotations

from pathlib import Path

import anyio

from netmon.app.follower import FileFeed
from netmon.app.live import AgentStatusChanged, LiveHub
from netmon.app.live_service import LiveService
from netmon.app.projections.runner import ProjectionRunner, snapshot_path
from netmon.app.projections.wall_rows import WallRow
from netmon.storage.eventlog import EventLog
from tests.live.factory import flow, heartbeat
from tests.polling import wait_until_async

START = 1_800_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_service(data: Path, clock: Clock) -> LiveService:
    runner = ProjectionRunner(snapshot_path(data, "r1"))
    runner.load()
    return LiveService(
        FileFeed(data, poll_interval=0.005),
        runner,
        LiveHub(queue_size=64),
        None,  # no dashboards: nothing to render
        agent_timeout_s=60.0,
        clock=clock,
    )


async def test_history_is_in_the_snapshot_and_new_events_are_pushed(tmp_path: Path) -> None:
    data, clock = tmp_path / "data", Clock(START)
    old = flow(START - 10, critical=True)
    with EventLog(data, "w1") as writer:
        writer.append([old])
        service = make_service(data, clock)
        dashboard, script = service.hub.connect(None), service.hub.connect(None, rows=False)
        async with anyio.create_task_group() as group:
            group.start_soon(service.run)
            await service.caught_up.wait()
            assert [e.id for e in service.snapshot_events(None)] == [old.id]
            assert [row.newest for row in service.snapshot_rows(None)] == [old.id]
            assert dashboard.queue.empty() and script.queue.empty()  # history is not replayed
            new = flow(START, critical=True)
            await anyio.to_thread.run_sync(writer.append, [new])
            await wait_until_async(lambda: not script.queue.empty(), 5, "the push")
            assert (await script.next())[0] == new
            row, _ = await dashboard.next()
            assert isinstance(row, WallRow) and row.newest == new.id and row.flows == 1
            assert [e.id for e in service.snapshot_events(frozenset({"lab"}))] == []
            assert service.snapshot_rows(frozenset({"lab"})) == []
            group.cancel_scope.cancel()


async def test_agents_are_announced_up_then_down(tmp_path: Path) -> None:
    data, clock = tmp_path / "data", Clock(START)
    with EventLog(data, "w1") as writer:
        service = make_service(data, clock)
        client = service.hub.connect(frozenset({"hq"}))
        async with anyio.create_task_group() as group:
            group.start_soon(service.run)
            group.start_soon(service.watch_agents, 0.01)
            await service.caught_up.wait()
            await anyio.to_thread.run_sync(writer.append, [heartbeat(START, "hq", "agent-7")])
            await wait_until_async(lambda: not client.queue.empty(), 5, "agent up")
            item, _ = await client.next()
            assert item == AgentStatusChanged("agent-7", "hq", "up", START)
            await anyio.to_thread.run_sync(writer.append, [heartbeat(START + 5, "hq", "agent-7")])
            agents = service.runner.state.agents.agents
            await wait_until_async(lambda: agents["agent-7"].events == 2, 5, "the second heartbeat")
            assert client.queue.empty()  # still up: nothing to announce
            clock.now = START + 120  # silent for longer than the 60 s timeout
            await wait_until_async(lambda: not client.queue.empty(), 5, "agent down")
            item, _ = await client.next()
            assert isinstance(item, AgentStatusChanged) and item.status == "down"
            await anyio.to_thread.run_sync(writer.append, [heartbeat(START + 121, "hq", "agent-7")])
            await wait_until_async(lambda: not client.queue.empty(), 5, "agent up again")
            assert (await client.next())[0].status == "up"  # type: ignore[union-attr]
            group.cancel_scope.cancel()
