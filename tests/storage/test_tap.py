"""An AppendTap hands a same-process reader what the writer appended: same events, same
positions, each exactly once, whether taken from the tap or read from the file."""

from __future__ import annotations

from pathlib import Path

from storage.eventlog import EventLog, EventLogReader
from storage.log_reader import AppendTap
from storage.positions import Position
from tests.storage.helpers import T0, flow, read_all


def make_flows(count: int) -> list:
    return [
        flow(f"e{i:05d}", ts=T0 + 3600 + i / 1000, src_ip=f"10.0.{i // 250}.{i % 250}")
        for i in range(count)
    ]


def test_tapped_events_equal_the_file_and_are_not_read_again(tmp_path: Path) -> None:
    flows = make_flows(600)
    tap = AppendTap()
    tapped = EventLogReader(tmp_path, tap=tap)
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.add_listener(tap)
        got: list = []
        position = Position()
        for start in range(0, len(flows), 100):
            log.append(flows[start : start + 100])
            batch, position = read_all(tapped, position)
            got.extend(batch)
    assert tap.taken == len(flows)
    assert tapped.stats.lines_decoded == 0  # nothing was read from the files
    from_file, file_position = read_all(EventLogReader(tmp_path), Position())
    assert got == from_file == flows
    assert position == file_position


def test_a_reader_that_fell_behind_reads_the_file_and_loses_nothing(tmp_path: Path) -> None:
    flows = make_flows(900)
    tap = AppendTap(max_events=250)  # overflows: everything waiting is dropped
    reader = EventLogReader(tmp_path, tap=tap)
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.add_listener(tap)
        for start in range(0, 600, 100):
            log.append(flows[start : start + 100])
        first, position = read_all(reader, Position(), max_events=150)
        assert tap.taken == 0  # the tap overflowed twice: all of it came from the file
        log.append(flows[600:750])  # waits in the tap
        log.remove_listener(tap)
        log.append(flows[750:])  # not tapped
        rest, position = read_all(reader, position)
    assert first + rest == flows  # each event once, in order
    assert tap.taken == 150
    assert reader.stats.lines_decoded == len(flows) - 150
