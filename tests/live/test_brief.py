"""The live feed decodes plain flows as briefs and everything the dashboards see in full."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from netmon.app.follower import read_to_end
from netmon.app.projections.brief import FlowBrief
from netmon.app.projections.runner import ProjectionSnapshot, apply_all
from netmon.storage.contract.events import FlowObserved
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from tests.live.factory import flow, mixed_stream

START = 1_800_000_000.0


def write(root: Path, events: list, batch: int = 97) -> None:
    with EventLog(root, "w1", durability="none") as log:
        for at in range(0, len(events), batch):
            log.append(events[at : at + batch])


def test_feed_projections_equal_those_of_full_events(tmp_path: Path) -> None:
    events = mixed_stream(START, 3000)
    write(tmp_path, events)
    fed = [event for batch in read_to_end(tmp_path, {}, 250) for event in batch.events]
    assert any(type(event) is FlowBrief for event in fed)
    full = EventLogReader(tmp_path).read_new(Position(), 1_000_000)[0]
    from_feed, from_full = ProjectionSnapshot(), ProjectionSnapshot()
    apply_all(from_feed, fed)
    apply_all(from_full, full)
    assert from_feed == from_full
    assert from_feed.recent.branches  # critical events were kept whole


def test_critical_flows_come_whole_and_plain_flows_as_briefs(tmp_path: Path) -> None:
    critical, plain = flow(START, critical=True), flow(START + 1)
    write(tmp_path, [critical, plain])
    fed = [event for batch in read_to_end(tmp_path, {}) for event in batch.events]
    assert fed[0] == critical and type(fed[0]) is FlowObserved  # features and all
    assert type(fed[1]) is FlowBrief and fed[1].id == plain.id
    assert fed[1].src2dst_bytes == plain.src2dst_bytes


def test_malformed_line_is_skipped_and_logged_by_the_brief_reader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, [flow(START), flow(START + 1)])
    segment = next((tmp_path / "events").rglob("*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(lines[0] + b'{"type":"FlowObserved","id":"x","ts":"soon"}\n' + lines[1])
    with caplog.at_level(logging.ERROR):
        fed = [event for batch in read_to_end(tmp_path, {}) for event in batch.events]
    assert [type(event) for event in fed] == [FlowBrief, FlowBrief]
    assert "skipping malformed line" in caplog.text and ":2 " in caplog.text
