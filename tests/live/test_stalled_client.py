"""A stalled dashboard (never reads) changes neither the ingest rate nor other clients' latency;
when it reads again it gets "N events missed" and a fresh snapshot.

Measured on the real topology: an agent streams through nginx; the fast and the stalled
dashboards are pinned to the same replica (connected to its port) so the stall hits the replica
that serves the fast one. The stalled client's receive buffer is made tiny, but the replica's
kernel send buffer (up to 4 MB on loopback) still absorbs a few thousand messages, so the load
pushes 8,000 critical events per phase to make the stall reach the hub's queue.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.live.cluster import Agent, Cluster, Dashboard
from tests.live.factory import flow
from tests.polling import wait_until_async

pytestmark = pytest.mark.slow
# The topology needs the identity (users, tokens) and transport (agent registry) parts.
pytest.importorskip("netmon.app.commands.users")
pytest.importorskip("netmon.storage.agents")

ROUNDS = 100
FLOWS_PER_ROUND = 200  # of which CRITICAL_PER_ROUND are critical (pushed to dashboards)
CRITICAL_PER_ROUND = 80


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, env={"NETMON_LIVE__QUEUE_SIZE": "512"})
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def run_load(agent: Agent, dashboard: Dashboard) -> tuple[float, list[float]]:
    """Send ROUNDS rounds; the ingest rate (events/s acknowledged) and the dashboard latencies."""
    acked_before = agent.transport.stats.events_acked
    sent_at: dict[str, float] = {}
    started = time.monotonic()
    for _ in range(ROUNDS):
        now = time.time()
        events = [
            flow(now + i * 1e-4, critical=i < CRITICAL_PER_ROUND) for i in range(FLOWS_PER_ROUND)
        ]
        emitted = time.monotonic()
        agent.emit(events)
        sent_at.update((e.id, emitted) for e in events[:CRITICAL_PER_ROUND])
        await asyncio.sleep(0.02)  # a steady pace, like an agent's batches
    total = ROUNDS * FLOWS_PER_ROUND
    await wait_until_async(
        lambda: agent.transport.stats.events_acked - acked_before >= total, 30, "acks"
    )
    rate = total / (time.monotonic() - started)
    await wait_until_async(
        lambda: sent_at.keys() <= dashboard.received.keys(), 30, "the fast dashboard"
    )
    return rate, [dashboard.received[i] - sent_at[i] for i in sent_at]


def tiny_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_a_stalled_dashboard_slows_nothing_and_gets_a_snapshot_later(
    cluster: Cluster, tmp_path: Path
) -> None:
    headers = cluster.login()
    replica = cluster.replicas[0]
    fast = Dashboard(f"ws://127.0.0.1:{replica.port}/ws/live.json", lambda: headers, "fast")
    fast.start()
    await asyncio.wait_for(fast.connected.wait(), 10)
    agent = Agent(cluster, "agent-1", "hq", tmp_path / "spool")
    agent.start()
    stalled = None
    try:
        rate_alone, latency_alone = await run_load(agent, fast)

        stalled = await websockets.connect(
            f"ws://127.0.0.1:{replica.port}/ws/live.json",
            sock=tiny_socket(replica.port),
            additional_headers=headers,
            max_queue=1,  # the client library stops reading too: the stall reaches TCP
            compression=None,
        )
        rate_stalled, latency_stalled = await run_load(agent, fast)

        p50_alone, p50_stalled = (
            statistics.median(latency_alone),
            statistics.median(latency_stalled),
        )
        print(
            f"\ningest {rate_alone:,.0f} ev/s alone, {rate_stalled:,.0f} ev/s stalled client;"
            f" fast client p50 {p50_alone * 1000:.1f} ms alone, {p50_stalled * 1000:.1f} ms with;"
            f" max {max(latency_alone) * 1000:.0f} / {max(latency_stalled) * 1000:.0f} ms"
        )
        assert rate_stalled > 0.4 * rate_alone  # generous: the machine is shared
        assert p50_stalled < max(3 * p50_alone, p50_alone + 0.25)

        # The stalled client reads again: a "missed" marker, then a snapshot ending with the
        # newest critical event, then live events as usual.
        newest = max(fast.received, key=lambda i: fast.received[i])
        missed = None
        seen = []
        async with asyncio.timeout(20):
            async for raw in stalled:
                message = json.loads(raw)
                seen.append(message["type"])
                if message["type"] == "missed":
                    missed = message["count"]
                elif message["type"] == "snapshot" and missed is not None:
                    assert message["missed"] == missed
                    assert message["events"][-1]["id"] == newest
                    break
        assert missed is not None and missed > 0
        print(
            f"the stalled client read {len(seen) - 2} buffered messages (kernel socket buffers),"
            f" then 'missed {missed}' and a snapshot"
        )
    finally:
        if stalled is not None:
            await stalled.close()
        await agent.stop()
        await fast.stop()
