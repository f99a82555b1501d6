"""Projections over a real log: resuming from a saved snapshot and rebuilding from scratch with
``netmon projections rebuild`` both end in the state the incremental run had."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import anyio

from netmon.app.follower import FileFeed
from netmon.app.live import LiveHub
from netmon.app.live_service import LiveService
from netmon.app.projections.runner import ProjectionRunner, snapshot_path
from netmon.storage.eventlog import EventLog
from tests.live.cluster import REPO_ROOT
from tests.live.factory import mixed_stream
from tests.polling import wait_until_async

START = 1_800_000_000.0


def make_service(data: Path) -> LiveService:
    runner = ProjectionRunner(snapshot_path(data, "r1"))
    runner.load()
    # Small reads so one batch holds events of several writers and read order != time order.
    feed = FileFeed(data, poll_interval=0.005, max_events=250)
    return LiveService(feed, runner, LiveHub(), None, save_interval_s=0.0)


async def follow_while_appending(
    service: LiveService, writers: list[EventLog], chunks: list[list]
) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(service.run)
        for number, chunk in enumerate(chunks):
            await anyio.to_thread.run_sync(writers[number % len(writers)].append, chunk)
        total = sum(len(chunk) for chunk in chunks)
        await wait_until_async(lambda: service.runner.state.events == total, 20, "the feed")
        await service.save()
        group.cancel_scope.cancel()


async def test_resumed_and_rebuilt_projections_equal_the_incremental_ones(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # A week of events from three branches: windows prune, tops fill, agents report.
    events = mixed_stream(START, 6000, branches=("hq", "lab", "edge"), max_gap_s=200.0)
    first, second = events[:3500], events[3500:]
    with EventLog(data, "w1") as one, EventLog(data, "w2") as two:
        # w1 writes the even chunks, w2 the odd ones: their time ranges interleave.
        service = make_service(data)
        await follow_while_appending(
            service, [one, two], [first[i : i + 300] for i in range(0, len(first), 300)]
        )
        assert service.runner.state.events == len(first)
        # A restart resumes from the saved snapshot and reads only what is new.
        service = make_service(data)
        assert service.runner.state.events == len(first)
        chunks = [second[i : i + 300] for i in range(0, len(second), 300)]
        async with anyio.create_task_group() as group:
            group.start_soon(service.run)
            for number, chunk in enumerate(chunks):
                await anyio.to_thread.run_sync([one, two][number % 2].append, chunk)
            await wait_until_async(
                lambda: service.runner.state.events == len(events), 20, "the feed"
            )
            await service.save()
            group.cancel_scope.cancel()
    incremental = ProjectionRunner(snapshot_path(data, "r1")).load()
    assert incremental.events == len(events)

    output = tmp_path / "rebuilt.msgpack"
    result = await anyio.to_thread.run_sync(
        functools.partial(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "netmon.app.cli",
                "projections",
                "rebuild",
                "--output",
                str(output),
            ],
            env={
                "NETMON_STORE__DATA_DIR": str(data),
                "PYTHONPATH": str(REPO_ROOT),
                "PATH": "/usr/bin:/bin",
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    )
    assert f"rebuilt {len(events)} events" in result.stdout
    assert "rebuild" in result.stderr  # the tqdm progress bar
    rebuilt = ProjectionRunner(output).load()
    assert rebuilt == incremental
    assert rebuilt.summary.branches.keys() == {"hq", "lab", "edge"}
