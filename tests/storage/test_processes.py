"""The store with real writer processes: kill -9 under load, concurrent writers, follow."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from tests.conftest import REPO_ROOT
from tests.storage.writer_child import batch

CHILD = "tests.storage.writer_child"


def start_writer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", CHILD, *args],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def all_ids(root: Path) -> list[str]:
    reader = EventLogReader(root)
    events, _ = reader.read_new(Position(), max_events=10_000_000)
    assert reader.stats.malformed_lines == 0
    return [event.id for event in events]


def assert_every_line_complete(root: Path) -> None:
    for path in (root / "events").rglob("*.jsonl"):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), path


def test_kill_9_under_load_keeps_every_returned_batch_exactly_once(tmp_path: Path) -> None:
    size = 400
    with start_writer("load", str(tmp_path), "victim", str(size)) as child:
        assert child.stdout is not None
        returned: list[int] = []
        for line in child.stdout:  # each line is written only after append returned
            returned.append(int(line))
            if len(returned) == 40:
                break
        os.kill(child.pid, signal.SIGKILL)
        returned += [int(line) for line in child.stdout]  # reports already in the pipe
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    with EventLog(tmp_path, "victim") as log:  # recovery: torn tail cut, journal checked
        log.append([])  # an empty batch is a no-op
        log.append(batch("after", 0, 4))
    assert_every_line_complete(tmp_path)
    per_batch = collections.Counter(i.rsplit(":", 1)[0] for i in all_ids(tmp_path))
    assert len(set(all_ids(tmp_path))) == len(all_ids(tmp_path)), "an event is stored twice"
    for number in returned:
        assert per_batch[f"victim:{number}"] == size, f"returned batch {number} incomplete"
    assert all(count == size for name, count in per_batch.items() if name != "after:0")
    assert per_batch["after:0"] == 4


def test_three_writer_processes_append_concurrently_while_a_reader_tails(tmp_path: Path) -> None:
    batches, size = 30, 50
    children = [
        start_writer("count", str(tmp_path), f"w{n}", str(batches), str(size)) for n in range(3)
    ]
    reader, position, tailed = EventLogReader(tmp_path), Position(), []
    deadline = time.monotonic() + 120
    while any(child.poll() is None for child in children):  # tail while they write
        events, position = reader.read_new(position)
        tailed += [event.id for event in events]
        assert time.monotonic() < deadline, "writers did not finish"
        if not events:
            time.sleep(0.005)  # poll interval, leaving the CPU to the writers
    for child in children:
        out, _ = child.communicate(timeout=10)
        assert child.returncode == 0
        assert len(out.split()) == batches
    events, position = reader.read_new(position, max_events=1_000_000)
    tailed += [event.id for event in events]
    expected = {f"w{n}:{b}:{i}" for n in range(3) for b in range(batches) for i in range(size)}
    assert reader.stats.malformed_lines == 0  # the tailing reader never met a partial line
    assert len(tailed) == len(expected) and set(tailed) == expected  # each exactly once
    assert sorted(all_ids(tmp_path)) == sorted(expected)
    assert_every_line_complete(tmp_path)


async def test_follow_sees_another_process_append_within_100ms(tmp_path: Path) -> None:
    child = start_writer("ondemand", str(tmp_path), "remote")
    assert child.stdin is not None and child.stdout is not None
    reader = EventLogReader(tmp_path)
    stream = reader.follow(Position(), poll_interval=0.02)
    latencies = []
    try:
        for number in range(5):
            child.stdin.write("go\n")
            child.stdin.flush()
            event, _ = await asyncio.wait_for(anext(stream), timeout=10)
            latencies.append(time.time() - event.ts)  # ts is stamped just before append
            assert event.id == f"remote:{number}"
    finally:
        await stream.aclose()
        child.communicate(timeout=10)
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.100, latencies
