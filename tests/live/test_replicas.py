"""The deployment topology for real: nginx (Debian package) in front of three ``netmon serve``
replicas sharing one data dir, a real agent transport and dashboards connected through nginx.

A critical flow sent by the agent reaches dashboards on every replica; kill -9 of the replica
the agent is connected to sends the agent and that replica's dashboards through nginx to the
others within 5 s, with nothing lost or doubled; every replica's projections answer the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from netmon.storage.log_reader import EventLogReader
from tests.live.cluster import Agent, Cluster, Dashboard
from tests.live.factory import EVIL_DOMAIN, flow, heartbeat
from tests.polling import wait_until_async

pytestmark = pytest.mark.slow
# The topology needs the identity (users, tokens) and transport (agent registry) parts.
pytest.importorskip("netmon.app.commands.users")
pytest.importorskip("netmon.storage.agents")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def connect_everywhere(cluster: Cluster, headers: dict[str, str]) -> list[Dashboard]:
    """Open dashboards through nginx until every replica serves at least one."""
    names = {replica.name for replica in cluster.replicas}
    dashboards: list[Dashboard] = []
    for number in range(12):
        dashboard = Dashboard(f"{cluster.ws_url}/ws/live.json", lambda: headers, f"tab{number}")
        dashboard.start()
        await asyncio.wait_for(dashboard.connected.wait(), 10)
        dashboards.append(dashboard)
        if {d.replica for d in dashboards} == names and len(dashboards) >= 4:
            break
    assert {d.replica for d in dashboards} == names, cluster.logs()
    return dashboards


def projection_answers(cluster: Cluster, headers: dict[str, str]) -> list[dict]:
    """/api/v1/summary/top of every running replica, asked directly (not through nginx)."""
    answers = []
    for replica in cluster.replicas:
        if replica.process is None or replica.process.poll() is not None:
            continue
        url = f"http://127.0.0.1:{replica.port}/api/v1/summary/top?hours=168"
        answers.append(httpx.get(url, headers=headers, timeout=10).raise_for_status().json())
    return answers


async def test_agent_and_dashboards_survive_a_killed_replica_with_nothing_lost(
    cluster: Cluster, tmp_path: Path
) -> None:
    headers = cluster.login()
    dashboards = await connect_everywhere(cluster, headers)
    agent = Agent(cluster, "agent-1", "hq", tmp_path / "spool")
    agent.start()
    try:
        now = time.time()
        background = [flow(now - 60 + i * 0.01) for i in range(2000)] + [heartbeat(now)]
        critical = flow(now, critical=True, domain=EVIL_DOMAIN)
        agent.emit(background + [critical])
        await wait_until_async(
            lambda: all(critical.id in d.received for d in dashboards), 10, "the critical flow"
        )

        # Every replica answers the same from its own projections.
        total = len(background) + 1
        await wait_until_async(
            lambda: [a["events"] for a in projection_answers(cluster, headers)] == [total] * 3,
            5,
            "every replica's projections",
        )
        answers = projection_answers(cluster, headers)
        for answer in answers:
            answer.pop("replica")
        assert answers[0] == answers[1] == answers[2]
        assert answers[0]["detection"]["by_flows"][0]["key"] == "critical_port:ssh"

        # kill -9 the replica the agent streams to (the one that wrote its events).
        victim_name = cluster.writer_of(critical.id)
        victim = next(r for r in cluster.replicas if r.name == victim_name)
        orphans = [d for d in dashboards if d.replica == victim_name]
        connects = agent.transport.stats.connects
        killed_at = time.monotonic()
        cluster.kill_replica(victim)
        during = [flow(time.time() + i * 0.001, critical=True) for i in range(5)]
        agent.emit(during)
        await wait_until_async(
            lambda: agent.transport.stats.connects > connects, 10, "the agent to reconnect"
        )
        agent_reconnect = time.monotonic() - killed_at
        wanted = {critical.id, *(event.id for event in during)}
        await wait_until_async(
            lambda: all(wanted <= d.received.keys() for d in dashboards),
            10,
            "every event everywhere",
        )
        assert agent_reconnect < 5.0
        for orphan in orphans:
            assert orphan.reconnects and orphan.reconnects[-1] < 5.0, orphan.reconnects
            assert orphan.replica not in ("", victim_name)
        print(
            f"\nafter kill -9 of {victim_name}:"
            f" agent reconnected in {agent_reconnect * 1000:.0f} ms;"
            f" dashboards in {[round(o.reconnects[-1] * 1000) for o in orphans]} ms"
        )
        # Stored exactly once, whichever replica took each batch.
        sent = {event.id for event in [*background, critical, *during]}
        await wait_until_async(lambda: _stored(cluster, sent) == sent, 10, "the store")
        counts: dict[str, int] = {}
        for event in EventLogReader(cluster.data_dir).scan(None, None):
            counts[event.id] = counts.get(event.id, 0) + 1
        assert {i for i in sent if counts.get(i) != 1} == set()
    finally:
        await agent.stop()
        for dashboard in dashboards:
            await dashboard.stop()


def _stored(cluster: Cluster, wanted: set[str]) -> set[str]:
    return {e.id for e in EventLogReader(cluster.data_dir).scan(None, None) if e.id in wanted}
