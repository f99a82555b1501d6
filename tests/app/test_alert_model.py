"""The one alert state model: ``fold`` of each lifecycle event, its rules, idempotence, and
independence from the order events are read in."""

from __future__ import annotations

import itertools
import random
from typing import Any

import msgspec

from netmon.app.projections.alert_model import (
    FIRST_IDS,
    NEWEST_IDS,
    AlertEvent,
    AlertRecord,
    fold,
    shown_state,
)
from netmon.storage.contract.events import (
    AlertAcknowledged,
    AlertAssigned,
    AlertEscalated,
    AlertEvidence,
    AlertNoteAdded,
    AlertOpened,
    AlertResolved,
    AlertSuppressed,
    AlertUpdated,
    Severity,
    new_event_id,
)

T0 = 1_796_000_000.0
_ids = itertools.count()


def eid() -> str:
    return f"{next(_ids):032x}"


def opened(severity: Severity = "medium", count: int = 10, **extra: object) -> AlertOpened:
    return AlertOpened(
        id=eid(),
        ts=T0,
        branch="hq",
        alert_id="a1",
        rule="port_scan",
        entity="198.51.100.66",
        severity=severity,
        title="198.51.100.66 scans 10.20.0.9",
        evidence=AlertEvidence(count=count, first_seen=T0 - 5, last_seen=T0, distinct_ports=count),
        evidence_ids=tuple(f"f{i}" for i in range(3)),
        source="behaviour",
        tags=("threat list",),
        **extra,  # type: ignore[arg-type]
    )


def updated(seq: int, count: int, severity: Severity = "none", **extra: object) -> AlertUpdated:
    return AlertUpdated(
        id=eid(),
        ts=T0 + seq,
        branch="hq",
        alert_id="a1",
        seq=seq,
        evidence=AlertEvidence(count=count, first_seen=T0 - 5, last_seen=T0 + seq),
        severity=severity,
        **extra,  # type: ignore[arg-type]
    )


def user(kind: type, ts: float, **fields: object) -> AlertEvent:
    return kind(id=eid(), ts=ts, branch="hq", alert_id="a1", by="ana", **fields)  # type: ignore[no-any-return]


def fold_all(events: list[AlertEvent]) -> AlertRecord | None:
    record: AlertRecord | None = None
    for event in events:
        record = fold(record, event)
    return record


def shown(record: AlertRecord | None) -> dict[str, Any]:
    """What readers see (the fold's own facts and the newest event time left out)."""
    assert record is not None
    fields = msgspec.structs.asdict(record)
    del fields["facts"], fields["updated"]
    return fields


def test_opened_creates_the_record_once() -> None:
    first = opened()
    record = fold(None, first)
    assert record is not None
    assert (record.state, record.severity, record.opened_severity) == ("open", "medium", "medium")
    assert (record.count, record.last_seen, record.source) == (10, T0, "behaviour")
    assert fold(record, opened(severity="critical")) is record  # a second AlertOpened: ignored


def test_events_before_the_alert_opened_leave_nothing() -> None:
    assert fold(None, user(AlertAcknowledged, T0)) is None
    assert fold(None, updated(1, 20)) is None


def test_updates_replace_evidence_raise_severity_and_never_lower_it() -> None:
    record = fold_all(
        [
            opened(),
            updated(1, 50, "high", reason="count passed 4x", tags=("critical port",)),
            updated(2, 80, "low", title="198.51.100.66 scans 500 ports"),
        ]
    )
    assert record is not None
    assert (record.count, record.severity, record.updates) == (80, "high", 2)
    assert record.title == "198.51.100.66 scans 500 ports"
    assert record.tags == ("critical port", "threat list")  # sorted: any order gives the same
    assert record.last_seen == T0 + 2
    (raised,) = record.escalations
    assert (raised.by, raised.severity, raised.reason) == ("rule", "high", "count passed 4x")


def test_a_repeated_update_seq_changes_nothing() -> None:
    second = updated(2, 60)
    record = fold_all([opened(), updated(1, 50), second])
    assert record is not None
    replayed = msgspec.structs.replace(second, id=eid())  # written again after a crash
    assert fold(record, replayed) is record
    assert fold(record, second) is record


def test_an_update_read_late_keeps_the_newest_evidence() -> None:
    in_order = fold_all([opened(), updated(1, 50), updated(2, 60)])
    late = fold_all([opened(), updated(2, 60), updated(1, 50)])
    assert in_order == late and late is not None and late.count == 60


def test_the_evidence_sample_keeps_the_first_and_the_newest_ids() -> None:
    ids = [new_event_id(T0 + n) for n in range(120)]  # ids start with their time
    first = msgspec.structs.replace(opened(), evidence_ids=tuple(ids[:3]))
    events: list[AlertEvent] = [first]
    events += [
        updated(seq, seq, evidence_ids=tuple(ids[seq * 2 + 1 : seq * 2 + 3]))
        for seq in range(1, 59)
    ]
    record = fold_all(events)
    assert record is not None
    assert record.evidence_ids == (*ids[:FIRST_IDS], *ids[119 - NEWEST_IDS : 119])
    random.Random(3).shuffle(events)
    assert fold_all([first, *events]) == record


def test_acknowledgement_counts_what_arrives_after_it() -> None:
    start, ack, update = opened(), user(AlertAcknowledged, T0 + 0.5, note="mine"), updated(1, 25)
    record = fold_all([start, ack, update])
    assert record is not None
    assert (record.state, record.acknowledged_by, record.count_at_ack) == (
        "acknowledged",
        "ana",
        10,
    )
    assert record.new_since_ack == 15
    assert record.notes[-1].text == "mine"
    second = msgspec.structs.replace(user(AlertAcknowledged, T0 + 2), by="bob")
    assert shown(fold(record, second)) == shown(record)  # the first acknowledgement holds
    # Read in the other order (the ack on one replica, the update from the worker): the same.
    assert fold_all([start, update, ack]) == record


def test_after_resolve_only_notes_are_taken() -> None:
    record = fold_all([opened(), user(AlertResolved, T0 + 1, note="false positive")])
    assert record is not None
    assert (record.state, record.resolved_by, record.resolution) == (
        "resolved",
        "ana",
        "false positive",
    )
    for late in (
        user(AlertAcknowledged, T0 + 2),
        user(AlertEscalated, T0 + 2, severity="critical"),
        user(AlertAssigned, T0 + 2, assignee="bob"),
        user(AlertResolved, T0 + 3),
    ):
        assert shown(fold(record, late)) == shown(record)
    # An acknowledgement timed before the resolution but read after it still counts.
    early = fold(record, user(AlertAcknowledged, T0 + 0.5))
    assert early is not None and (early.state, early.acknowledged_at) == ("resolved", T0 + 0.5)
    noted = fold(record, user(AlertNoteAdded, T0 + 4, note="ticket 4711 closed"))
    assert noted is not None and noted.notes[-1].text == "ticket 4711 closed"


def test_escalation_raises_severity_and_records_who() -> None:
    escalate = user(AlertEscalated, T0 + 1, severity="critical", note="seen at two sites")
    record = fold_all([opened(), escalate])
    assert record is not None
    assert record.severity == "critical" and record.opened_severity == "medium"
    (step,) = record.escalations
    assert (step.by, step.severity, step.reason) == ("ana", "critical", "seen at two sites")
    assert fold(record, escalate) is record  # read twice
    flagged = fold(record, user(AlertEscalated, T0 + 2, severity="low"))
    assert flagged is not None and flagged.severity == "critical" and len(flagged.escalations) == 2


def test_the_newest_assignment_wins_whatever_the_read_order() -> None:
    older = user(AlertAssigned, T0 + 1, assignee="bob")
    newer = user(AlertAssigned, T0 + 2, assignee="cleo")
    one = fold_all([opened(), older, newer])
    other = fold_all([opened(), newer, older])
    assert one == other and one is not None and one.assignee == "cleo"


def test_suppression_shows_while_it_runs_and_not_on_resolved_alerts() -> None:
    def suppressed(
        until: float, entity: str = "198.51.100.66", branch: str = "hq"
    ) -> AlertSuppressed:
        return AlertSuppressed(
            id=eid(),
            ts=T0 + 1,
            branch=branch,
            rule="port_scan",
            entity=entity,
            until=until,
            by="ana",
            reason="pentest window",
        )

    record = fold_all([opened(), suppressed(T0 + 100, entity="*")])
    assert record is not None and record.suppressed_until == T0 + 100
    assert record.updated == T0  # a suppression is not an event about this one alert
    assert shown_state(record, T0 + 50) == "suppressed"
    assert shown_state(record, T0 + 101) == "open"
    shorter = fold(record, suppressed(T0 + 10))
    assert shorter is record  # the expiry only grows
    elsewhere = fold(fold_all([opened()]), suppressed(T0 + 100, branch="lab"))
    assert elsewhere is not None and elsewhere.suppressed_until == 0.0
    closed = fold(record, user(AlertResolved, T0 + 2))
    assert closed is not None and shown_state(closed, T0 + 50) == "resolved"
    assert closed.suppressed_until == 0.0
    assert fold(closed, suppressed(T0 + 500)) is closed


def test_every_event_folded_twice_equals_once() -> None:
    events: list[AlertEvent] = [
        opened(),
        updated(1, 40, "high", evidence_ids=("x1",)),
        user(AlertAcknowledged, T0 + 2, note="on it"),
        user(AlertNoteAdded, T0 + 3, note="blocking at the edge"),
        user(AlertEscalated, T0 + 4, severity="critical"),
        user(AlertAssigned, T0 + 5, assignee="bob"),
        updated(2, 90, evidence_ids=("x2",)),
        user(AlertResolved, T0 + 6, note="blocked"),
    ]
    once = fold_all(events)
    twice = fold_all([event for event in events for _ in range(2)])
    replayed_suffix = fold_all(events + events[3:])
    assert once == twice == replayed_suffix


def test_any_reading_order_gives_the_same_record() -> None:
    """Writers are read in turn: any order that reads the AlertOpened first is possible."""
    events: list[AlertEvent] = [
        updated(1, 40, "high", evidence_ids=("x1",), tags=("critical port",)),
        user(AlertAcknowledged, T0 + 1.5, note="on it"),
        user(AlertAcknowledged, T0 + 1.7, note="me too"),
        user(AlertNoteAdded, T0 + 3, note="blocking at the edge"),
        user(AlertEscalated, T0 + 4, severity="critical"),
        user(AlertAssigned, T0 + 5, assignee="bob"),
        user(AlertAssigned, T0 + 5.5, assignee="cleo"),
        updated(2, 90, evidence_ids=("x2",), title="grew"),
        user(AlertResolved, T0 + 6, note="blocked"),
        user(AlertAssigned, T0 + 7, assignee="late"),
        user(AlertResolved, T0 + 8, note="again"),
    ]
    expected = fold_all([opened(), *events])
    assert expected is not None
    assert (expected.assignee, expected.severity, expected.count_at_ack) == ("cleo", "critical", 40)
    rng = random.Random(15)
    for _ in range(200):
        rng.shuffle(events)
        assert fold_all([opened(), *events]) == expected
