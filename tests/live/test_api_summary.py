"""The projection endpoints and the live feed through nginx: branch scoping for a viewer,
escaped HTML over the real WebSocket, and clear 400s for bad parameters."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from netmon.storage.eventlog import EventLog
from tests.live.cluster import Cluster, Dashboard
from tests.live.factory import EVIL_DOMAIN, flow, heartbeat
from tests.polling import wait_until_async

pytestmark = pytest.mark.slow
pytest.importorskip("netmon.app.commands.users")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        now = time.time()
        with EventLog(cluster.data_dir, "test-writer") as writer:
            writer.append([flow(now - 100 + i, "hq") for i in range(30)])
            writer.append([flow(now - 100 + i, "lab", agent_id="agent-lab") for i in range(20)])
            writer.append([heartbeat(now, "hq", "agent-hq"), heartbeat(now, "lab", "agent-lab")])
        yield cluster
    finally:
        cluster.stop()


def get(cluster: Cluster, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{cluster.url}{path}", headers=headers, timeout=10)


def caught_up(cluster: Cluster, headers: dict[str, str], events: int) -> bool:
    """Every replica's projections, the top lists its projector folds included, hold ``events``."""
    return all(
        httpx.get(f"http://127.0.0.1:{r.port}{path}", headers=headers, timeout=10).json()["events"]
        >= events
        for r in cluster.replicas
        for path in ("/api/v1/summary", "/api/v1/summary/top")
    )


async def test_a_viewer_sees_only_their_branch(cluster: Cluster) -> None:
    admin = cluster.login()
    await wait_until_async(lambda: caught_up(cluster, admin, 52), 10, "the projections")
    viewer = cluster.create_user("lab-viewer", "viewer", ["lab"])

    everything = get(cluster, "/api/v1/summary", admin).json()
    assert everything["branches"] == ["hq", "lab"] and everything["last_24h"]["flows"] == 50
    mine = get(cluster, "/api/v1/summary", viewer).json()
    assert mine["branches"] == ["lab"] and mine["last_24h"]["flows"] == 20
    asked_other = get(cluster, "/api/v1/summary?branch=hq", viewer).json()
    assert asked_other["branches"] == [] and asked_other["last_7d"]["flows"] == 0
    # 2 hours: the flows are from the last 100 s, which may straddle an hour boundary.
    top = get(cluster, "/api/v1/summary/top?hours=2&k=5", viewer).json()
    assert sum(row["flows"] for row in top["dst_port"]["by_flows"]) == 20
    agents = get(cluster, "/api/v1/summary/agents", viewer).json()["agents"]
    assert [a["agent_id"] for a in agents] == ["agent-lab"] and agents[0]["connected"] is True

    dashboard = Dashboard(f"{cluster.ws_url}/ws/live.json", lambda: viewer, "lab-viewer")
    dashboard.start()
    try:
        await asyncio.wait_for(dashboard.connected.wait(), 10)
        hq_alarm, lab_alarm = (
            flow(time.time(), "hq", critical=True),
            flow(time.time(), "lab", critical=True),
        )
        with EventLog(cluster.data_dir, "test-writer") as writer:
            writer.append([hq_alarm])
            writer.append([lab_alarm])
        await wait_until_async(lambda: lab_alarm.id in dashboard.received, 5, "the lab alarm")
        # Pushes keep their order per client: had hq been sent, it would have come first.
        assert hq_alarm.id not in dashboard.received
    finally:
        await dashboard.stop()


async def test_html_feed_escapes_attacker_controlled_domains(cluster: Cluster) -> None:
    admin = cluster.login()
    async with websockets.connect(f"{cluster.ws_url}/ws/live", additional_headers=admin) as socket_:
        snapshot = await asyncio.wait_for(socket_.recv(), 10)
        assert 'id="live-rows"' in snapshot and 'id="live-status"' in snapshot
        evil = flow(time.time(), "hq", critical=True, domain=EVIL_DOMAIN)
        with EventLog(cluster.data_dir, "test-writer") as writer:
            writer.append([evil])
        async with asyncio.timeout(10):
            while f'data-entity="hq|{evil.src_ip}"' not in (fragment := str(await socket_.recv())):
                pass
    assert "&lt;img src=x onerror=alert(1)&gt;.evil" in fragment and "<img" not in fragment
    assert 'hx-swap-oob="true"' in fragment and 'class="live-row sev-critical' in fragment


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("hours=abc", "hours must be an integer"),
        ("hours=0", "hours must be between"),
        ("k=1000", "k must be between"),
        ("hours=99999999999999999999", "hours must be between"),
    ],
)
def test_bad_parameters_get_a_clear_400_and_a_log_line(
    cluster: Cluster, query: str, named: str
) -> None:
    answer = get(cluster, f"/api/v1/summary/top?{query}", cluster.login())
    assert answer.status_code == 400
    assert named in answer.json()["detail"]
    logs = "".join(r.log_path.read_text() for r in cluster.replicas)
    assert f"bad request /api/v1/summary/top?{query}" in logs


def test_anonymous_callers_are_refused(cluster: Cluster) -> None:
    assert get(cluster, "/api/v1/summary", {}).status_code == 401
    with pytest.raises(websockets.exceptions.InvalidStatus):
        asyncio.run(_open(f"{cluster.ws_url}/ws/live.json"))


async def _open(url: str) -> None:
    async with websockets.connect(url):
        pass


async def test_format_json_on_the_html_path_gives_json(cluster: Cluster) -> None:
    url = f"{cluster.ws_url}/ws/live?format=json&branch=lab"
    async with websockets.connect(url, additional_headers=cluster.login()) as socket_:
        snapshot = json.loads(await asyncio.wait_for(socket_.recv(), 10))
    assert snapshot["type"] == "snapshot" and snapshot["missed"] == 0
    assert {event["branch"] for event in snapshot["events"]} <= {"lab"}
