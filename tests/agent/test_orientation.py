"""Which end of a flow is the server when its first packet does not open the connection.

Scapy-built sessions through the real pipeline; real ssh/sshd and Python sessions idle past the
idle timeout are in test_loopback_sessions.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from netmon.agent.config import DEFAULT_CRITICAL_PORTS, AgentConfig
from netmon.agent.orientation import Orientation
from netmon.storage.contract.events import FlowObserved

from .conftest import flows_of, replay

T0 = 1_700_000_000.0
CLIENT, SERVER = "10.9.4.1", "10.9.4.2"


def tcp(t: float, flags: str, sport: int, dport: int, to_server: bool, data: bytes = b"") -> Packet:
    """A TCP packet between CLIENT and SERVER at time ``t`` (ports as seen in the packet)."""
    src, dst = (CLIENT, SERVER) if to_server else (SERVER, CLIENT)
    packet = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)
    if data:
        packet = packet / data
    packet.time = T0 + t
    return packet


def meter(tmp_path: Path, packets: list[Packet], **config: object) -> list[FlowObserved]:
    path = tmp_path / "orientation.pcap"
    wrpcap(str(path), packets)
    return flows_of(replay(path, AgentConfig(agent_id="t", **config))[0])  # type: ignore[arg-type]


def _idle_session(port: int) -> list[Packet]:
    """A session to ``port``, quiet for 5 s, then the server speaks first."""
    c, s = 45000, port
    return [
        tcp(0.0, "S", c, s, True),
        tcp(0.1, "SA", s, c, False),
        tcp(0.2, "A", c, s, True),
        tcp(0.3, "PA", c, s, True, b"request"),
        tcp(0.4, "PA", s, c, False, b"reply"),
        tcp(5.4, "PA", s, c, False, b"late news"),  # after the idle timeout
        tcp(5.5, "A", c, s, True),
    ]


def test_a_session_split_by_the_idle_timeout_keeps_its_server(tmp_path: Path) -> None:
    flows = meter(tmp_path, _idle_session(18022), idle_timeout=2.0)
    assert [(f.end_reason, f.src_ip, f.src_port, f.dst_port) for f in flows] == [
        ("idle", CLIENT, 45000, 18022),
        ("shutdown", CLIENT, 45000, 18022),  # not the server as "initiator"
    ]
    second = flows[1]
    assert (second.src2dst_packets, second.dst2src_packets) == (1, 1)
    assert second.dst2src_payload_bytes == len(b"late news")


def test_without_the_memory_high_ports_give_no_hint(tmp_path: Path) -> None:
    flows = meter(tmp_path, _idle_session(18022), idle_timeout=2.0, orientation_cache_size=0)
    assert flows[1].src_port == 18022  # the first packet's sender, as before


def test_the_second_piece_of_an_ssh_session_keeps_its_finding(tmp_path: Path) -> None:
    flows = meter(tmp_path, _idle_session(22), idle_timeout=2.0)
    assert [(f.dst_port, [d.rule for d in f.detections]) for f in flows] == [
        (22, ["ssh"]),
        (22, ["ssh"]),
    ]


@pytest.mark.parametrize(
    ("flags", "sport", "dport", "turned"),
    [
        ("PA", 22, 45001, True),  # mid-session capture: the service port is the server's
        ("A", 3389, 50000, True),
        ("SA", 22, 45001, True),  # a SYN-ACK from a service port to an ephemeral one
        ("SA", 45001, 45002, False),  # no hint: a lone SYN-ACK is never turned (SYN-ACK scans)
        ("SA", 22, 80, False),  # both likely servers: a SYN-ACK is left as it is (Zeek)
        ("PA", 80, 443, True),  # both likely servers: the lower port serves
        ("PA", 443, 80, False),
        ("S", 3389, 45003, False),  # a SYN opens a connection: its sender is the client
        ("PA", 45004, 45005, False),
    ],
)
def test_a_partial_tcp_connection_is_turned_by_its_ports(
    tmp_path: Path, flags: str, sport: int, dport: int, turned: bool
) -> None:
    (flow,) = meter(tmp_path, [tcp(0.0, flags, sport, dport, False)])
    assert (flow.src_port, flow.dst_port) == ((dport, sport) if turned else (sport, dport))
    assert (flow.src2dst_packets, flow.dst2src_packets) == ((0, 1) if turned else (1, 0))


def test_a_udp_answer_seen_first_is_turned_by_its_port(tmp_path: Path) -> None:
    answer = Ether() / IP(src=SERVER, dst=CLIENT) / UDP(sport=3389, dport=50123) / b"x"
    both = Ether() / IP(src=SERVER, dst=CLIENT) / UDP(sport=123, dport=123) / b"y"
    flows = {f.protocol: f for f in meter(tmp_path, [answer])}
    assert (flows[17].src_ip, flows[17].dst_port) == (CLIENT, 3389)
    assert [d.detail for d in flows[17].detections] == ["RDP (3389/udp)"]
    (ntp,) = meter(tmp_path, [both])
    assert ntp.src_ip == SERVER  # both ends well-known: UDP is never turned


def _key(sport: int, dport: int) -> bytes:
    return (
        bytes((6, 0, 0, 10, 9, 4, 1, 10, 9, 4, 2))
        + sport.to_bytes(2, "big")
        + dport.to_bytes(2, "big")
    )


def test_the_memory_is_bounded_and_forgets_after_the_active_timeout() -> None:
    memory = Orientation(2, keep_s=100.0, critical=DEFAULT_CRITICAL_PORTS)
    keys = [_key(40000 + i, 18000) for i in range(3)]
    for key in keys:
        memory.remember(key, T0)
    assert len(memory) == 2  # the oldest went
    reverse = [_key(18000, 40000 + i) for i in range(3)]
    # An ACK from the server side: turned only where the flow is remembered.
    assert memory.initiator(reverse[0], keys[0], 0x10, T0 + 1) == reverse[0]
    assert memory.initiator(reverse[1], keys[1], 0x10, T0 + 1) == keys[1]
    assert memory.initiator(reverse[1], keys[1], 0x10, T0 + 1) == reverse[1]  # used once
    assert memory.initiator(reverse[2], keys[2], 0x10, T0 + 101) == reverse[2]  # too old
    assert len(memory) == 0
