"""Builders shared by the store tests: small valid events with predictable ids."""

from __future__ import annotations

from storage.events import FlowObserved

DAY = 86_400.0
T0 = 1_763_683_200.0  # 2025-11-21T00:00:00Z


def flow(
    event_id: str,
    *,
    ts: float = T0 + 3600,
    branch: str = "main",
    src_ip: str = "10.0.0.1",
    dst_ip: str = "192.0.2.10",
    dst_port: int = 443,
    domain: str = "",
) -> FlowObserved:
    """A FlowObserved with just enough fields to be told apart."""
    return FlowObserved(
        id=event_id,
        ts=ts,
        branch=branch,
        agent_id="agent-1",
        first_seen=ts - 1.0,
        last_seen=ts,
        src_ip=src_ip,
        src_port=40_000,
        dst_ip=dst_ip,
        dst_port=dst_port,
        protocol=6,
        src2dst_packets=3,
        src2dst_bytes=180,
        domain=domain,
    )
