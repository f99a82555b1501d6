"""Small builders of stored events for the dashboard tests (real events, real store)."""

from __future__ import annotations

import itertools
from pathlib import Path

from netmon.storage.contract.events import (
    AlertOpened,
    Detection,
    DetectionRaised,
    FlowObserved,
    max_severity,
    new_event_id,
)
from netmon.storage.eventlog import EventLog

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


def write_ssh_attempt_pcap(path: Path, attacker: str, start: float) -> None:
    """A capture of one SSH attempt from ``attacker`` to 10.0.0.22: handshake, banners, close."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    client, server = (attacker, 51022), ("10.0.0.22", 22)

    def packet(
        src: tuple[str, int],
        dst: tuple[str, int],
        flags: str,
        seq: int,
        ack: int,
        data: bytes = b"",
    ):  # type: ignore[no-untyped-def]
        frame = (
            Ether()
            / IP(src=src[0], dst=dst[0])
            / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack)
        )
        return frame / Raw(data) if data else frame

    banner_s, banner_c = b"SSH-2.0-OpenSSH_9.2p1\r\n", b"SSH-2.0-libssh_0.10\r\n"
    packets = [
        packet(client, server, "S", 1000, 0),
        packet(server, client, "SA", 5000, 1001),
        packet(client, server, "A", 1001, 5001),
        packet(server, client, "PA", 5001, 1001, banner_s),
        packet(client, server, "PA", 1001, 5001 + len(banner_s), banner_c),
        packet(client, server, "FA", 1001 + len(banner_c), 5001 + len(banner_s)),
        packet(server, client, "FA", 5001 + len(banner_s), 1002 + len(banner_c)),
        packet(client, server, "A", 1002 + len(banner_c), 5002 + len(banner_s)),
    ]
    for index, item in enumerate(packets):
        item.time = start + index * 0.01
    wrpcap(str(path), packets)
