"""Builders of alert lifecycle events for the alert projection's tests and bench (real Structs)."""

from __future__ import annotations

import random

from netmon.storage.contract.events import (
    AlertAcknowledged,
    AlertAssigned,
    AlertEvidence,
    AlertNoteAdded,
    AlertOpened,
    AlertResolved,
    AlertSuppressed,
    AlertUpdated,
    Event,
    Severity,
    new_event_id,
)

SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
RULES = ("port_scan", "password_guessing", "beaconing", "detection:critical_port")


def evidence(ts: float, count: int, targets: int = 1, ports: int = 1) -> AlertEvidence:
    return AlertEvidence(
        count=count,
        first_seen=ts - 60,
        last_seen=ts,
        distinct_targets=targets,
        distinct_ports=ports,
        targets=tuple(f"10.20.0.{i + 1}" for i in range(min(targets, 8))),
        ports=tuple(range(20, 20 + min(ports, 8))),
    )


def opened(
    ts: float,
    alert_id: str,
    *,
    rule: str = "port_scan",
    entity: str = "198.51.100.66",
    severity: Severity = "medium",
    branch: str = "hq",
    count: int = 10,
    targets: int = 1,
    ports: int = 10,
) -> AlertOpened:
    return AlertOpened(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        alert_id=alert_id,
        rule=rule,
        entity=entity,
        severity=severity,
        title=f"{entity}: {count} probes to {ports} ports — {rule}",
        evidence=evidence(ts, count, targets, ports),
        evidence_ids=(new_event_id(ts - 1),),
        source="behaviour",
    )


def updated(
    ts: float,
    alert_id: str,
    seq: int,
    count: int,
    *,
    branch: str = "hq",
    severity: Severity = "none",
    ports: int = 10,
) -> AlertUpdated:
    return AlertUpdated(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        alert_id=alert_id,
        seq=seq,
        evidence=evidence(ts, count, 1, ports),
        evidence_ids=(new_event_id(ts - 0.5),),
        severity=severity,
        reason="the count doubled" if severity != "none" else "",
    )


def acknowledged(
    ts: float, alert_id: str, branch: str = "hq", by: str = "ana"
) -> AlertAcknowledged:
    return AlertAcknowledged(
        id=new_event_id(ts), ts=ts, branch=branch, alert_id=alert_id, by=by, note="on it"
    )


def resolved(ts: float, alert_id: str, branch: str = "hq", by: str = "ana") -> AlertResolved:
    return AlertResolved(
        id=new_event_id(ts), ts=ts, branch=branch, alert_id=alert_id, by=by, note="blocked"
    )


def suppressed(
    ts: float, until: float, *, rule: str = "port_scan", entity: str = "*", branch: str = "hq"
) -> AlertSuppressed:
    return AlertSuppressed(
        id=new_event_id(ts),
        ts=ts,
        branch=branch,
        rule=rule,
        entity=entity,
        until=until,
        by="ana",
        reason="pentest window",
    )


def lifecycle(
    start: float,
    alerts: int,
    seed: int = 7,
    branches: tuple[str, ...] = ("hq", "lab"),
    suppress_every: int = 17,
) -> list[Event]:
    """``alerts`` alerts over time, each opened, updated a few times, some acknowledged,
    assigned, noted, resolved; a suppression now and then; in time order."""
    rng = random.Random(seed)
    events: list[Event] = []
    for number in range(alerts):
        ts = start + number * 7.0
        alert_id = f"al{number:06d}"
        branch = branches[number % len(branches)]
        rule = RULES[number % len(RULES)]
        entity = f"198.51.{number % 200}.{number % 251}"
        count = rng.randrange(5, 50)
        events.append(
            opened(
                ts,
                alert_id,
                rule=rule,
                entity=entity,
                branch=branch,
                count=count,
                severity=rng.choice(SEVERITIES[:3]),
                ports=count,
            )
        )
        for seq in range(1, rng.randrange(1, 5)):
            count *= 2
            rise: Severity = "high" if seq == 3 else "none"
            events.append(
                updated(ts + seq, alert_id, seq, count, branch=branch, severity=rise, ports=count)
            )
        roll = rng.random()
        if roll < 0.5:
            events.append(acknowledged(ts + 2.5, alert_id, branch))
        if roll < 0.3:
            events.append(
                AlertAssigned(
                    id=new_event_id(ts + 3),
                    ts=ts + 3,
                    branch=branch,
                    alert_id=alert_id,
                    by="ana",
                    assignee="bob",
                )
            )
            events.append(
                AlertNoteAdded(
                    id=new_event_id(ts + 3.5),
                    ts=ts + 3.5,
                    branch=branch,
                    alert_id=alert_id,
                    by="bob",
                    note=f"note {number}",
                )
            )
        if roll < 0.2:
            events.append(resolved(ts + 4, alert_id, branch))
        if suppress_every and number % suppress_every == 0:
            events.append(
                suppressed(ts + 5, ts + 3600, rule=RULES[(number + 1) % len(RULES)], branch=branch)
            )
    events.sort(key=lambda event: (event.ts, event.id))
    return events
