"""The classifier's context: per-source sliding windows, their figures and their bounds."""

from __future__ import annotations

import msgspec
import pytest

from netmon.app.analysis.context import CONTEXT_NAMES, ContextSettings, ContextTracker
from netmon.storage.contract.events import FlowObserved

T0 = 1_800_000_000.0
SYN, RST, ACK, PSH = 0x02, 0x04, 0x10, 0x08


def refused(src: str, port: int, t: float, dst: str = "10.0.0.9") -> FlowObserved:
    """One SYN answered by RST/ACK: a closed port (or a scanner's probe of one)."""
    return FlowObserved(
        id=f"{src}-{port}-{t}",
        ts=t + 1,
        branch="hq",
        agent_id="a",
        first_seen=t,
        last_seen=t,
        src_ip=src,
        src_port=40000,
        dst_ip=dst,
        dst_port=port,
        protocol=6,
        src2dst_packets=1,
        dst2src_packets=1,
        src2dst_tcp_flags=SYN,
        dst2src_tcp_flags=RST | ACK,
    )


def session(src: str, t: float, dst: str = "10.0.0.9") -> FlowObserved:
    """A connection that carried data both ways."""
    return msgspec.structs.replace(
        refused(src, 443, t, dst),
        src2dst_packets=8,
        dst2src_packets=8,
        src2dst_payload_bytes=700,
        dst2src_payload_bytes=9000,
        src2dst_tcp_flags=SYN | ACK | PSH,
        dst2src_tcp_flags=SYN | ACK | PSH,
    )


def figures(values: list[float]) -> dict[str, float]:
    return dict(zip(CONTEXT_NAMES, values, strict=True))


def test_a_scan_shows_many_ports_and_failures_a_lone_refusal_does_not() -> None:
    tracker = ContextTracker(ContextSettings(max_flows_per_source=1000))
    scan = [tracker.observe(refused("10.1.1.1", port, T0 + port * 0.01)) for port in range(1, 201)]
    lone = tracker.observe(refused("10.2.2.2", 8080, T0 + 3))
    last = figures(scan[-1])
    assert last["ctx_flows"] == 200 and last["ctx_dst_ports"] == 200
    assert last["ctx_dst_hosts"] == 1 and last["ctx_failed_share"] == 1.0
    assert last["ctx_flows_per_s"] == pytest.approx(200 / 1.99, rel=1e-3)
    assert figures(lone) == {
        "ctx_flows": 1,
        "ctx_dst_ports": 1,
        "ctx_dst_hosts": 1,
        "ctx_failed_share": 1.0,
        "ctx_empty_share": 1.0,
        "ctx_flows_per_s": 1.0,
        "ctx_names_share": 0.0,  # no name
    }


def test_a_refusal_amid_working_sessions_is_a_small_share() -> None:
    tracker = ContextTracker()
    for i in range(9):
        tracker.observe(session("10.1.1.1", T0 + i, dst=f"10.0.0.{i % 3 + 1}"))
    context = figures(tracker.observe(refused("10.1.1.1", 8080, T0 + 9)))
    assert context["ctx_flows"] == 10 and context["ctx_dst_hosts"] == 4  # 3 + the refusing one
    assert context["ctx_failed_share"] == pytest.approx(0.1)
    assert context["ctx_empty_share"] == pytest.approx(0.1)


def test_flows_older_than_the_window_leave_it() -> None:
    tracker = ContextTracker(ContextSettings(window_s=60))
    for port in range(50):
        tracker.observe(refused("10.1.1.1", port + 1, T0 + port * 0.1))
    later = figures(tracker.observe(refused("10.1.1.1", 9999, T0 + 70)))
    assert later["ctx_flows"] == 1 and later["ctx_dst_ports"] == 1


def test_the_same_address_in_two_branches_is_two_sources() -> None:
    tracker = ContextTracker()
    for port in range(20):
        tracker.observe(refused("10.1.1.1", port + 1, T0))
    other = msgspec.structs.replace(refused("10.1.1.1", 1, T0), branch="paris")
    assert figures(tracker.observe(other))["ctx_flows"] == 1


def test_memory_is_bounded_by_both_caps() -> None:
    settings = ContextSettings(max_sources=100, max_flows_per_source=16)
    tracker = ContextTracker(settings)
    for n in range(1000):
        for k in range(40):
            tracker.observe(refused(f"10.{n // 256}.{n % 256}.1", k + 1, T0 + n + k * 0.01))
    assert len(tracker) == 100
    assert tracker.evicted == 900
    assert tracker.remembered_flows() == 100 * 16
    # a saturated source reports the cap, not more
    assert figures(tracker.observe(refused("10.3.231.1", 99, T0 + 1000)))["ctx_dst_ports"] == 16


def test_the_most_recently_seen_source_survives_eviction() -> None:
    tracker = ContextTracker(ContextSettings(max_sources=3))
    for t, src in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.4"]):
        tracker.observe(refused(src, t + 1, T0 + t))
    # 10.0.0.2 was the least recently seen when 10.0.0.4 arrived
    assert figures(tracker.observe(refused("10.0.0.1", 50, T0 + 9)))["ctx_flows"] == 3
    assert figures(tracker.observe(refused("10.0.0.2", 50, T0 + 9)))["ctx_flows"] == 1


def test_many_unique_names_stand_out_from_one_repeated_name() -> None:
    tracker = ContextTracker()

    def lookup(src: str, name: str, t: float) -> list[float]:
        flow = msgspec.structs.replace(session(src, t), protocol=17, dst_port=53, domain=name)
        return tracker.observe(flow)

    for i in range(20):
        repeated = figures(lookup("10.1.1.1", "img.cdn.example", T0 + i))
        unique = figures(lookup("10.2.2.2", f"{i:04x}a9e1.t.tunnel.example", T0 + i))
    assert repeated["ctx_names_share"] == pytest.approx(1 / 20)
    assert unique["ctx_names_share"] == 1.0
