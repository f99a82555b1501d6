"""Projections are functions of the events: order, batching and rebuilds do not change them."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon.app.projections import agents, recent, summary, top
from netmon.app.projections.brief import FlowBrief
from netmon.app.projections.buckets import DAY, HOUR, MINUTE, WEEK
from netmon.app.projections.runner import (
    MAX_TS,
    MIN_TS,
    ProjectionRunner,
    ProjectionSnapshot,
    apply_all,
)
from netmon.storage.contract.events import FlowObserved
from tests.live.factory import flow, heartbeat, mixed_stream

START = 1_800_000_000.0


def fold(events: list) -> ProjectionSnapshot:
    state = ProjectionSnapshot()
    apply_all(state, events)
    return state


def test_state_does_not_depend_on_read_order() -> None:
    events = mixed_stream(START, 3000)
    in_order = fold(events)
    shuffled = list(events)
    random.Random(1).shuffle(shuffled)
    assert fold(shuffled) == in_order
    assert in_order.summary.branches and in_order.top.branches and in_order.agents.agents


def test_summary_counts_match_a_brute_force_count() -> None:
    events = mixed_stream(START, 2000)
    state = fold(events).summary
    watermark = max(event.ts for event in events)
    hour_cutoff = int(watermark // HOUR) * HOUR - WEEK + HOUR
    minute_cutoff = int(watermark // MINUTE) * MINUTE - DAY + MINUTE
    for branch in ("hq", "lab"):
        flows = [e for e in events if isinstance(e, FlowObserved) and e.branch == branch]
        in_week = [e for e in flows if e.ts >= hour_cutoff]
        in_day = [e for e in flows if e.ts >= minute_cutoff]
        hours = state.branches[branch].hours.values()
        minutes = state.branches[branch].minutes.values()
        assert sum(c.flows for c in hours) == len(in_week)
        assert sum(c.bytes for c in hours) == sum(
            e.src2dst_bytes + e.dst2src_bytes for e in in_week
        )
        assert sum(c.packets for c in minutes) == sum(
            e.src2dst_packets + e.dst2src_packets for e in in_day
        )
        assert min(state.branches[branch].minutes) >= minute_cutoff


def test_summary_view_windows_follow_the_clock() -> None:
    events = [flow(START + i * 60.0) for i in range(120)]
    state = fold(events).summary
    now = START + 119 * 60.0
    view = summary.view(state, ["hq"], now)
    assert view["last_24h"]["flows"] == 120
    assert len(view["per_minute"]) == 120
    later = summary.view(state, ["hq"], now + DAY)  # a day on, the minute series is empty
    assert later["last_24h"]["flows"] == 0 and later["last_7d"]["flows"] == 120
    assert summary.view(state, ["nowhere"], now)["last_7d"]["flows"] == 0


def test_events_older_than_the_window_are_dropped() -> None:
    old, new = flow(START), flow(START + WEEK + HOUR)
    state = fold([old, new]).summary
    assert sum(c.flows for c in state.branches["hq"].hours.values()) == 1
    # The same events in the other order: the old one is ignored on arrival.
    assert fold([new, old]).summary == state


def test_critical_events_are_counted_by_kind() -> None:
    events = mixed_stream(START, 1500)
    view = summary.view(fold(events).summary, ["hq", "lab"], max(e.ts for e in events))
    kinds = view["last_7d"]["critical"]
    assert kinds.get("critical_port", 0) > 0 and kinds.get("alert", 0) > 0


def test_top_talkers_are_exact_below_the_cap() -> None:
    rng = random.Random(3)
    events = [flow(START + i, rng=rng) for i in range(2000)]
    view = top.view(fold(events).top, ["hq"], START + 2000, hours=24, k=3)
    by_ip: dict[str, int] = {}
    for event in events:
        by_ip[event.dst_ip] = by_ip.get(event.dst_ip, 0) + event.src2dst_bytes + event.dst2src_bytes
    expected = sorted(by_ip.items(), key=lambda item: (item[1], item[0]), reverse=True)[:3]
    assert [(row["key"], row["bytes"]) for row in view["dst_ip"]["by_bytes"]] == expected
    assert sum(row["flows"] for row in view["dst_port"]["by_flows"]) <= 2000


def test_top_memory_is_bounded_and_heavy_hitters_survive() -> None:
    heavy = [flow(START + i / 100, rng=random.Random(i)) for i in range(300)]
    heavy = [FlowObserved(**{**_fields(e), "src_ip": "10.9.9.9"}) for e in heavy]
    scan = [
        FlowObserved(**{**_fields(e), "src_ip": f"172.16.{i // 250}.{i % 250}"})
        for i, e in enumerate(flow(START + 1 + i / 100) for i in range(5000))
    ]
    state = fold(heavy + scan).top
    bucket = state.branches["hq"][int(START // HOUR) * HOUR]
    assert len(bucket["src_ip"]) <= top.PRUNE_AT
    view = top.view(state, ["hq"], START + 100, k=1)
    assert view["src_ip"]["by_flows"][0] == {
        "key": "10.9.9.9",
        "flows": 300,
        "bytes": sum(e.src2dst_bytes + e.dst2src_bytes for e in heavy),
    }


def _fields(event: FlowObserved) -> dict:
    return {name: getattr(event, name) for name in event.__struct_fields__}


def test_agents_keep_the_newest_heartbeat_whatever_the_order() -> None:
    beats = [heartbeat(START + i, spool_batches=i, lag_s=float(i)) for i in range(10)]
    forward, backward = fold(beats).agents, fold(beats[::-1]).agents
    assert forward == backward
    agent = forward.agents["agent-1"]
    assert (agent.spool_batches, agent.lag_s, agent.last_seen) == (9, 9.0, START + 9)
    rows = agents.view(forward, None, START + 30, timeout_s=60)
    assert rows[0]["connected"] is True
    assert agents.view(forward, None, START + 100, timeout_s=60)[0]["connected"] is False
    assert agents.view(forward, {"other"}, START, timeout_s=60) == []


def test_recent_keeps_the_newest_critical_events_once() -> None:
    events = [flow(START + i, critical=True) for i in range(recent.RECENT_PER_BRANCH + 20)]
    state = recent.RecentState()
    for event in events + events[-5:]:  # a replayed tail is kept once
        recent.apply(state, event)
    kept = recent.view(state, ["hq"])
    assert [e.id for e in kept] == [e.id for e in events[-recent.RECENT_PER_BRANCH :]]
    recent.apply(state, flow(START + 500))  # not critical: not kept
    assert len(recent.view(state, ["hq"])) == recent.RECENT_PER_BRANCH


def test_snapshot_round_trips_through_its_file(tmp_path: Path) -> None:
    runner = ProjectionRunner(tmp_path / "projections" / "r1.msgpack")
    runner.apply(mixed_stream(START, 500), {"seg-a": 123})
    runner.save()
    again = ProjectionRunner(runner.path)
    assert again.load() == runner.state
    assert again.state.offsets == {"seg-a": 123}


@pytest.mark.parametrize("content", [b"", b"\xc1garbage", b"\x81\xa6format\x63"])
def test_an_unreadable_snapshot_is_set_aside_and_rebuilt(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r1.msgpack"
    path.write_bytes(content)
    runner = ProjectionRunner(path)
    with caplog.at_level(logging.ERROR):
        state = runner.load()
    assert state == ProjectionSnapshot() and state.offsets == {}
    assert (tmp_path / "r1.msgpack.corrupt-1").read_bytes() == content
    assert "unreadable" in caplog.text and "rebuilding from the log" in caplog.text


def test_an_event_from_a_wild_clock_is_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wild = flow(START + 1e10)  # year ~2330: would push every real event out of the windows
    events = [flow(START), wild, flow(START + 60)]
    with caplog.at_level(logging.ERROR):
        state = fold(events)
    assert (state.events, state.skipped) == (3, 1)
    assert state.summary.watermark == START + 60
    assert summary.view(state.summary, ["hq"], START + 60)["last_24h"]["flows"] == 2
    assert f"skipped event {wild.id}" in caplog.text and "outside" in caplog.text


# --- batch folding equals folding one by one ------------------------------------------------


def fold_one_by_one(events: list) -> ProjectionSnapshot:
    """The reference: every projection's ``apply``, event by event (the documented meaning)."""
    state = ProjectionSnapshot()
    for event in events:
        state.events += 1
        if not MIN_TS <= event.ts < MAX_TS:
            state.skipped += 1
            continue
        summary.apply(state.summary, event)
        top.apply(state.top, event)
        agents.apply(state.agents, event)
        recent.apply(state.recent, event)
    return state


def fold_in_batches(events: list, cuts: list[int]) -> ProjectionSnapshot:
    state = ProjectionSnapshot()
    bounds = [0, *sorted(cuts), len(events)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        apply_all(state, events[start:end])
    return state


def brief_of(event: FlowObserved) -> FlowBrief:
    """What the live feed decodes a non-critical flow line as."""
    return msgspec.json.decode(msgspec.json.encode(event), type=FlowBrief)


def busy_hour(seed: int, count: int) -> list:
    """Flows, mostly inside one hour and over 512 distinct addresses (so buckets get cut),
    with briefs, two branches, two agents, a wild clock, heartbeats and detections mixed in."""
    rng = random.Random(seed)
    events: list = []
    ts = START + HOUR - 120  # crosses a minute and an hour boundary on the way
    for number in range(count):
        ts += rng.uniform(0.0, 0.2)
        roll = rng.random()
        branch = "hq" if roll < 0.7 else "lab"
        if roll < 0.005:
            events.append(flow(START + 1e10, branch))  # year ~2330: skipped
        elif roll < 0.01:
            events.append(heartbeat(ts, branch, agent_id="agent-2", events_per_s=float(number)))
        else:
            event = flow(ts, branch, rng=rng, critical=roll > 0.99, agent_id=f"agent-{number % 2}")
            event = msgspec.structs.replace(
                event, src_ip=f"10.9.{rng.randrange(8)}.{rng.randrange(256)}"
            )
            events.append(event if event.detections or rng.random() < 0.5 else brief_of(event))
    return events


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 1000),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_folding_in_batches_equals_folding_one_by_one(seed: int, cuts: list[int]) -> None:
    events = busy_hour(seed, 3000)
    expected = fold_one_by_one(events)
    assert fold_in_batches(events, cuts) == expected
    assert expected.skipped > 0 and any(
        len(counts) > top.KEEP for hours in expected.top.branches.values()
        for bucket in hours.values() for counts in bucket.values()
    )  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=300, max_size=700),
)
def test_a_cut_keeps_what_sorting_pairs_would_keep(values: list[tuple[int, int]]) -> None:
    counts = {f"k{number:04d}": entry for number, entry in enumerate(values)}
    by_bytes = sorted([(entry[1], key) for key, entry in counts.items()], reverse=True)
    by_flows = sorted([(entry[0], key) for key, entry in counts.items()], reverse=True)
    keep = {key for _, key in by_bytes[: top.KEEP]} | {key for _, key in by_flows[: top.KEEP]}
    cut = dict(counts)
    top._cut(cut)
    assert cut == {key: entry for key, entry in counts.items() if key in keep}
