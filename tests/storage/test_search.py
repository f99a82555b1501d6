"""Searching the log: partition pruning, sidecar indexes that skip segments, raw-byte needles."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import msgspec
import pytest

from netmon.storage.contract.events import AnyEvent
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.queries import Query
from netmon.storage.segment_index import read_index, write_index
from tests.storage.helpers import DAY, T0, assert_postings_match_lines, flow

DAYS = 3
BRANCHES = ("main", "lab")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """3 days x 2 branches, one sealed segment per batch; one rare IP in one segment."""
    with EventLog(tmp_path, "w1", durability="none", segment_max_bytes=1_000) as log:
        for day in range(DAYS):
            for branch in BRANCHES:
                for batch in range(4):
                    ts = T0 + day * DAY + batch * 600
                    events = [
                        flow(
                            f"{day}-{branch}-{batch}-{i}",
                            ts=ts + i,
                            branch=branch,
                            src_ip=f"10.0.{batch}.{i}",
                            dst_port=443 if i % 2 else 53,
                            domain=f"site{batch}.example",
                        )
                        for i in range(5)
                    ]
                    log.append(events)
        log.append(
            [flow("rare", ts=T0 + DAY + 30, branch="lab", src_ip="10.0.0.12", dst_port=8443)]
        )
    return tmp_path


def ids(events: list[AnyEvent]) -> list[str]:
    return sorted(event.id for event in events)


def full_scan(root: Path, query: Query) -> list[str]:
    return ids(list(EventLogReader(root).scan(None, None, query.matches)))


@pytest.mark.parametrize(
    "query",
    [
        Query(ip="10.0.0.12"),
        Query(port=8443),
        Query(ip="10.0.0.1"),  # a prefix of 10.0.0.12: must not match it
        Query(domain="site3.example"),
        Query(ip="10.0.2.3", start=T0 + DAY, end=T0 + 2 * DAY),
        Query(port=53, branches=("main",)),
    ],
    ids=["rare-ip", "rare-port", "prefix-ip", "domain", "ip-one-day", "port-branch"],
)
def test_search_returns_what_a_full_scan_returns(store: Path, query: Query) -> None:
    found = ids(list(EventLogReader(store).search(query)))
    assert found == full_scan(store, query)
    assert found  # each query matches something


def test_sidecars_skip_segments_that_cannot_match(store: Path) -> None:
    segments = sorted((store / "events").rglob("*.jsonl"))
    assert len(segments) > 20
    assert all(read_index(path) is not None for path in segments)
    reader = EventLogReader(store)
    assert ids(list(reader.search(Query(ip="10.0.0.12")))) == ["rare"]
    assert reader.stats.segments_opened == 1
    assert reader.stats.segments_skipped == len(segments) - 1
    assert reader.stats.lines_decoded == 1  # the needle kept every other line undecoded

    wide = EventLogReader(store)
    assert len(list(wide.search(Query(domain="site0.example")))) == DAYS * len(BRANCHES) * 5
    assert 1 < wide.stats.segments_opened < len(segments)


def test_scan_prunes_partitions_by_date_and_branch(store: Path) -> None:
    reader = EventLogReader(store)
    events = list(reader.scan([date(2025, 11, 22)], ["lab"]))
    assert len(events) == 4 * 5 + 1
    assert {event.branch for event in events} == {"lab"}
    opened = reader.stats.segments_opened
    assert opened == len(list((store / "events/date=2025-11-22/branch=lab").glob("*.jsonl")))


def test_unsealed_segments_are_searched_too(tmp_path: Path) -> None:
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append([flow("live", src_ip="198.51.100.7")])
        assert ids(list(EventLogReader(tmp_path).search_ip("198.51.100.7"))) == ["live"]


def test_scan_with_needles_decodes_only_matching_lines(store: Path) -> None:
    reader = EventLogReader(store)
    found = list(reader.scan(None, None, needles=[b'"10.0.3.4"', b'"10.0.0.12"']))
    assert ids(found) == sorted([f"{d}-{b}-3-4" for d in range(DAYS) for b in BRANCHES] + ["rare"])
    assert reader.stats.lines_decoded == len(found)


def test_unknown_branch_name_in_a_search_is_an_error(store: Path) -> None:
    with pytest.raises(ValueError, match="invalid branch name"):
        list(EventLogReader(store).scan(None, ["../etc"]))


def test_ip_in_every_segment_is_read_through_line_offsets_only(store: Path) -> None:
    segments = sorted((store / "events").rglob("*.jsonl"))
    for segment in segments:
        assert_postings_match_lines(segment)
    reader = EventLogReader(store)
    found = list(reader.search(Query(ip="192.0.2.10")))  # every flow's destination
    assert ids(found) == full_scan(store, Query(ip="192.0.2.10"))
    assert len(found) == DAYS * len(BRANCHES) * 4 * 5 + 1
    assert reader.stats.segments_opened == len(segments)
    assert reader.stats.lines_decoded == len(found)  # no line was decoded in vain


def test_sidecars_without_line_offsets_fall_back_to_scanning(store: Path) -> None:
    for segment in (store / "events").rglob("*.jsonl"):
        index = read_index(segment)
        assert index is not None
        old = msgspec.structs.replace(index, version=1, ip_lines=msgspec.Raw(b"{}"))
        write_index(segment, old, durable=False)
    query = Query(ip="192.0.2.10")
    assert ids(list(EventLogReader(store).search(query))) == full_scan(store, query)
