"""The archive manager on real stores: what is sealed, what is held back, retention, disk guard."""

from __future__ import annotations

import logging
import os
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import msgspec
import pytest

from netmon.archive.layout import archived_partitions
from netmon.archive.manager import ArchiveManager
from netmon.archive.zipfiles import read_manifest, verify_archive
from netmon.storage.eventlog import EventLog
from tests.archive.helpers import (
    SETTINGS,
    archive_names,
    archived_ids,
    day_ago,
    flow,
    live_ids,
    midnight,
    placement,
    populate,
)


def test_old_partitions_become_one_verified_zip_per_date_and_branch(tmp_path: Path) -> None:
    ids = populate(tmp_path, days_ago=[0, 1, 3, 4])
    summary = ArchiveManager(tmp_path, SETTINGS).run_once()

    expected = sorted(f"{day_ago(n).isoformat()}_{b}.zip" for n in (3, 4) for b in ("hq", "lab"))
    assert [n for n in archive_names(tmp_path) if n.endswith(".zip")] == expected
    assert summary.errors == [] and len(summary.partitions_sealed) == 4
    assert summary.events_archived == 4 * 60
    assert placement(tmp_path) == {event_id: 1 for event_id in ids}
    # Only the two recent dates are still live; the old partitions hold no segment any more.
    assert {event_id.split("-")[1] for event_id in live_ids(tmp_path)} == {"0", "1"}
    assert not list((tmp_path / "events").glob(f"date={day_ago(3).isoformat()}/*/*.jsonl*"))

    manifest = verify_archive(tmp_path / "archives" / expected[0])
    assert manifest.events == 60 and manifest.branch == "hq"
    assert manifest.first_ts == midnight(day_ago(4)) + 3_600
    assert manifest.last_ts == midnight(day_ago(4)) + 3_600 + 59 * 60
    segments = [m for m in manifest.members if m.name.endswith(".jsonl")]
    assert len(segments) > 1  # small segments: several per partition, each with its sidecar
    assert all(manifest.member(m.name + ".idx") is not None for m in segments)
    assert sum(m.events for m in segments) == 60


def test_a_second_run_has_nothing_to_do(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[5])
    ArchiveManager(tmp_path, SETTINGS).run_once()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "archives").glob("*.zip")}
    summary = ArchiveManager(tmp_path, SETTINGS).run_once()
    assert summary.partitions_sealed == [] and summary.originals_removed == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "archives").glob("*.zip")} == before


def test_unsealed_and_recently_modified_segments_are_held_back(tmp_path: Path) -> None:
    ids = populate(tmp_path, days_ago=[6], branches=["hq"])
    old = midnight(day_ago(6)) + 7_200
    # A writer still appending late events to the old date: its segment has no sidecar yet.
    with EventLog(tmp_path, "replica-2", durability="none") as writer:
        writer.append([flow("late-1", old, "hq", 1)])
        summary = ArchiveManager(tmp_path, SETTINGS).run_once()
        assert any("replica-2" in held and "no sidecar" in held for held in summary.held_back)
        assert "late-1" in live_ids(tmp_path)
    # Sealed now, but modified a moment ago: the grace period holds it back too.
    patient = msgspec.structs.replace(SETTINGS, grace_s=3_600.0)
    summary = ArchiveManager(tmp_path, patient).run_once()
    assert any("replica-2" in held and "grace" in held for held in summary.held_back)
    # Once quiet for the grace period it joins the existing archive, which is rewritten.
    segment = next((tmp_path / "events").rglob("replica-2-*.jsonl"))
    an_hour_ago = time.time() - 3_700
    os.utime(segment, (an_hour_ago, an_hour_ago))
    summary = ArchiveManager(tmp_path, patient).run_once()
    assert summary.held_back == [] and summary.segments_archived == 1
    assert placement(tmp_path) == {event_id: 1 for event_id in [*ids, "late-1"]}
    assert read_manifest(tmp_path / "archives" / f"{day_ago(6).isoformat()}_hq.zip").events == 61


def test_segments_sealed_without_a_sidecar_are_indexed_by_the_run_and_archived(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica leaves sidecars to its projector; one that was down must not stall archiving."""
    ids = populate(tmp_path, days_ago=[0, 5], branches=["hq"], index_on_seal=False)
    assert not list((tmp_path / "events").rglob("*.idx"))
    dry = ArchiveManager(tmp_path, SETTINGS).run_once(dry_run=True)
    assert dry.held_back and all("no sidecar index yet" in held for held in dry.held_back)
    with caplog.at_level(logging.WARNING, logger="netmon.archive"):
        summary = ArchiveManager(tmp_path, SETTINGS).run_once()
    assert summary.errors == [] and summary.held_back == []
    assert placement(tmp_path) == {event_id: 1 for event_id in ids}
    assert read_manifest(tmp_path / "archives" / f"{day_ago(5).isoformat()}_hq.zip").events == 60
    assert "sealed without a sidecar" in caplog.text
    today = (tmp_path / "events").glob(f"date={day_ago(0).isoformat()}/*/*.jsonl")
    assert all(not path.with_name(path.name + ".idx").exists() for path in today)  # too recent


def test_a_segment_named_in_a_writer_journal_is_held_back(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[4], branches=["hq"])
    segment = sorted((tmp_path / "events").rglob("*.jsonl"))[0]
    relpath = segment.relative_to(tmp_path / "events").as_posix()
    # What a writer killed mid-batch leaves: the batch's parts in its journal (storage/journal.py).
    from netmon.storage.journal import BatchPart, Journal

    journal = Journal(tmp_path / "events" / "_writers" / "replica-1.journal", fsync=False)
    journal.record([BatchPart(relpath, 0, 10, 0)])
    journal.close()
    summary = ArchiveManager(tmp_path, SETTINGS).run_once()
    assert f"{relpath}: named in its writer's batch journal" in summary.held_back
    assert segment.exists()


def test_a_live_segment_that_differs_from_its_archived_copy_is_kept_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    populate(tmp_path, days_ago=[4], branches=["hq"])
    segment = sorted((tmp_path / "events").rglob("*.jsonl"))[0]
    original = segment.read_bytes()
    ArchiveManager(tmp_path, SETTINGS).run_once()
    # Someone puts back a different file under an archived name (a restore gone wrong, say).
    segment.write_bytes(original.replace(b'"hq"', b'"HQ"'))
    (segment.parent / (segment.name + ".idx")).write_bytes(_index_for(segment))
    with caplog.at_level(logging.ERROR, logger="netmon.archive"):
        summary = ArchiveManager(tmp_path, SETTINGS).run_once()
    assert segment.read_bytes() == original.replace(b'"hq"', b'"HQ"')
    assert any("differs from its archived copy" in error for error in summary.errors)
    assert "differs from its archived copy" in caplog.text


def _index_for(segment: Path) -> bytes:
    from netmon.storage.segment_index import build_index_from_file, index_encoder

    return index_encoder.encode(build_index_from_file(segment, segment.name))


def test_a_corrupt_archive_is_reported_and_nothing_is_removed(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[4], branches=["hq"])
    ArchiveManager(tmp_path, SETTINGS).run_once()
    archive = tmp_path / "archives" / f"{day_ago(4).isoformat()}_hq.zip"
    data = bytearray(archive.read_bytes())
    data[60] ^= 0xFF  # inside the first member's compressed bytes
    archive.write_bytes(bytes(data))
    with EventLog(tmp_path, "replica-2", durability="none") as writer:
        writer.append([flow("late-1", midnight(day_ago(4)) + 10, "hq")])
    summary = ArchiveManager(tmp_path, SETTINGS).run_once()
    assert len(summary.errors) == 1 and "_hq.zip" in summary.errors[0]
    assert "late-1" in live_ids(tmp_path)  # the late segment was not removed
    assert archive.read_bytes() == bytes(data)  # and the damaged archive was left for an operator


def test_retention_deletes_archives_older_than_retain_days(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[3, 10, 11], branches=["hq"])
    settings = msgspec.structs.replace(SETTINGS, retain_days=9)
    summary = ArchiveManager(tmp_path, settings).run_once()
    assert [key.day for key in archived_partitions(tmp_path)] == [day_ago(3)]
    assert sorted(d.name for d in summary.deleted) == [
        f"{day_ago(11).isoformat()}_hq.zip",
        f"{day_ago(10).isoformat()}_hq.zip",
    ]
    assert {d.reason for d in summary.deleted} == {"retention"}


class Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_disk_guard_deletes_the_oldest_archives_until_free_space_is_back(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[3, 4, 5, 6], branches=["hq"], per_partition=200)
    ArchiveManager(tmp_path, SETTINGS).run_once()
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "archives").glob("*.zip")}

    # A small disk: what the data dir holds now plus 1,000 free bytes. The limit asks for the
    # two oldest archives' worth of space (minus a little), so exactly those two must go.
    def used() -> int:
        return sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())

    total = used() + 1_000

    def disk_usage(path: Path) -> Usage:
        return Usage(total, used(), total - used())

    oldest = sorted(sizes)[:2]
    limit = 1_000 + sizes[oldest[0]] + sizes[oldest[1]] - 10
    settings = msgspec.structs.replace(SETTINGS, min_free_bytes=limit)
    summary = ArchiveManager(tmp_path, settings, disk_usage=disk_usage).run_once()
    assert [d.name for d in summary.deleted] == oldest
    assert {d.reason for d in summary.deleted} == {"disk guard"}
    assert sorted(p.name for p in (tmp_path / "archives").glob("*.zip")) == sorted(sizes)[2:]
    assert summary.errors == []


def test_disk_guard_never_touches_live_events(tmp_path: Path) -> None:
    ids = populate(tmp_path, days_ago=[0, 3], branches=["hq"])
    settings = msgspec.structs.replace(SETTINGS, min_free_bytes=1 << 62)
    summary = ArchiveManager(tmp_path, settings).run_once()
    assert archived_ids(tmp_path) == []
    assert sorted(live_ids(tmp_path)) == sorted(e for e in ids if e.startswith("e-0-"))
    assert summary.errors == ["disk guard: free space under the limit, no archive left"]


def test_zip_members_keep_the_store_layout(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[3], branches=["hq"])
    before = {
        p.relative_to(tmp_path / "events").as_posix(): p.read_bytes()
        for p in (tmp_path / "events").rglob("date=*/*/*")
    }
    ArchiveManager(tmp_path, SETTINGS).run_once()
    with zipfile.ZipFile(tmp_path / "archives" / f"{day_ago(3).isoformat()}_hq.zip") as archive:
        restored = {n: archive.read(n) for n in archive.namelist() if n != "manifest.json"}
    assert restored == before  # `unzip -d DATA/events` puts every file back byte for byte


def test_a_dry_run_on_a_never_archived_store_creates_nothing(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[0, 4], branches=["hq"])
    before = sorted(tmp_path.rglob("*"))
    summary = ArchiveManager(tmp_path, SETTINGS).run_once(dry_run=True)
    assert sorted(tmp_path.rglob("*")) == before
    assert summary.partitions_sealed == [f"date={day_ago(4).isoformat()}/branch=hq"]
    assert summary.events_archived == 60 and summary.bytes_out == 0
