"""ICMP and ICMPv6 flows: queries share a flow with their replies, errors are keyed by type/code.

Scapy-built packets through the real pipeline; a real ``nmap -sU`` with a ping beside it is in
test_loopback_dns_tcp_and_icmp.py.
"""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from netmon.agent.config import AgentConfig
from netmon.agent.decode import decode
from netmon.storage.contract.events import FlowObserved

from .conftest import flows_of, replay

T0 = 1_700_000_000.0
SCANNER, TARGET = "10.9.5.1", "10.9.5.2"
SCANNER6, TARGET6 = "fd00:5::1", "fd00:5::2"


def _stamped(packets: list[Packet]) -> list[Packet]:
    for index, packet in enumerate(packets):
        packet.time = T0 + index * 0.01
    return packets


def _unreachable(port: int) -> Packet:
    probe = IP(src=SCANNER, dst=TARGET) / UDP(sport=40000, dport=port)
    return Ether() / IP(src=TARGET, dst=SCANNER) / ICMP(type=3, code=3) / probe


def _meter(tmp_path: Path, packets: list[Packet]) -> list[FlowObserved]:
    path = tmp_path / "icmp.pcap"
    wrpcap(str(path), _stamped(packets))
    events, stats = replay(path, AgentConfig(agent_id="t"))
    flows = flows_of(events)
    assert sum(f.src2dst_bytes + f.dst2src_bytes for f in flows) == stats.bytes_seen
    return flows


def test_port_unreachables_are_their_own_flow_beside_a_ping(tmp_path: Path) -> None:
    packets: list[Packet] = [
        Ether() / IP(src=SCANNER, dst=TARGET) / ICMP(type=8, id=1, seq=1),
        Ether() / IP(src=TARGET, dst=SCANNER) / ICMP(type=0, id=1, seq=1),
    ]
    for port in (7001, 7002, 7003):
        packets.append(Ether() / IP(src=SCANNER, dst=TARGET) / UDP(sport=40000, dport=port))
        packets.append(_unreachable(port))
    packets.append(Ether() / IP(src=SCANNER, dst=TARGET) / ICMP(type=8, id=1, seq=2))
    packets.append(Ether() / IP(src=TARGET, dst=SCANNER) / ICMP(type=0, id=1, seq=2))
    packets.append(  # a time-exceeded message: yet another flow
        Ether() / IP(src=TARGET, dst=SCANNER) / ICMP(type=11, code=0) / IP() / UDP()
    )
    flows = _meter(tmp_path, packets)
    icmp = {(f.src_ip, f.src_port, f.dst_port): f for f in flows if f.protocol == 1}
    echo = icmp[(SCANNER, 8, 0)]
    assert (echo.src2dst_packets, echo.dst2src_packets) == (2, 2)
    unreachable = icmp[(TARGET, 3, 3)]
    assert (unreachable.dst_ip, unreachable.src2dst_packets, unreachable.dst2src_packets) == (
        SCANNER,
        3,
        0,
    )
    assert icmp[(TARGET, 11, 0)].src2dst_packets == 1
    assert len(icmp) == 3 and len([f for f in flows if f.protocol == 17]) == 3
    assert len({f.community_id for f in icmp.values()}) == 3


def test_icmpv6_port_unreachables_are_their_own_flow(tmp_path: Path) -> None:
    probe = IPv6(src=SCANNER6, dst=TARGET6) / UDP(sport=40000, dport=7001)
    packets: list[Packet] = [
        Ether() / IPv6(src=SCANNER6, dst=TARGET6) / ICMPv6EchoRequest(id=2, seq=1),
        Ether() / IPv6(src=TARGET6, dst=SCANNER6) / ICMPv6EchoReply(id=2, seq=1),
        Ether() / IPv6(src=TARGET6, dst=SCANNER6) / ICMPv6DestUnreach(code=4) / probe,
        Ether() / IPv6(src=TARGET6, dst=SCANNER6) / ICMPv6DestUnreach(code=4) / probe,
    ]
    flows = {(f.src_port, f.dst_port): f for f in _meter(tmp_path, packets) if f.protocol == 58}
    assert (flows[(128, 0)].src2dst_packets, flows[(128, 0)].dst2src_packets) == (1, 1)
    assert (flows[(1, 4)].src_ip, flows[(1, 4)].src2dst_packets) == (TARGET6, 2)


def test_the_error_key_reads_the_same_both_ways() -> None:
    decoded = decode(bytes(_unreachable(7001)), 1)
    assert decoded
    key = decoded[0]
    assert key[-4:] == bytes((3, 3, 3, 3))  # type|code in both port halves
    echo = decode(bytes(Ether() / IP(src=SCANNER, dst=TARGET) / ICMP(type=8)), 1)
    assert echo and echo[0][-4:] == bytes(4)
