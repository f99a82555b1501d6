"""Searches read inside the archives: the same events, in the same order, as before archiving."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest

from netmon.archive.manager import ArchiveManager
from netmon.archive.reader import ArchiveReader, LogReader
from netmon.archive.zipfiles import ArchiveCorruptError
from netmon.storage.contract.events import AnyEvent, FlowObserved
from netmon.storage.log_reader import EventLogReader
from netmon.storage.names import InvalidNameError
from netmon.storage.queries import Query
from tests.archive.helpers import SETTINGS, day_ago, midnight, populate


def is_ssh(event: AnyEvent) -> bool:
    return isinstance(event, FlowObserved) and event.dst_port == 22


SCANS = {
    "everything": dict(dates=None, branches=None),
    "one date": dict(dates=lambda: [day_ago(4)], branches=None),
    "one branch, archived and live dates": dict(
        dates=lambda: [day_ago(0), day_ago(3), day_ago(4)], branches=["lab"]
    ),
    "predicate": dict(dates=None, branches=None, predicate=is_ssh),
    "needle": dict(dates=None, branches=None, needles=[b'"10.1.2.'], predicate=None),
    "two needles": dict(dates=None, branches=["hq"], needles=[b'"dst_port":22,', b"host3."]),
}
QUERIES = {
    "ip": lambda: Query(ip="10.2.1.30"),
    "port in a time range": lambda: Query(
        port=22, start=midnight(day_ago(4)) + 3_600, end=midnight(day_ago(3)) + 5_000
    ),
    "domain on one branch": lambda: Query(domain="host2.example.org", branches=("hq",)),
    "absent ip": lambda: Query(ip="198.51.100.1"),
}


def run_scan(reader: EventLogReader | LogReader, spec: dict[str, object]) -> list[AnyEvent]:
    dates = spec["dates"]() if callable(spec["dates"]) else spec["dates"]
    return list(
        reader.scan(
            dates,  # type: ignore[arg-type]
            spec["branches"],  # type: ignore[arg-type]
            spec.get("predicate"),  # type: ignore[arg-type]
            needles=spec.get("needles", ()),  # type: ignore[arg-type]
        )
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same events twice: once only live, once with every date before yesterday archived."""
    live = tmp_path_factory.mktemp("live")
    populate(live, days_ago=[0, 1, 3, 4, 6], per_partition=150)
    archived = tmp_path_factory.mktemp("archived")
    populate(archived, days_ago=[0, 1, 3, 4, 6], per_partition=150)
    ArchiveManager(archived, SETTINGS).run_once()
    return live, archived


@pytest.mark.parametrize("name", SCANS)
def test_scan_gives_the_same_events_in_the_same_order_after_archiving(
    stores: tuple[Path, Path], name: str
) -> None:
    live, archived = stores
    before = run_scan(EventLogReader(live), SCANS[name])
    reader = LogReader(archived)
    after = run_scan(reader, SCANS[name])
    assert before and after == before
    if name != "one date":
        assert reader.stats.live_segments > 0
    assert reader.stats.archived_segments > 0


@pytest.mark.parametrize("name", QUERIES)
def test_search_gives_the_same_events_after_archiving(stores: tuple[Path, Path], name: str) -> None:
    live, archived = stores
    query = QUERIES[name]()
    before = list(EventLogReader(live).search(query))
    reader = LogReader(archived)
    assert list(reader.search(query)) == before
    if name == "absent ip":
        assert before == [] and reader.stats.archived_segments == 0  # every sidecar said no
    else:
        assert before


def test_archive_sidecars_let_a_search_skip_members(stores: tuple[Path, Path]) -> None:
    _, archived = stores
    reader = ArchiveReader(archived)
    found = list(reader.search(Query(ip="10.2.6.21")))
    assert found and all("10.2.6.21" in (e.src_ip, e.dst_ip) for e in found)  # type: ignore[union-attr]
    assert reader.stats.segments_skipped > reader.stats.archived_segments > 0
    assert reader.stats.live_segments == 0


def test_a_segment_in_both_places_is_read_once(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[4], branches=["hq"])
    before = list(EventLogReader(tmp_path).scan(None, None))
    saved = {p: p.read_bytes() for p in (tmp_path / "events").rglob("*.jsonl*")}
    ArchiveManager(tmp_path, SETTINGS).run_once()
    # What a run killed between the rename and the removals leaves behind.
    for path, data in saved.items():
        path.write_bytes(data)
    assert list(LogReader(tmp_path).scan(None, None)) == before


def test_a_malformed_archived_line_is_logged_and_skipped_like_a_live_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    populate(tmp_path, days_ago=[4], branches=["hq"], per_partition=5)
    segment = next((tmp_path / "events").rglob("*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(lines[0] + b'{"type":"FlowObserved","id":\n' + b"".join(lines[1:]))
    from netmon.storage.segment_index import build_index_from_file, index_encoder

    index = build_index_from_file(segment, segment.name)
    (segment.parent / (segment.name + ".idx")).write_bytes(index_encoder.encode(index))
    before = [e.id for e in EventLogReader(tmp_path).scan(None, None)]
    summary = ArchiveManager(tmp_path, SETTINGS).run_once()
    assert summary.errors == []
    with caplog.at_level(logging.ERROR, logger="netmon.archive"):
        after = [e.id for e in LogReader(tmp_path).scan(None, None)]
    assert after == before and len(after) == 5
    assert f"{segment.name}:2: " in caplog.text  # the archived file and its line number


def test_a_damaged_archive_is_an_error_not_silence(tmp_path: Path) -> None:
    populate(tmp_path, days_ago=[4], branches=["hq"])
    ArchiveManager(tmp_path, SETTINGS).run_once()
    archive = next((tmp_path / "archives").glob("*.zip"))
    with zipfile.ZipFile(archive) as zipped:
        first = zipped.infolist()[0]
        offset = first.header_offset + 30 + len(first.filename) + 5
    data = bytearray(archive.read_bytes())
    data[offset] ^= 0x55
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveCorruptError, match=archive.name):
        list(LogReader(tmp_path).scan(None, None))


@pytest.mark.parametrize("branch", ["../x", "a/b", "A", ""])
def test_bad_branch_names_are_refused(tmp_path: Path, branch: str) -> None:
    with pytest.raises(InvalidNameError):
        list(LogReader(tmp_path).scan(None, [branch]))


def test_one_store_answers_the_same_before_and_after_its_dates_are_archived(
    tmp_path: Path,
) -> None:
    populate(tmp_path, days_ago=[0, 3, 5], per_partition=100)
    query = Query(port=22, start=midnight(day_ago(5)), end=midnight(day_ago(0)) + 86_400)
    store_before = (
        list(EventLogReader(tmp_path).scan(None, None, is_ssh)),
        list(EventLogReader(tmp_path).search(query)),
    )
    merged_before = (
        list(LogReader(tmp_path).scan(None, None, is_ssh)),
        list(LogReader(tmp_path).search(query)),
    )
    summary = ArchiveManager(tmp_path, SETTINGS).run_once()
    assert len(summary.partitions_sealed) == 4
    merged_after = (
        list(LogReader(tmp_path).scan(None, None, is_ssh)),
        list(LogReader(tmp_path).search(query)),
    )
    assert store_before[0] and store_before[1]
    assert merged_before == store_before
    assert merged_after == store_before
    # What the store alone still sees: only today's partitions.
    assert {e.ts // 86_400 for e in EventLogReader(tmp_path).scan(None, None)} == {
        midnight(day_ago(0)) // 86_400
    }


def test_an_archived_segment_can_be_fetched_by_its_store_path(tmp_path: Path) -> None:
    from netmon.archive.reader import archived_segment

    populate(tmp_path, days_ago=[4], branches=["hq"])
    segment = sorted((tmp_path / "events").rglob("*.jsonl"))[0]
    relpath, data = segment.relative_to(tmp_path / "events").as_posix(), segment.read_bytes()
    assert archived_segment(tmp_path, relpath) is None  # not archived yet
    ArchiveManager(tmp_path, SETTINGS).run_once()
    assert not segment.exists() and archived_segment(tmp_path, relpath) == data
    for bad in ("../../etc/passwd", "date=x/branch=hq/a.jsonl", "date=2026-01-01/branch=../a"):
        assert archived_segment(tmp_path, bad) is None
