"""An AppendTap hands a same-process reader what the writer appended: same events, same
positions, each exactly once, whether taken from the tap or read from the file."""

from __future__ import annotations

from pathlib import Path

import msgspec

from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from netmon.storage.tap import AppendTap
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
        tap.listen_to(log)
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
        tap.listen_to(log)
        for start in range(0, 600, 100):
            log.append(flows[start : start + 100])
        first, position = read_all(reader, Position(), max_events=150)
        assert tap.taken == 0  # the tap overflowed twice: all of it came from the file
        log.append(flows[600:750])  # waits in the tap
        tap.stop_listening(log)
        log.append(flows[750:])  # not tapped
        rest, position = read_all(reader, position)
    assert first + rest == flows  # each event once, in order
    assert tap.taken == 150
    assert reader.stats.lines_decoded == len(flows) - 150


def test_the_writers_open_segment_is_read_only_as_far_as_its_appends_were_reported(
    tmp_path: Path,
) -> None:
    """Bytes the writer has put in the file but not yet reported (an append between write and
    listener, or a failed one about to be cut off) are never read by the tapped reader."""
    flows = make_flows(300)
    tap = AppendTap()
    reader = EventLogReader(tmp_path, tap=tap)
    seen_mid_append: list[list] = []
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append(flows[:100])  # before the tap listens: read from the file
        first, position = read_all(reader, Position())
        assert first == flows[:100] and tap.taken == 0
        # A listener called before the tap sees the batch written but not reported.
        log.add_listener(
            lambda parts: (
                any(p[3] for p in parts) and seen_mid_append.append(reader.read_new(position)[0])
            )
        )
        tap.listen_to(log)
        log.append(flows[100:200])
        assert seen_mid_append == [[]]  # not read from the file behind the writer's back
        second, position = read_all(reader, position)
        assert second == flows[100:200] and tap.taken == 100  # from the tap, not the file
        (segment,) = reader.segments()
        with (tmp_path / "events" / segment).open("ab") as handle:  # written, never reported
            handle.write(msgspec.json.encode(flows[200]) + b"\n")
        assert reader.read_new(position)[0] == []
        assert EventLogReader(tmp_path).read_new(position)[0] == [flows[200]]  # untapped: sees it
