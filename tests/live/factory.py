"""Builders of realistic events for the live tests and bench (real Structs, no mocks)."""

from __future__ import annotations

import random

from netmon.storage.contract.events import (
    AgentHeartbeat,
    AlertOpened,
    Detection,
    DetectionRaised,
    FlowObserved,
    new_event_id,
)

EVIL_DOMAIN = "<img src=x onerror=alert(1)>.evil"


def flow(
    ts: float,
    branch: str = "hq",
    *,
    rng: random.Random | None = None,
    critical: bool = False,
    domain: str = "",
    agent_id: str = "agent-1",
) -> FlowObserved:
    """A FlowObserved at ``ts``; ``critical`` adds a critical-port detection."""
    rng = rng or random.Random(int(ts * 1000))
    detections = (
        (Detection(kind="critical_port", detail="SSH (22/tcp)", severity="critical", rule="ssh"),)
        if critical
        else ()
    )
    return FlowObserved(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        agent_id=agent_id,
        first_seen=ts - 1.0,
        last_seen=ts - 0.1,
        src_ip=f"10.0.{rng.randrange(4)}.{rng.randrange(1, 40)}",
        src_port=rng.randrange(1024, 65535),
        dst_ip=f"203.0.113.{rng.randrange(1, 30)}",
        dst_port=22 if critical else rng.choice((53, 80, 443, 8080)),
        protocol=6,
        src2dst_packets=rng.randrange(1, 20),
        src2dst_bytes=rng.randrange(60, 20_000),
        dst2src_packets=rng.randrange(1, 20),
        dst2src_bytes=rng.randrange(60, 50_000),
        domain=domain or rng.choice(("", "example.org", "updates.example.com", "cdn.example.net")),
        detections=detections,
        severity="critical" if critical else "none",
    )


def detection(ts: float, branch: str = "hq", agent_id: str = "agent-1") -> DetectionRaised:
    """A critical DetectionRaised at ``ts``."""
    return DetectionRaised(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        agent_id=agent_id,
        flow_id=new_event_id(ts),
        src_ip="10.0.0.5",
        src_port=40000,
        dst_ip="203.0.113.9",
        dst_port=23,
        protocol=6,
        detection=Detection(
            kind="critical_port", detail="Telnet", severity="critical", rule="telnet"
        ),
    )


def heartbeat(
    ts: float, branch: str = "hq", agent_id: str = "agent-1", **fields: float
) -> AgentHeartbeat:
    """An AgentHeartbeat at ``ts`` with the given counters."""
    return AgentHeartbeat(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        agent_id=agent_id,
        boot_id="boot-1",
        **fields,  # type: ignore[arg-type]
    )


def alert(ts: float, branch: str = "hq") -> AlertOpened:
    """An AlertOpened at ``ts``."""
    return AlertOpened(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        alert_id=new_event_id(ts),
        rule="port_scan",
        entity="10.0.0.5",
        severity="high",
        title="Port scan from 10.0.0.5",
    )


def mixed_stream(
    start: float,
    count: int,
    seed: int = 7,
    branches: tuple[str, ...] = ("hq", "lab"),
    max_gap_s: float = 30.0,
) -> list:
    """``count`` events over time: mostly flows, some critical ones, heartbeats and alerts."""
    rng = random.Random(seed)
    events = []
    ts = start
    for number in range(count):
        ts += rng.uniform(0.0, max_gap_s)
        branch = rng.choice(branches)
        roll = rng.random()
        if roll < 0.02:
            events.append(detection(ts, branch))
        elif roll < 0.04:
            events.append(
                heartbeat(ts, branch, agent_id=f"agent-{branch}", events_per_s=float(number))
            )
        elif roll < 0.05:
            events.append(alert(ts, branch))
        else:
            events.append(flow(ts, branch, rng=rng, critical=roll < 0.06))
    return events
