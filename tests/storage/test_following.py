"""A following reader (``follow_forward=True``) polls only the segments its position has not
finished, yet reads every event once, in order per segment, like a reader that checks them all;
a position it did not just return (older, rewound, new) is read in full from where it stands."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from netmon.storage.segment_index import index_path
from tests.storage.helpers import T0, flow, read_all

WRITERS = ("w1", "w2", "w3")
SEGMENT_MAX_BYTES = 1_500  # ~4 flows a segment: hundreds of segments roll


def append_round(logs: dict[str, EventLog], round_number: int, count: int) -> None:
    for writer, log in logs.items():
        log.append(
            [
                flow(f"{writer}-{round_number:03d}-{i:02d}", ts=T0 + 3600 + round_number)
                for i in range(count)
            ]
        )


def segment_ids(root: Path, reader: EventLogReader) -> dict[str, list[str]]:
    """The ids in each listed segment still on disk, in file order."""
    found: dict[str, list[str]] = {}
    for segment in reader.segments():
        path = root / "events" / segment
        if path.exists():
            found[segment] = [
                line.split(b'"id":"')[1].split(b'"')[0].decode()
                for line in path.read_bytes().splitlines()
            ]
    return found


def assert_once_in_segment_order(read: list[str], segments: dict[str, list[str]]) -> None:
    assert len(read) == len(set(read)), "an event was read twice"
    order = {event_id: i for i, event_id in enumerate(read)}
    for segment, ids in segments.items():
        positions = [order[event_id] for event_id in ids if event_id in order]
        assert positions == sorted(positions), f"{segment} read out of order"


def test_a_follower_reads_hundreds_of_rolling_segments_once_and_in_order(tmp_path: Path) -> None:
    rng = random.Random(7)
    follower = EventLogReader(tmp_path, follow_forward=True)
    checker = EventLogReader(tmp_path)  # today's full pass, as a reference
    logs = {
        w: EventLog(tmp_path, w, durability="none", segment_max_bytes=SEGMENT_MAX_BYTES)
        for w in WRITERS
    }
    followed, checked = Position(), Position()
    got: list[str] = []
    archived: dict[str, list[str]] = {}  # segment -> ids it held when removed
    try:
        for round_number in range(160):
            append_round(logs, round_number, rng.randrange(1, 6))
            # small batches: segments are often left half read, then sealed by the next round
            events, followed = follower.read_new(followed, rng.randrange(1, 8))
            got += [e.id for e in events]
            if round_number % 20 == 19:  # archive some sealed segments, read or not
                for segment, ids in segment_ids(tmp_path, checker).items():
                    path = tmp_path / "events" / segment
                    if rng.random() < 0.1 and index_path(path).exists():  # sealed
                        archived[segment] = ids
                        path.unlink()
                        index_path(path).unlink()
    finally:
        for log in logs.values():
            log.close()
    events, followed = read_all(follower, followed, 50)
    got += [e.id for e in events]
    on_disk = segment_ids(tmp_path, checker)
    assert len(on_disk) + len(archived) > 300 and len(archived) > 10
    assert_once_in_segment_order(got, on_disk | archived)
    kept = {event_id for ids in on_disk.values() for event_id in ids}
    assert kept <= set(got)  # only archived events may be missing
    every = kept | {event_id for ids in archived.values() for event_id in ids}
    assert set(got) <= every
    reference, checked = read_all(checker, checked, 50)
    assert {e.id for e in reference} == kept
    assert followed.offsets.keys() >= checked.offsets.keys()
    assert all(followed.offsets[s] == checked.offsets[s] for s in on_disk)


def test_an_idle_poll_checks_only_the_unfinished_segments(tmp_path: Path) -> None:
    with EventLog(tmp_path, "w1", durability="none", segment_max_bytes=SEGMENT_MAX_BYTES) as log:
        for round_number in range(100):
            append_round({"w1": log}, round_number, 4)
        follower = EventLogReader(tmp_path, follow_forward=True)
        full = EventLogReader(tmp_path)
        _, position = read_all(follower, Position(), 1_000)
        _, full_position = read_all(full, Position(), 1_000)
        listed = len(follower.segments())
        assert listed > 90
        checked = follower.stats.segments_checked
        events, after = follower.read_new(position)
        assert events == [] and after is position  # nothing moved: nothing copied
        assert follower.stats.segments_checked - checked == 1  # the unsealed one
        checked = full.stats.segments_checked
        assert full.read_new(full_position)[0] == []
        assert full.stats.segments_checked - checked == listed
        log.append([flow("late", ts=T0 + 3600)])
        events, _ = follower.read_new(after)
        assert [e.id for e in events] == ["late"]


@pytest.mark.parametrize("follow_forward", [False, True])
def test_an_older_position_still_gets_everything_after_it(
    tmp_path: Path, follow_forward: bool
) -> None:
    reader = EventLogReader(tmp_path, follow_forward=follow_forward)
    saved: list[tuple[Position, int]] = []  # a position and how many events preceded it
    total = 0
    with EventLog(tmp_path, "w1", durability="none", segment_max_bytes=SEGMENT_MAX_BYTES) as log:
        position = Position()
        for round_number in range(60):
            append_round({"w1": log}, round_number, 3)
            events, position = reader.read_new(position, 1_000)
            total += len(events)
            saved.append((position, total))
    assert total == 180
    _, end = read_all(reader, position, 1_000)
    for older, before in [(Position(), 0), saved[10], saved[45]]:
        # as returned then, and as a copy (as a checkpoint would load it)
        for given in (older, Position(offsets=dict(older.offsets))):
            events, reached = read_all(reader, given, 7)
            assert len(events) == total - before
            assert len({e.id for e in events}) == len(events)
            assert reached == end


def test_skipped_to_end_moves_only_the_picked_segments(tmp_path: Path) -> None:
    reader = EventLogReader(tmp_path, follow_forward=True)
    with (
        EventLog(tmp_path, "own", durability="none", segment_max_bytes=SEGMENT_MAX_BYTES) as own,
        EventLog(tmp_path, "other", durability="none") as other,
    ):
        append_round({"own": own, "other": other}, 0, 12)
        position = reader.skipped_to_end(Position(), lambda s: "/own-" in s)
        events, position = read_all(reader, position, 5)
        assert {e.id.split("-")[0] for e in events} == {"other"}
        assert reader.skipped_to_end(position, lambda s: "/own-" in s) is position
        append_round({"own": own, "other": other}, 1, 2)
        position = reader.skipped_to_end(position, lambda s: "/own-" in s)
        events, _ = read_all(reader, position, 5)
        assert [e.id for e in events] == ["other-001-00", "other-001-01"]
