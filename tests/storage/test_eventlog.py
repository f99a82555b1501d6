"""The writer and the tailing reader on real files: layout, batches, positions, recovery."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from netmon.storage.eventlog import EventLog, WriterBusyError
from netmon.storage.log_reader import EventLogReader
from netmon.storage.names import InvalidNameError
from netmon.storage.positions import Position
from netmon.storage.segments import StoreError
from tests.storage.helpers import DAY, T0, flow


def read_all(root: Path) -> list[str]:
    events, _ = EventLogReader(root).read_new(Position(), max_events=1_000_000)
    return [event.id for event in events]


def test_batch_lands_in_hive_partitions_by_utc_date_and_branch(tmp_path: Path) -> None:
    with EventLog(tmp_path, "replica-1") as log:
        log.append([flow("a", ts=T0 + 10), flow("b", ts=T0 + DAY + 10, branch="lab")])
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert files == [
        "events/date=2025-11-21/branch=main/replica-1-00000001.jsonl",
        "events/date=2025-11-22/branch=lab/replica-1-00000002.jsonl",
    ]
    assert sorted(read_all(tmp_path)) == ["a", "b"]


def test_read_new_resumes_from_saved_position(tmp_path: Path) -> None:
    reader = EventLogReader(tmp_path)
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append([flow("1"), flow("2")])
        first, position = reader.read_new(Position())
        log.append([flow("3")])
        second, position = reader.read_new(position)
        third, _ = reader.read_new(position)
    assert [e.id for e in first] == ["1", "2"]
    assert [e.id for e in second] == ["3"]
    assert third == []


def test_read_new_honours_max_events_without_losing_any(tmp_path: Path) -> None:
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append([flow(str(i)) for i in range(25)])
    reader, position, seen = EventLogReader(tmp_path), Position(), []
    for _ in range(10):
        events, position = reader.read_new(position, max_events=7)
        seen += [e.id for e in events]
    assert seen == [str(i) for i in range(25)]


def test_segments_roll_by_size_and_reopen_continues_numbering(tmp_path: Path) -> None:
    with EventLog(tmp_path, "w1", segment_max_bytes=2_000, durability="none") as log:
        for batch in range(10):
            log.append([flow(f"{batch}-{i}") for i in range(3)])
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append([flow("late")])
    segments = sorted(tmp_path.rglob("*.jsonl"))
    assert len(segments) > 3
    assert all(p.with_name(p.name + ".idx").exists() for p in segments)  # all sealed on close
    assert read_all(tmp_path)[-1] == "late"
    assert len(read_all(tmp_path)) == 31


def test_midnight_utc_seals_the_previous_days_segments(tmp_path: Path) -> None:
    now = [T0 + DAY - 5]
    with EventLog(tmp_path, "w1", clock=lambda: now[0], durability="none") as log:
        log.append([flow("before", ts=now[0])])
        day_one = next(tmp_path.rglob("*.jsonl"))
        assert not day_one.with_name(day_one.name + ".idx").exists()
        now[0] = T0 + DAY + 5
        log.append([flow("after", ts=now[0])])
        assert day_one.with_name(day_one.name + ".idx").exists()


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "", "A", "x" * 65, "..", "a\x00b"])
def test_path_like_branch_names_are_rejected(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with EventLog(tmp_path, "w1") as log:
        log.append([flow("ok")])
        with (
            caplog.at_level(logging.WARNING, logger="netmon.storage"),
            pytest.raises(StoreError, match="invalid branch name"),
        ):
            log.append([flow("x1"), flow("bad", branch=name)])
    assert "rejected a batch" in caplog.text
    assert read_all(tmp_path) == ["ok"]  # nothing of the rejected batch was stored
    assert [p.name for p in tmp_path.rglob("*") if p.is_dir() and p.name.startswith("branch=")] == [
        "branch=main"
    ]


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "", "A", "x" * 65, "..", "a\x00b"])
def test_path_like_writer_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid writer name"):
        EventLog(tmp_path, name)
    assert not (tmp_path / "events").exists() or not any((tmp_path / "events").rglob("*.jsonl"))


@pytest.mark.parametrize("ts", [float("nan"), float("inf"), -1.0, 1e12])
def test_unusable_timestamps_are_rejected(tmp_path: Path, ts: float) -> None:
    with EventLog(tmp_path, "w1") as log:
        log.append([flow("first")])
        with pytest.raises(StoreError, match="event 1: ts .* is not a Unix time"):
            log.append([flow("ok"), flow("bad", ts=ts)])
    assert read_all(tmp_path) == ["first"]


def test_second_writer_with_same_name_is_refused(tmp_path: Path) -> None:
    with EventLog(tmp_path, "w1"), pytest.raises(WriterBusyError, match="already open"):
        EventLog(tmp_path, "w1")


def test_append_after_close_is_an_error(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "w1")
    log.close()
    with pytest.raises(StoreError, match="closed"):
        log.append([flow("x")])


async def test_follow_yields_appended_events_with_resumable_positions(tmp_path: Path) -> None:
    reader = EventLogReader(tmp_path)
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append([flow("1"), flow("2", branch="lab")])
        stream = reader.follow(Position(), poll_interval=0.005)
        got = [await anext(stream), await anext(stream)]
        log.append([flow("3")])
        third, position = await anext(stream)
        await stream.aclose()
    assert sorted(e.id for e, _ in got) == ["1", "2"]
    assert third.id == "3"
    assert EventLogReader(tmp_path).read_new(position)[0] == []
    resumed, _ = EventLogReader(tmp_path).read_new(got[0][1])
    assert got[0][0].id == "1"  # segments are read in manifest order
    assert sorted(e.id for e in resumed) == ["2", "3"]


def test_tailing_passes_over_sealed_segments_removed_by_retention(tmp_path: Path) -> None:
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append([flow("old", ts=T0)])
        log.append([flow("new", ts=T0 + DAY)])
    old = next((tmp_path / "events" / "date=2025-11-21").rglob("*.jsonl"))
    old.unlink()  # what archiving does once the segment is safely in a zip
    events, position = EventLogReader(tmp_path).read_new(Position())
    assert [e.id for e in events] == ["new"]
    relpath = old.relative_to(tmp_path / "events").as_posix()
    assert position.offsets[relpath] > 0  # marked done: later polls do not look for it again
