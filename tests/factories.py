"""Events the tests build again and again, made in one place."""

from __future__ import annotations

import itertools

from netmon.storage.contract.events import Detection, DetectionRaised, FlowObserved, new_event_id

SYN, RST, ACK, PSH, FIN = 0x02, 0x04, 0x10, 0x08, 0x01
_ports = itertools.count(30000)


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


def tcp_flow(
    src: str,
    dst: str,
    dport: int,
    at: float,
    *,
    answer: int = SYN | ACK,
    reset: bool = True,
    data: tuple[int, int] = (0, 0),
    duration: float = 0.01,
    branch: str = "hq",
    end: str = "rst",
) -> FlowObserved:
    """A TCP flow: by default a SYN answered by SYN-ACK, then reset by the client (a probe)."""
    fwd_flags = SYN | (RST if reset else 0) | (ACK | PSH if data[0] else 0)
    return FlowObserved(
        id=new_event_id(at),
        ts=at + duration,
        branch=branch,
        agent_id="a1",
        first_seen=at,
        last_seen=at + duration,
        src_ip=src,
        src_port=next(_ports) % 60000 + 1024,
        dst_ip=dst,
        dst_port=dport,
        protocol=6,
        src2dst_packets=2 + (4 if data[0] else 0),
        dst2src_packets=1 + (4 if data[1] else 0) if answer else 0,
        src2dst_payload_bytes=data[0],
        dst2src_payload_bytes=data[1],
        src2dst_bytes=120 + data[0],
        dst2src_bytes=60 + data[1] if answer else 0,
        src2dst_tcp_flags=fwd_flags,
        dst2src_tcp_flags=answer | (ACK | PSH if data[1] else 0),
        end_reason=end,  # type: ignore[arg-type]
    )
