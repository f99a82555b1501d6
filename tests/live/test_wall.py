"""The wall's rows: one per source and minute, counted right, and never pushed off by a flood;
the same rows whatever order the events are read in."""

from __future__ import annotations

import random

import msgspec
import pytest

from netmon.app.projections import recent, wall, wall_rows
from netmon.app.projections.runner import ProjectionSnapshot, apply_all
from netmon.storage.contract.events import (
    AlertAcknowledged,
    AlertEvidence,
    AlertOpened,
    AlertResolved,
    AlertUpdated,
    Detection,
    DetectionRaised,
    FlowObserved,
    GapReported,
    new_event_id,
)
from tests.live.factory import flow

MINUTE = 1_800_000_000.0  # a multiple of 60: the start of a period
SSH = Detection(kind="critical_port", detail="SSH (22/tcp)", severity="high", rule="ssh")
RDP = Detection(kind="critical_port", detail="RDP (3389/tcp)", severity="critical", rule="rdp")
TELNET = Detection(
    kind="critical_port", detail="Telnet (23/tcp)", severity="critical", rule="telnet"
)
LISTED = Detection(
    kind="suspicious_ip", detail="198.51.100.66 in list demo", severity="critical", rule="demo"
)


def hostile(
    at: float, src: str, dst: str, port: int, *detections: Detection, branch: str = "hq"
) -> FlowObserved:
    """A flow that started at ``at`` (ended a second later) carrying ``detections``."""
    severities = [d.severity for d in detections]
    severity = "critical" if "critical" in severities else "high"
    return msgspec.structs.replace(
        flow(at + 1.0, branch),
        id=new_event_id(at + 1.0),
        first_seen=at,
        src_ip=src,
        dst_ip=dst,
        dst_port=port,
        domain="",
        detections=detections,
        severity=severity,
    )


def raised(
    at: float, src: str, dst: str, port: int, detection: Detection, flow_id: str = ""
) -> DetectionRaised:
    return DetectionRaised(
        id=new_event_id(at),
        ts=at,
        branch="hq",
        agent_id="agent-1",
        flow_id=flow_id or new_event_id(at),
        src_ip=src,
        src_port=50000,
        dst_ip=dst,
        dst_port=port,
        protocol=6,
        detection=detection,
    )


def fold(events: list) -> recent.RecentState:
    state = recent.RecentState()
    for event in events:
        recent.apply(state, event)
    return state


def flood_and_three_criticals() -> list:
    """5,000 high SSH flows from one source to 500 ports of one host, and an RDP and two
    Telnet attempts from three other sources, within one minute (the criticals first)."""
    criticals = [
        hostile(MINUTE + 1, "203.0.113.5", "10.20.0.33", 3389, RDP),
        hostile(MINUTE + 2, "203.0.113.6", "10.20.0.23", 23, TELNET),
        hostile(MINUTE + 3, "192.0.2.7", "10.20.0.23", 23, TELNET),
    ]
    flood = [
        hostile(MINUTE + 5 + i * 0.01, "198.51.100.66", "10.20.0.9", 1000 + i % 500, SSH)
        for i in range(5000)
    ]
    return criticals + flood


def test_a_flood_is_one_row_that_counts_it_and_the_critical_rows_stay() -> None:
    state = fold(flood_and_three_criticals())
    rows = wall_rows.view(state.walls, ["hq"])
    assert [row.entity for row in rows] == [
        "198.51.100.66",
        "192.0.2.7",
        "203.0.113.6",
        "203.0.113.5",
    ]
    flooder = rows[0]
    assert (flooder.flows, flooder.ports, flooder.targets, flooder.severity) == (
        5000,
        500,
        1,
        "high",
    )
    assert flooder.what == "5,000 flows to 500 ports of 10.20.0.9"
    assert flooder.why == "SSH (22/tcp)" and flooder.version == 5000
    assert rows[3].what == "1 flow to port 3389 of 10.20.0.33" and rows[3].why == "RDP (3389/tcp)"
    # Ten more sources, newer: on a wall of 8 rows the newest half stays, and below it the
    # rows that are not critical go first (the flood's row with them), never a critical one.
    others = [hostile(MINUTE + 70 + i, f"10.66.0.{i}", "10.20.0.22", 22, SSH) for i in range(10)]
    for event in others:
        recent.apply(state, event)
    small = wall_rows.view(state.walls, ["hq"], limit=8)
    assert [row.entity for row in small] == [
        *(f"10.66.0.{i}" for i in range(9, 4, -1)),
        "192.0.2.7",
        "203.0.113.6",
        "203.0.113.5",
    ]
    # The JSON feed's raw list is what a flood fills: the wall is what it cannot.
    flooded = recent.view(fold(flood_and_three_criticals()), ["hq"])
    assert all(event.src_ip == "198.51.100.66" for event in flooded)


def test_a_detection_and_the_flow_it_was_raised_for_count_as_one_flow() -> None:
    scan = hostile(MINUTE + 10, "198.51.100.66", "10.20.0.9", 445, LISTED)
    alarm = raised(MINUTE + 10, "198.51.100.66", "10.20.0.9", 445, LISTED, flow_id=scan.id)
    for events in ([alarm], [alarm, scan], [scan, alarm], [scan]):
        (row,) = wall_rows.view(fold(events).walls, ["hq"])
        assert row.flows == 1 and row.what == "1 flow to port 445 of 10.20.0.9"
        assert row.why == "suspicious IP (threat list demo)" and row.severity == "critical"


def test_a_source_makes_one_row_a_minute_and_keeps_its_newest_three() -> None:
    events = [
        hostile(MINUTE + minute * 60 + second, "198.51.100.66", "10.20.0.9", 22, SSH)
        for minute in range(5)
        for second in range(0, 60, 5)
    ]
    rows = wall_rows.view(fold(events).walls, ["hq"])
    assert [row.first for row in rows] == [MINUTE + 240, MINUTE + 180, MINUTE + 120]
    assert {row.flows for row in rows} == {12}
    late = hostile(MINUTE + 30, "198.51.100.66", "10.20.0.9", 22, SSH)  # older than those three
    assert wall_rows.view(fold([*events, late]).walls, ["hq"]) == rows


def test_rows_name_their_spread_and_their_reasons() -> None:
    sweep = [hostile(MINUTE + i, "10.9.0.1", f"10.20.1.{i}", 22, SSH) for i in range(3)]
    (row,) = wall_rows.view(fold(sweep).walls, ["hq"])
    assert row.what == "3 flows to port 22 on 3 hosts"
    wide = [hostile(MINUTE + i / 10, "10.9.0.2", f"10.21.{i}.1", 22, SSH) for i in range(150)]
    (row,) = wall_rows.view(fold(wide).walls, ["hq"])
    assert row.what == "150 flows to port 22 on 100+ hosts" and row.targets == wall.TARGETS_KEPT + 1
    both = hostile(MINUTE, "198.51.100.66", "10.20.0.33", 3389, RDP, LISTED)
    (row,) = wall_rows.view(fold([both]).walls, ["hq"])
    assert row.why == "RDP (3389/tcp), suspicious IP (threat list demo)"
    gap = GapReported(
        id=new_event_id(MINUTE), ts=MINUTE, branch="hq", agent_id="sensor-1", boot_id="b",
        first_seq=1, last_seq=9, batches_dropped=9, events_dropped=4200,
    )  # fmt: skip
    (row,) = wall_rows.view(fold([gap]).walls, ["hq"])
    assert (row.entity, row.what, row.why) == (
        "agent sensor-1",
        "4,200 events dropped by the agent",
        "gap (spool_cap)",
    )


@pytest.mark.parametrize("port", [-1, 65_536, 10**9])
def test_a_port_out_of_range_is_counted_without_a_port(port: int) -> None:
    odd = hostile(MINUTE, "203.0.113.9", "10.20.0.9", port, TELNET)
    (row,) = wall_rows.view(fold([odd]).walls, ["hq"])
    assert (row.flows, row.ports, row.what) == (1, 0, "1 flow to 10.20.0.9")
    assert len(fold([odd]).walls["hq"].activity[f"{int(MINUTE) // 60}|203.0.113.9"].ports) == 0


@pytest.mark.parametrize("first_seen", [float("nan"), float("inf"), -1e300, MINUTE + 600])
def test_a_flow_start_from_a_wild_agent_clock_counts_at_its_export(first_seen: float) -> None:
    wild = msgspec.structs.replace(
        hostile(MINUTE, "203.0.113.9", "10.20.0.9", 23, TELNET), first_seen=first_seen
    )
    (row,) = wall_rows.view(fold([wild]).walls, ["hq"])
    assert (row.first, row.flows) == (wild.ts, 1)


def alert_events() -> list:
    base = {"branch": "hq", "alert_id": "a-1"}
    evidence = AlertEvidence(count=542, distinct_targets=1, distinct_ports=500)
    return [
        AlertOpened(
            id=new_event_id(MINUTE), ts=MINUTE, rule="port_scan", entity="198.51.100.66",
            severity="high", title="Port scan from 198.51.100.66", tags=("threat list",), **base,
        ),
        AlertUpdated(
            id=new_event_id(MINUTE + 30), ts=MINUTE + 30, seq=2, evidence=evidence,
            severity="critical", **base,
        ),
        AlertUpdated(
            id=new_event_id(MINUTE + 20), ts=MINUTE + 20, seq=1,
            evidence=AlertEvidence(count=200, distinct_targets=1, distinct_ports=190), **base,
        ),
        AlertAcknowledged(id=new_event_id(MINUTE + 40), ts=MINUTE + 40, by="admin", **base),
    ]  # fmt: skip


def test_an_alert_row_takes_its_newest_evidence_and_its_state() -> None:
    events = alert_events()
    state = fold(events)
    (row,) = wall_rows.view(state.walls, ["hq"])
    assert (row.kind, row.entity, row.severity, row.state, row.by) == (
        "alert", "198.51.100.66", "critical", "acknowledged", "admin",
    )  # fmt: skip
    assert row.what == "Port scan from 198.51.100.66 (542 events, 500 ports, 1 host)"
    assert row.why == "alert port_scan · threat list" and row.flows == 542
    # A user's action read before the alert itself (another writer's segment) is not lost.
    assert wall_rows.view(fold(events[::-1]).walls, ["hq"]) == [row]
    assert wall_rows.view(fold(events[3:]).walls, ["hq"]) == []  # shown once it is opened
    resolved = AlertResolved(
        id=new_event_id(MINUTE + 50), ts=MINUTE + 50, branch="hq", alert_id="a-1", by="bob"
    )
    (row,) = wall_rows.view(fold([*events, resolved]).walls, ["hq"])
    assert (row.state, row.by) == ("resolved", "bob")


def busy_wall(seed: int) -> list:
    """Past every cap: 80 sources active over 8 minutes (more keys than a branch keeps), a
    flooder active every minute (more rows than a source keeps), detections and alerts."""
    rng = random.Random(seed)
    events: list = []
    for number in range(3000):
        at = MINUTE + rng.uniform(0, 480)
        roll = rng.random()
        if roll < 0.3:
            events.append(hostile(at, "198.51.100.66", "10.20.0.9", rng.randrange(1, 9000), LISTED))
        elif roll < 0.35:
            events.append(raised(at, f"203.0.113.{number % 50}", "10.20.0.33", 3389, RDP))
        else:
            src = f"10.0.{rng.randrange(8)}.{rng.randrange(10)}"
            events.append(hostile(at, src, f"10.20.0.{rng.randrange(40)}", 22, SSH))
    return events + alert_events()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_wall_does_not_depend_on_read_order_even_past_its_caps(seed: int) -> None:
    events = busy_wall(seed)
    in_order = fold(events)
    branch = in_order.walls["hq"]
    assert len(branch.keys) == wall.KEYS_KEPT and len(branch.activity) < wall.KEYS_KEPT
    flooder = [row for row in branch.activity.values() if row.entity == "198.51.100.66"]
    assert (
        len(flooder) == wall.ENTITY_ROWS < len({k for k in branch.keys if k[1] == "198.51.100.66"})
    )
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    assert fold(shuffled).walls == in_order.walls
    batched = ProjectionSnapshot()
    for start in range(0, len(shuffled), 700):
        apply_all(batched, shuffled[start : start + 700])
    assert batched.recent.walls == in_order.walls


def test_the_rows_a_batch_touched_are_pushed_once_each_oldest_first() -> None:
    events = flood_and_three_criticals()
    state = fold(events)
    rows = wall_rows.touched(state.walls, events)
    assert [row.entity for row in rows] == [
        "203.0.113.5",
        "203.0.113.6",
        "192.0.2.7",
        "198.51.100.66",
    ]
    assert rows == wall_rows.view(state.walls, ["hq"])[::-1]
    assert len({row.id for row in rows}) == 4 and all(row.id.startswith("w-") for row in rows)


def test_the_wall_survives_the_snapshot_file_encoding() -> None:
    state = ProjectionSnapshot()
    apply_all(state, busy_wall(4))
    data = msgspec.msgpack.encode(state)
    assert msgspec.msgpack.decode(data, type=ProjectionSnapshot) == state
