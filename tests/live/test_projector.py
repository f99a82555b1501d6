"""The projector process of a real replica: it folds the top lists the replica serves, is
restarted when it dies, stops when its replica is killed, and its snapshot survives both."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from netmon.app.projections.runner import ProjectionRunner, snapshot_path
from netmon.app.projector_link import ProjectorLink
from netmon.app.settings import Settings, StoreSettings
from netmon.storage.contract.events import FlowObserved
from netmon.storage.eventlog import EventLog
from tests.live.cluster import Agent, Cluster, wait_http
from tests.live.factory import flow
from tests.polling import wait_until_async

pytest.importorskip("netmon.app.commands.users")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """One replica, asked directly (no nginx)."""
    cluster = Cluster(tmp_path, replicas=1)
    cluster.url = f"http://127.0.0.1:{cluster.replicas[0].port}"
    try:
        cluster.create_admin()
        cluster.start_replica(cluster.replicas[0])
        wait_http(f"{cluster.url}/healthz", cluster.replicas[0])
        yield cluster
    finally:
        cluster.stop()


def projectors_of(pid: int) -> list[int]:
    """The replica's projector processes (its children running netmon.app.projector)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"netmon.app.projector" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def top_sources(cluster: Cluster, headers: dict[str, str]) -> tuple[int, set[str]]:
    """The events the replica's top lists reflect, and the source IPs in them."""
    answer = httpx.get(
        f"{cluster.url}/api/v1/summary/top?hours=2&k=50", headers=headers, timeout=10
    ).json()
    return answer["events"], {row["key"] for row in answer["src_ip"]["by_flows"]}


def flow_from(ip: str, ts: float) -> FlowObserved:
    return msgspec.structs.replace(flow(ts, "hq"), src_ip=ip)


async def test_the_projector_folds_the_top_lists_restarts_and_stops_with_its_replica(
    cluster: Cluster,
) -> None:
    headers = cluster.login()
    replica = cluster.replicas[0]
    assert replica.process is not None
    await wait_until_async(
        lambda: len(projectors_of(replica.process.pid)) == 1, 10, "the projector"
    )
    first = projectors_of(replica.process.pid)[0]

    with EventLog(cluster.data_dir, "test-writer") as writer:
        writer.append([flow_from("10.66.0.1", time.time() - 5 + i * 0.01) for i in range(40)])
        await wait_until_async(
            lambda: "10.66.0.1" in top_sources(cluster, headers)[1], 10, "top lists"
        )

        # Killed: the replica logs it and starts another; folding resumes from the snapshot.
        os.kill(first, signal.SIGKILL)
        await wait_until_async(
            lambda: projectors_of(replica.process.pid) not in ([], [first]), 10, "a new projector"
        )
        writer.append([flow_from("10.66.0.2", time.time() - 5 + i * 0.01) for i in range(40)])
        await wait_until_async(
            lambda: "10.66.0.2" in top_sources(cluster, headers)[1], 10, "top lists"
        )
    events, sources = top_sources(cluster, headers)
    assert events == 80 and {"10.66.0.1", "10.66.0.2"} <= sources
    assert "projector exited with -9" in replica.log_path.read_text()

    # The replica killed with -9: its projector notices and stops by itself.
    second = projectors_of(replica.process.pid)[0]
    cluster.kill_replica(replica)
    await wait_until_async(lambda: not running(second), 5, "the orphaned projector to stop")

    # Restarted, the replica serves the saved top lists at once.
    cluster.start_replica(replica)
    wait_http(f"http://127.0.0.1:{replica.port}/healthz", replica)
    events, sources = top_sources(cluster, headers)
    assert events == 80 and {"10.66.0.1", "10.66.0.2"} <= sources


async def test_the_replica_seals_its_segments_and_its_projector_indexes_them(
    tmp_path: Path,
) -> None:
    """Ingest skips the sidecar index (EventLog index_on_seal=False); the projector writes it."""
    cluster = Cluster(tmp_path, replicas=1, env={"NETMON_STORE__SEGMENT_MAX_BYTES": "20000"})
    replica = cluster.replicas[0]
    cluster.url = f"http://127.0.0.1:{replica.port}"
    cluster.ws_url = f"ws://127.0.0.1:{replica.port}"
    manifest = cluster.data_dir / "events" / "_writers" / f"{replica.name}.manifest"
    try:
        cluster.create_admin()
        cluster.start_replica(replica)
        wait_http(f"{cluster.url}/healthz", replica)
        agent = Agent(cluster, "agent-1", "hq", tmp_path / "spool")
        agent.start()
        try:
            now = time.time()
            for batch in range(6):  # a segment rolls between batches, never inside one
                agent.emit([flow(now - 60 + batch + i * 0.01, "hq") for i in range(60)])

            def sealed() -> list[Path]:
                lines = manifest.read_text().splitlines() if manifest.exists() else []
                entries = [msgspec.json.decode(line) for line in lines]
                return [
                    cluster.data_dir / "events" / e["seg"] for e in entries if e["op"] == "seal"
                ]

            await wait_until_async(lambda: len(sealed()) >= 3, 30, "the replica to seal segments")
            await wait_until_async(
                lambda: all(path.with_name(path.name + ".idx").exists() for path in sealed()),
                10,
                "the projector to index them",
            )
        finally:
            await agent.stop()
        log_text = replica.log_path.read_text()
        assert all(f"indexed sealed segment {p.relative_to(cluster.data_dir / 'events')}"
                   in log_text for p in sealed())  # fmt: skip
    finally:
        cluster.stop()


async def test_an_unreadable_snapshot_keeps_the_top_lists_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(store=StoreSettings(data_dir=str(tmp_path)))
    runner = ProjectionRunner(snapshot_path(tmp_path, "r1"), fold_top=False)
    runner.apply([flow(1_800_000_000.0, "hq")], {})
    folded = ProjectionRunner(snapshot_path(tmp_path, "r1"))
    folded.apply([flow(1_800_000_000.0, "hq")], {"seg": 10})
    folded.save()
    link = ProjectorLink(settings, runner)
    assert await link.reload() is True
    assert runner.state.top == folded.state.top and link.events == 1
    assert await link.reload() is False  # unchanged file: not read again
    snapshot_path(tmp_path, "r1").write_bytes(b"\xc1 not msgpack")
    with caplog.at_level(logging.ERROR):
        assert await link.reload() is False
    assert runner.state.top == folded.state.top
    assert "unreadable, top lists kept" in caplog.text
