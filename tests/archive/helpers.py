"""Real event stores for the archive tests: written by the store's own EventLog, read back raw."""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from netmon.archive.settings import ArchiveSettings
from netmon.storage.contract.events import Detection, FlowObserved, decode_json_line
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader

DAY = 86_400.0
# Archive everything older than 2 days at once; nothing else gets in the way unless a test asks.
SETTINGS = ArchiveSettings(
    after_days=2, grace_s=0.0, retain_days=0, min_free_bytes=0, min_free_percent=0.0
)


def day_ago(days: int, today: date | None = None) -> date:
    """The UTC date ``days`` before today."""
    return (today or datetime.now(UTC).date()) - timedelta(days=days)


def midnight(day: date) -> float:
    """Unix time of 00:00 UTC on ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def flow(event_id: str, ts: float, branch: str, n: int = 0) -> FlowObserved:
    """A realistic flow; every seventh one carries a detection and a domain."""
    detections = (Detection(kind="critical_port", detail="SSH (22/tcp)", severity="high"),)
    return FlowObserved(
        id=event_id,
        ts=ts,
        branch=branch,
        agent_id=f"agent-{branch}",
        first_seen=ts - 3.5,
        last_seen=ts - 0.25,
        src_ip=f"10.{n % 3}.{n % 7}.{n % 250 + 1}",
        src_port=40_000 + n % 20_000,
        dst_ip=f"192.0.2.{n % 11 + 1}",
        dst_port=22 if n % 7 == 0 else 443,
        protocol=6,
        src2dst_packets=10 + n % 5,
        src2dst_bytes=1_200 + n,
        dst2src_packets=8,
        dst2src_bytes=9_000 + 3 * n,
        domain="" if n % 7 else f"host{n % 5}.example.org",
        detections=detections if n % 7 == 0 else (),
        severity="high" if n % 7 == 0 else "none",
    )


def populate(
    data_dir: Path,
    days_ago: Iterable[int],
    branches: Iterable[str] = ("hq", "lab"),
    per_partition: int = 60,
    *,
    writer: str = "replica-1",
    batch: int = 20,
    segment_max_bytes: int = 8_000,
    prefix: str = "e",
    index_on_seal: bool = True,
) -> list[str]:
    """Append events to the real store (segments roll by size) and seal them; return the ids."""
    ids: list[str] = []
    branches = tuple(branches)
    with EventLog(
        data_dir,
        writer,
        durability="none",
        segment_max_bytes=segment_max_bytes,
        index_on_seal=index_on_seal,
    ) as log:
        for ago in days_ago:
            start = midnight(day_ago(ago)) + 3_600
            for branch in branches:
                events = [
                    flow(f"{prefix}-{ago}-{branch}-{i}", start + 60 * i, branch, i)
                    for i in range(per_partition)
                ]
                for at in range(0, len(events), batch):
                    log.append(events[at : at + batch])
                ids += [event.id for event in events]
    return ids


def live_ids(data_dir: Path) -> list[str]:
    """Ids of every event in live segments, read by the store's own reader."""
    return [event.id for event in EventLogReader(data_dir).scan(None, None)]


def archived_ids(data_dir: Path) -> list[str]:
    """Ids of every event inside archive ZIPs, read with nothing but zipfile."""
    ids: list[str] = []
    for path in sorted((data_dir / "archives").glob("[0-9]*.zip")):  # not .tmp-* files
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".jsonl"):
                    data = archive.read(name)
                    ids += [decode_json_line(line).id for line in data.splitlines() if line]
    return ids


def placement(data_dir: Path) -> Counter[str]:
    """How many places (live segments + archives) hold each event id."""
    return Counter(live_ids(data_dir)) + Counter(archived_ids(data_dir))


def archive_names(data_dir: Path) -> list[str]:
    """File names under DATA/archives (temporaries and the lock included)."""
    folder = data_dir / "archives"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
