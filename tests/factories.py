"""Events the tests build again and again, made in one place."""

from __future__ import annotations

from netmon.storage.contract.events import Detection, DetectionRaised, new_event_id


def telnet_detection(agent: str, now: float, *, src_port: int = 40000) -> DetectionRaised:
    """A critical Telnet finding from ``agent`` (branch left for ingest to stamp)."""
    return DetectionRaised(
        id=new_event_id(now),
        ts=now,
        branch="",
        agent_id=agent,
        flow_id=new_event_id(now),
        src_ip="10.0.0.5",
        src_port=src_port,
        dst_ip="203.0.113.9",
        dst_port=23,
        protocol=6,
        detection=Detection(
            kind="critical_port", detail="Telnet", severity="critical", rule="telnet"
        ),
    )
