"""Windows: bucketing by event time, closing by watermark or wall clock, late flows, top lists."""

from __future__ import annotations

from netmon.app.analysis.windows import WindowAggregator, top
from netmon.storage.contract.events import Detection, DetectionRaised, FlowObserved, new_event_id

T = 1_800_000_000.0  # divisible by 300


def flow(
    ts: float,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    size: int = 100,
    domain: str = "",
    branch: str = "b",
) -> FlowObserved:
    return FlowObserved(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        agent_id="a",
        first_seen=ts - 1,
        last_seen=ts,
        src_ip=src,
        src_port=1234,
        dst_ip=dst,
        dst_port=80,
        protocol=6,
        src2dst_packets=2,
        src2dst_bytes=size,
        dst2src_packets=1,
        domain=domain,
    )


def test_windows_close_in_order_once_events_pass_the_grace() -> None:
    agg = WindowAggregator(300, 60, top_n=2)
    agg.add_flow(flow(T + 10), "benign", "")
    agg.add_flow(flow(T + 20, src="10.0.0.9", size=5000), "attack", "portscan")
    agg.add_flow(flow(T + 310, branch="c"), "benign", "")  # another branch does not close b
    assert agg.due() == []
    agg.add_flow(flow(T + 359), "benign", "")
    assert agg.due() == []  # 359 < 300 + 60
    agg.add_flow(flow(T + 360), "unknown", "")
    [closed] = agg.due()
    event = agg.summarized(closed, now=T + 400)
    assert (event.window_start, event.window_end, event.branch) == (T, T + 300, "b")
    assert event.flows == 2 and event.bytes == 5100 and event.packets == 6
    assert event.labels == {"benign": 1, "attack": 1} and event.attack_types == {"portscan": 1}
    assert [t.key for t in event.top_talkers] == ["10.0.0.2", "10.0.0.9"]
    assert len(event.evidence_ids) == 1  # the attack flow


def test_wall_clock_closes_a_quiet_branch_and_later_flows_are_late() -> None:
    agg = WindowAggregator(300, 60)
    agg.add_flow(flow(T + 5), "benign", "")
    assert agg.due(now=T + 359) == []
    assert len(agg.due(now=T + 360)) == 1
    agg.add_flow(flow(T + 100), "benign", "")
    assert agg.state.late_flows == 1 and agg.state.open == {}


def test_critical_detections_are_counted_and_cited_first() -> None:
    agg = WindowAggregator(300, 0)
    agg.add_flow(flow(T + 1), "attack", "synflood")
    raised = DetectionRaised(
        id=new_event_id(T + 2),
        ts=T + 2,
        branch="b",
        agent_id="a",
        flow_id="f" * 32,
        src_ip="10.0.0.1",
        src_port=1,
        dst_ip="10.0.0.2",
        dst_port=23,
        protocol=6,
        detection=Detection(kind="critical_port", detail="Telnet", severity="critical"),
    )
    agg.add_detection(raised)
    [closed] = agg.due(now=T + 300)
    event = agg.summarized(closed, now=T + 300)
    assert event.critical_detections == 1 and event.evidence_ids[0] == raised.id


def test_domains_and_top_order_are_stable() -> None:
    agg = WindowAggregator(300, 0, top_n=3)
    for i, domain in enumerate(["a.test", "b.test", "a.test", ""]):
        agg.add_flow(flow(T + i, size=10 * (i + 1), domain=domain), "benign", "")
    [closed] = agg.due(now=T + 300)
    event = agg.summarized(closed, now=T + 300)
    assert [(t.key, t.flows, t.bytes) for t in event.top_domains] == [
        ("a.test", 2, 40),
        ("b.test", 1, 20),
    ]
    assert top({"x": [1, 5], "y": [2, 5], "z": [1, 5]}, 2)[0].key == "y"
