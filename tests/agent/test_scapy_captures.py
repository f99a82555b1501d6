"""Golden tests on the scapy-built captures in tests/data (see make_agent_pcaps.py)."""

from __future__ import annotations

import pytest

from netmon.storage.contract.events import FlowObserved

from .conftest import (
    DATA_DIR,
    flows_of,
    raised_of,
    replay,
    tshark_conversations,
    tshark_fields,
    tshark_total_bytes,
)


def _by_ports(flows: list[FlowObserved]) -> dict[tuple[int, int, int], FlowObserved]:
    return {(f.protocol, f.src_port, f.dst_port): f for f in flows}


# Captures tshark counts the way we do (no VLANs, no fragments: tshark merges VLANs into one
# conversation and reassembles fragments into the last one's frame).
TSHARK_COMPARABLE = [
    "agent_ipv6.pcap",
    "agent_split_hello.pcap",
    "agent_sll.pcap",
    "agent_mixed.pcapng",
]


@pytest.mark.parametrize("name", TSHARK_COMPARABLE)
def test_counts_equal_tshark(name: str) -> None:
    path = DATA_DIR / name
    events, stats = replay(path)
    ours = {
        (f.protocol, *sorted([(f.src_ip, f.src_port), (f.dst_ip, f.dst_port)])): f
        for f in flows_of(events)
        if f.protocol in (6, 17)
    }
    theirs = tshark_conversations(path)
    assert len(ours) == len(theirs)
    for (proto, a, ap, b, bp), (a_frames, a_bytes, b_frames, b_bytes) in theirs.items():
        flow = ours[(proto, *sorted([(a, ap), (b, bp)]))]
        forward = (flow.src_ip, flow.src_port) == (a, ap)
        got = (flow.src2dst_packets, flow.src2dst_bytes, flow.dst2src_packets, flow.dst2src_bytes)
        assert got == (
            (a_frames, a_bytes, b_frames, b_bytes)
            if forward
            else (b_frames, b_bytes, a_frames, a_bytes)
        )
    total = sum(f.src2dst_bytes + f.dst2src_bytes for f in flows_of(events))
    assert total == tshark_total_bytes(path) == stats.bytes_seen


@pytest.mark.parametrize("name", TSHARK_COMPARABLE)
def test_names_equal_tshark(name: str) -> None:
    path = DATA_DIR / name
    rows = tshark_fields(
        path,
        "dns.qry.name",
        "tls.handshake.extensions_server_name",
        display_filter="dns.qry.name or tls.handshake.extensions_server_name",
    )
    expected = {name for row in rows for name in row if name}
    events, _ = replay(path)
    ours = {f.domain for f in flows_of(events) if f.domain_source in ("dns", "sni")}
    assert ours == expected


def test_ipv6_tcp_udp_icmpv6_and_extension_headers() -> None:
    flows = _by_ports(flows_of(replay(DATA_DIR / "agent_ipv6.pcap")[0]))
    tls = flows[(6, 40000, 443)]
    assert (tls.src_ip, tls.dst_ip, tls.domain, tls.end_reason) == (
        "fd00::1",
        "fd00::2",
        "v6.example.test",
        "fin",
    )
    assert (tls.src2dst_packets, tls.dst2src_packets) == (5, 3)
    assert flows[(17, 40001, 53)].domain == "aaaa.example.test"
    later = flows[(6, 40002, 8443)]
    assert (later.dst_ip, later.domain, later.domain_source) == (
        "fd00::3",
        "aaaa.example.test",
        "pdns",
    )
    echo = flows[(58, 128, 0)]  # ICMPv6 echo request type/code as the flow's "ports"
    assert (echo.src2dst_packets, echo.dst2src_packets) == (1, 1)
    assert flows[(17, 40003, 9999)].src2dst_payload_bytes == 10  # behind a hop-by-hop header


def test_vlan_tags_separate_flows() -> None:
    flows = flows_of(replay(DATA_DIR / "agent_vlan.pcap")[0])
    assert sorted(f.vlan for f in flows) == [10, 20, 100]  # QinQ: the outer tag
    for flow in flows:
        assert (flow.src_ip, flow.src_port, flow.src2dst_packets, flow.dst2src_packets) == (
            "10.1.0.1",
            41000,
            1,
            1,
        )


def test_fragments_join_the_flow_of_their_first_fragment() -> None:
    events, stats = replay(DATA_DIR / "agent_fragments.pcap")
    flows = _by_ports(flows_of(events))
    assert flows[(17, 42000, 7000)].src2dst_packets == 3  # in order: all three fragments
    assert flows[(17, 42000, 7000)].src2dst_payload_bytes == 3000
    # Out of order: the later fragment came first and could not know its ports.
    assert flows[(17, 42001, 7000)].src2dst_packets == 1
    assert flows[(17, 0, 0)].src2dst_packets == 1
    assert (
        sum(f.src2dst_bytes for f in flows.values())
        == stats.bytes_seen
        == tshark_total_bytes(DATA_DIR / "agent_fragments.pcap")
    )


def test_split_client_hello_gives_the_sni() -> None:
    flows = _by_ports(flows_of(replay(DATA_DIR / "agent_split_hello.pcap")[0]))
    assert flows[(6, 43000, 443)].domain == "split.example.test"  # 3 segments + a retransmission
    assert flows[(6, 43001, 443)].domain == "records.example.test"  # 2 TLS records
    assert flows[(6, 43000, 443)].src2dst_packets == 8


def test_malformed_frames_are_counted_and_skipped() -> None:
    events, stats = replay(DATA_DIR / "agent_malformed.pcap")
    assert stats.packets_seen == 7
    assert stats.packets_malformed == 5
    assert stats.packets_not_ip == 1
    (flow,) = flows_of(events)
    assert (flow.src_port, flow.dst_port, flow.src2dst_payload_bytes) == (44000, 9000, 2)


def test_malformed_frames_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    replay(DATA_DIR / "agent_malformed.pcap")
    assert "frame 1: truncated or malformed" in caplog.text


def test_truncated_file_keeps_the_complete_records(caplog: pytest.LogCaptureFixture) -> None:
    events, stats = replay(DATA_DIR / "agent_truncated.pcap")
    assert stats.packets_seen == 6
    assert "the last record is truncated" in caplog.text


def test_linux_cooked_v1_frames() -> None:
    (flow,) = flows_of(replay(DATA_DIR / "agent_sll.pcap")[0])
    assert (flow.domain, flow.src2dst_packets, flow.dst2src_packets) == ("sll.example.test", 1, 1)


def test_pcapng_with_icmp_and_telnet_raises_at_once() -> None:
    events, _ = replay(DATA_DIR / "agent_mixed.pcapng")
    flows = _by_ports(flows_of(events))
    icmp = flows[(1, 8, 0)]
    assert (icmp.src2dst_packets, icmp.dst2src_packets) == (1, 1)
    assert icmp.community_id.startswith("1:")
    telnet = flows[(6, 46000, 23)]
    (raised,) = raised_of(events)
    assert raised.flow_id == telnet.id and raised.detection.rule == "telnet"
    assert raised.ts == telnet.first_seen
