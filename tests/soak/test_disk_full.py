"""Regression tests for what the chaos soak found when the data volume filled up. They run in
the default test run (as root: each mounts a 2 MiB tmpfs, no soak marker).

1. A manifest line cut short by ENOSPC was joined by the next line (``{{"op":"open",...}``):
   every reader skipped that line, so the segment it opened was invisible (events lost to
   followers, the worker and searches).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmon.storage.contract.events import FlowObserved, new_event_id
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.segments import StoreError, parse_manifest_lines
from tests.polling import wait_until_async
from tests.soak.chaos import fill_up, mount_tmpfs, unmount

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: run as root")


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    volume = tmp_path / "volume"
    mount_tmpfs(volume, 2)
    try:
        yield volume
    finally:
        unmount(volume)


def flows(count: int, branch: str) -> list[FlowObserved]:
    now = time.time()
    return [
        FlowObserved(
            id=new_event_id(now),
            ts=now,
            branch=branch,
            agent_id="a",
            first_seen=now,
            last_seen=now,
            src_ip="10.0.0.1",
            src_port=i,
            dst_ip="192.0.2.1",
            dst_port=443,
            protocol=6,
            src2dst_packets=1,
            src2dst_bytes=60,
            dst2src_packets=1,
            dst2src_bytes=60,
            domain="example.com",
        )
        for i in range(count)
    ]


def test_a_full_disk_never_tears_a_manifest_line(small_volume: Path) -> None:
    log = EventLog(small_volume, "w1")
    stored = flows(20, "hq")
    log.append(stored)
    ballast = small_volume / "ballast"
    fill_up(ballast)
    refused = 0
    # New branches: each writes a manifest "open" line on the full disk, into the slack of
    # the manifest's last page, until one line straddles the page boundary (a short write).
    for number in range(120):
        try:
            log.append(flows(5, f"b{number}"))
        except StoreError:
            refused += 1
    assert refused > 0
    ballast.unlink()
    late = flows(20, "late")
    log.append(late)  # space is back: a new segment, its manifest line after the failed ones
    log.close()
    manifest = small_volume / "events" / "_writers" / "w1.manifest"
    lines = manifest.read_bytes().splitlines()
    assert len(parse_manifest_lines(manifest.read_bytes(), manifest)) == len(lines)
    ids = {event.id for event in EventLogReader(small_volume).scan(None, None)}
    assert {event.id for event in stored + late} <= ids


async def test_a_snapshot_save_on_a_full_disk_keeps_the_live_service_running(
    small_volume: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """2. The projection snapshot save raised ENOSPC out of the live service, which ended the
    app's lifespan (ingest's dedup index closed) while uvicorn kept accepting agents: every
    batch then failed. A failed save is now logged and retried at the next save."""
    import anyio

    from netmon.app.follower import FileFeed
    from netmon.app.live import LiveHub
    from netmon.app.live_service import LiveService
    from netmon.app.projections.runner import ProjectionRunner

    data = tmp_path / "data"  # the log has room; the snapshot's volume is full
    log = EventLog(data, "w1")
    fill_up(small_volume / "ballast")
    runner = ProjectionRunner(small_volume / "projections" / "r1.snapshot")
    service = LiveService(
        FileFeed(data, poll_interval=0.005),
        runner,
        LiveHub(queue_size=64),
        None,  # no dashboards: nothing to render
        save_interval_s=0.0,
    )
    async with anyio.create_task_group() as group:
        group.start_soon(service.run)
        for round_ in range(3):
            log.append(flows(10, "hq"))
            wanted = 10 * (round_ + 1)
            await wait_until_async(lambda n=wanted: runner.state.events >= n, 30, "events applied")
        await wait_until_async(
            lambda: "projection snapshot not saved" in caplog.text, 30, "the log line"
        )
        group.cancel_scope.cancel()
    log.close()
