"""The alert projection in SQLite over a real log: exactly once across restarts and failures,
rebuilds equal to the incremental run, filters, sorts and cursor pages, counts."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from netmon.app.follower import read_to_end
from netmon.app.projections.alert_queries import AlertQuery, QueryError, parse_query
from netmon.app.projections.alert_store import AlertStore
from netmon.storage.contract.events import SEVERITY_RANK, Event
from netmon.storage.eventlog import EventLog
from tests.app.alert_events import (
    acknowledged,
    lifecycle,
    opened,
    resolved,
    suppressed,
    updated,
)
from tests.live.factory import flow

START = 1_796_000_000.0
NOW = START + 10_000


def dump(store: AlertStore) -> dict[str, list[Any]]:
    """Every table's rows, in a fixed order (counts without the zero rows)."""
    db = store._db
    return {
        "alerts": db.execute("SELECT * FROM alerts ORDER BY alert_id").fetchall(),
        "counts": db.execute("SELECT * FROM counts WHERE n != 0 ORDER BY 1, 2, 3, 4").fetchall(),
        "suppressions": db.execute("SELECT * FROM suppressions ORDER BY 1, 2, 3").fetchall(),
        "pending": db.execute("SELECT * FROM pending ORDER BY 1").fetchall(),
    }


def with_flows(events: list[Event], every: int = 3) -> list[Event]:
    """Flows between the alert events, as in a real log (the store skips them)."""
    mixed: list[Event] = []
    for number, event in enumerate(events):
        mixed.append(event)
        if number % every == 0:
            mixed.append(flow(event.ts, event.branch))
    return mixed


def write_two_writers(data: Path, events: list[Event], chunk: int = 40) -> None:
    """Alternate chunks between two writers, so reading order is not time order."""
    with (
        EventLog(data, "w1", durability="none") as one,
        EventLog(data, "w2", durability="none") as two,
    ):
        for number, start in enumerate(range(0, len(events), chunk)):
            (one if number % 2 == 0 else two).append(events[start : start + chunk])


def feed_all(store: AlertStore, data: Path, offsets: dict[str, int], max_events: int = 97) -> None:
    """What the live feed does: small batches (several writers each) into ``apply``."""
    for batch in read_to_end(data, offsets, max_events=max_events):
        store.apply(batch.events, batch.offsets)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def open_store(data: Path, name: str = "alerts") -> AlertStore:
    return AlertStore.open(data / "projections" / f"{name}.sqlite", data)


def test_rebuilt_and_restarted_stores_equal_the_incremental_one(data: Path) -> None:
    events = with_flows(lifecycle(START, 300))
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    write_two_writers(data, first)
    incremental, restarted = open_store(data, "incremental"), open_store(data, "restarted")
    feed_all(incremental, data, {})
    feed_all(restarted, data, {})
    restarted.close()
    write_two_writers(data, second)
    feed_all(incremental, data, incremental.offsets)
    # A restart: the store reads on from its own position, then the replica's feed starts
    # from its older snapshot (here: the start of the log) and repeats what the store has.
    restarted = open_store(data, "restarted")
    assert restarted.catch_up() > 0
    feed_all(restarted, data, {})
    rebuilt = open_store(data, "rebuilt")
    rebuilt.catch_up()
    expected = dump(incremental)
    assert len(expected["alerts"]) == 300 and expected["suppressions"]
    assert dump(rebuilt) == expected
    assert dump(restarted) == expected
    assert restarted.offsets == rebuilt.offsets == incremental.offsets


def test_the_position_is_saved_with_the_rows(data: Path) -> None:
    write_two_writers(data, [opened(START, "a1"), flow(START, "hq")])
    store = open_store(data)
    feed_all(store, data, {})
    offsets = store.offsets
    del store  # no close: what a crash leaves
    reopened = open_store(data)
    assert reopened.offsets == offsets
    assert reopened.get("a1") is not None
    assert reopened.catch_up() == 0  # nothing after the saved position


def test_a_failed_write_keeps_the_old_position_and_is_retried(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(data)
    write_two_writers(data, [opened(START, "a1")])
    feed_all(store, data, {})
    before = store.offsets
    # A real SQLite error on the next write (as a full disk gives).
    store._db.execute(
        "CREATE TEMP TRIGGER fail BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'disk full'); END"  # noqa: E501
    )
    with EventLog(data, "w1", durability="none") as writer:
        writer.append([opened(START + 1, "a2"), acknowledged(START + 2, "a1")])
    with caplog.at_level(logging.ERROR, logger="netmon.app.projections.alert_store"):
        feed_all(store, data, before)
    assert "2 alert events not saved, kept to retry" in caplog.text
    other = open_store(data, "alerts")  # a second connection sees what is committed
    assert other.offsets == before and other.get("a2") is None
    store._db.execute("DROP TRIGGER fail")
    with EventLog(data, "w1", durability="none") as writer:
        writer.append([flow(START + 3, "hq")])
    feed_all(store, data, store.offsets)  # a batch of flows only: the retry goes with it
    record = other.get("a1")
    assert other.get("a2") is not None and record is not None and record.state == "acknowledged"
    assert other._load_position()[0] == store.offsets


def test_events_about_an_alert_not_opened_yet_wait_for_it(data: Path) -> None:
    store = open_store(data)
    store.apply([acknowledged(START + 5, "a1"), updated(START + 6, "a1", 1, 40)], {"s": 1})
    assert store.get("a1") is None
    store.apply([suppressed(START + 1, START + 9000, entity="*")], {"s": 2})
    store.apply([flow(START, "hq"), opened(START, "a1", count=20)], {"s": 3})
    record = store.get("a1")
    assert record is not None
    assert (record.state, record.count, record.count_at_ack) == ("acknowledged", 40, 20)
    assert record.suppressed_until == START + 9000
    assert dump(store)["pending"] == []


def test_flows_are_skipped_and_only_move_the_position(data: Path) -> None:
    store = open_store(data)
    assert store.apply([flow(START + i, "hq") for i in range(100)], {"seg": 100}) == []
    assert store.offsets == {"seg": 100} and store.folded == 0
    assert dump(store)["alerts"] == []


def fill(store: AlertStore) -> None:
    """130 alerts: severities, counts and last-seen times all different enough to sort."""
    events: list[Event] = []
    for number in range(130):
        ts = START + number * 10
        severity = ("low", "medium", "high", "critical")[number % 4]
        branch = ("hq", "lab")[number % 2]
        events.append(
            opened(
                ts,
                f"a{number:03d}",
                rule=("scan", "guess")[number % 3 == 0],
                entity=f"10.0.0.{number}",
                severity=severity,
                branch=branch,
                count=(number * 37) % 101,
            )
        )
        if number % 5 == 0:
            events.append(acknowledged(ts + 1, f"a{number:03d}", branch))
        if number % 7 == 0:
            events.append(resolved(ts + 2, f"a{number:03d}", branch))
    events.append(suppressed(START, NOW + 600, rule="guess", entity="*", branch="lab"))
    events.append(suppressed(START, NOW + 600, rule="scan", entity="10.0.0.1", branch="lab"))
    store.apply(events, {"s": 1})


@pytest.mark.parametrize("sort", ["severity", "last_seen", "count"])
def test_cursor_pages_walk_every_alert_once_in_order(data: Path, sort: str) -> None:
    store = open_store(data)
    fill(store)
    seen: list[Any] = []
    cursor = ""
    while True:
        page = store.page(AlertQuery(sort=sort, cursor=cursor, limit=50), NOW)  # type: ignore[arg-type]
        seen += page.records
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == 130 and len({r.alert_id for r in seen}) == 130
    keys = {
        "severity": lambda r: (SEVERITY_RANK[r.severity], r.last_seen, r.alert_id),
        "last_seen": lambda r: (r.last_seen, r.alert_id),
        "count": lambda r: (r.count, r.last_seen, r.alert_id),
    }[sort]
    assert [r.alert_id for r in seen] == [r.alert_id for r in sorted(seen, key=keys, reverse=True)]


def test_filters_select_what_they_name(data: Path) -> None:
    store = open_store(data)
    fill(store)

    def ids(**params: str) -> set[str]:
        query = parse_query(params, None)
        return {r.alert_id for r in store.page(query, NOW).records} if query.limit else set()

    everything = {r.alert_id: r for r in store.page(AlertQuery(limit=500), NOW).records}
    by_state = {
        state: ids(state=state, limit="500")
        for state in ("open", "acknowledged", "suppressed", "resolved", "unresolved")
    }
    suppressed_ids = {
        a
        for a, r in everything.items()
        if r.branch == "lab" and r.state != "resolved" and (r.rule == "guess" or a == "a001")
    }
    assert by_state["suppressed"] == suppressed_ids and suppressed_ids
    assert by_state["resolved"] == {a for a, r in everything.items() if r.state == "resolved"}
    assert (
        by_state["open"] | by_state["acknowledged"] | by_state["suppressed"]
        == by_state["unresolved"]
    )
    assert not by_state["open"] & by_state["suppressed"]
    assert ids(severity="high", limit="500") == {
        a for a, r in everything.items() if r.severity in ("high", "critical")
    }
    assert ids(rule="guess", limit="500") == {a for a, r in everything.items() if r.rule == "guess"}
    assert ids(entity="10.0.0.7") == {"a007"}
    since, until = str(START + 100), str(START + 200)
    assert ids(since=since, until=until) == {f"a{n:03d}" for n in range(10, 20)}
    lab = store.page(AlertQuery(branches=("lab",), limit=500), NOW).records
    assert {r.branch for r in lab} == {"lab"} and len(lab) == 65
    assert store.page(AlertQuery(branches=()), NOW).records == []


def test_counts_by_state_and_severity(data: Path) -> None:
    store = open_store(data)
    fill(store)
    records = store.page(AlertQuery(limit=500), NOW).records
    counts = store.counts(None, NOW)
    assert sum(counts.by_state.values()) == 130
    assert counts.by_state["resolved"] == sum(r.state == "resolved" for r in records)
    active = [r for r in records if r.state != "resolved" and r.suppressed_until <= NOW]
    assert sum(counts.by_severity.values()) == len(active)
    assert counts.by_severity["critical"] == sum(r.severity == "critical" for r in active)
    lab = store.counts(["lab"], NOW)
    assert sum(lab.by_state.values()) == 65 and lab.by_state["suppressed"] > 0
    later = store.counts(["lab"], NOW + 3600)  # the suppression has run out
    assert later.by_state["suppressed"] == 0 and later.by_state["open"] > lab.by_state["open"]
    assert store.rules(["lab"]) == ["guess", "scan"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cursor": "%%%"}, "cursor: not a cursor"),
        ({"cursor": "bm90IG1zZ3BhY2s"}, "cursor: not a cursor"),
        ({"state": "closed"}, "state must be one of"),
        ({"severity": "urgent"}, "severity must be one of"),
        ({"sort": "ts"}, "sort must be one of"),
        ({"limit": "0"}, "limit must be between 1 and 500"),
        ({"since": "yesterday"}, "since must be UNIX seconds"),
        ({"until": "nan"}, "until must be a finite number"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(
    params: dict[str, str], message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(params, None)


def test_a_cursor_of_another_sort_is_refused(data: Path) -> None:
    store = open_store(data)
    fill(store)
    cursor = store.page(AlertQuery(sort="count", limit=10), NOW).next_cursor
    assert cursor is not None
    with pytest.raises(QueryError, match="made for another sort"):
        parse_query({"cursor": cursor, "sort": "severity"}, None)


def test_an_unusable_file_is_set_aside_and_rebuilt(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_two_writers(data, [opened(START, "a1")])
    path = data / "projections" / "alerts.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.ERROR, logger="netmon.app.projections.alert_store"):
        store = open_store(data)
    assert "unusable" in caplog.text and (path.parent / "alerts.sqlite.corrupt-1").exists()
    store.catch_up()
    assert store.get("a1") is not None
    with pytest.raises(sqlite3.Error):
        sqlite3.connect(path.parent / "alerts.sqlite.corrupt-1").execute("SELECT * FROM alerts")
