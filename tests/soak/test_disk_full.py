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

from storage.eventlog import EventLog, StoreError
from storage.events import FlowObserved, new_event_id
from storage.log_reader import EventLogReader
from storage.segments import parse_manifest_lines
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
