"""Small builders of stored events for the dashboard tests (real events, real store)."""

from __future__ import annotations

import itertools
from pathlib import Path

from storage.eventlog import EventLog
from storage.events import (
    AlertOpened,
    Detection,
    DetectionRaised,
    FlowObserved,
    max_severity,
    new_event_id,
)

XSS_DOMAIN = "<img src=x onerror=alert(1)>.evil"
_counter = itertools.count()


def flow(
    ts: float,
    *,
    branch: str = "hq",
    src: str = "10.0.0.5",
    dst: str = "192.0.2.10",
    sport: int = 40000,
    dport: int = 443,
    proto: int = 6,
    domain: str = "",
    detections: tuple[Detection, ...] = (),
) -> FlowObserved:
    """A finished flow at ``ts`` (its id made from ``ts`` like an agent's)."""
    severity = max_severity([d.severity for d in detections])
    return FlowObserved(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        agent_id="agent-1",
        first_seen=ts - 1,
        last_seen=ts,
        src_ip=src,
        src_port=sport + next(_counter) % 1000,
        dst_ip=dst,
        dst_port=dport,
        protocol=proto,
        src2dst_bytes=600,
        dst2src_bytes=1400,
        src2dst_packets=4,
        dst2src_packets=5,
        domain=domain,
        detections=detections,
        severity=severity,
    )


SSH = Detection(kind="critical_port", detail="SSH (22/tcp)", severity="critical", rule="ssh")


def ssh_detection(
    ts: float, *, branch: str = "hq", src: str = "203.0.113.7", domain: str = ""
) -> DetectionRaised:
    """A critical SSH detection raised before its flow ended."""
    return DetectionRaised(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        agent_id="agent-1",
        flow_id=new_event_id(ts),
        src_ip=src,
        src_port=51515,
        dst_ip="10.0.0.22",
        dst_port=22,
        protocol=6,
        detection=SSH,
        domain=domain,
    )


def store(root: Path, events: list) -> None:  # type: ignore[type-arg]
    """Append ``events`` to the real store under ``root`` (one batch)."""
    with EventLog(root, "test-writer", durability="none") as log:
        log.append(events)


def alert_opened(ts: float, *, entity: str = "203.0.113.7", branch: str = "hq") -> AlertOpened:
    """An alert the analysis worker would open for a critical SSH detection."""
    return AlertOpened(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        alert_id="al" + new_event_id(ts)[:20],
        rule="critical_detection",
        entity=entity,
        severity="critical",
        title=f"SSH attempt from {entity}",
    )
