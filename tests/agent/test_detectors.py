"""Detectors: critical ports, threat lists (text/CSV, v4/v6, reload), approved/denied domains."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from netmon.agent.config import AgentConfig, DomainPolicy, ThreatList, parse_agent_config
from netmon.agent.detectors.domains import DomainDetector, normalise
from netmon.agent.detectors.suspicious_ips import SuspiciousIpDetector, parse_threat_file

from .conftest import DATA_DIR, flows_of, heartbeats_of, raised_of, replay


def _packed(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def test_critical_port_is_judged_on_the_responder(tmp_path: Path) -> None:
    packets = [
        Ether() / IP(src="10.8.0.1", dst="10.8.0.2") / TCP(sport=3389, dport=443, flags="S"),
        Ether() / IP(src="10.8.0.2", dst="10.8.0.1") / TCP(sport=443, dport=3389, flags="SA"),
        Ether() / IP(src="10.8.0.1", dst="10.8.0.3") / TCP(sport=50000, dport=3389, flags="S"),
        Ether() / IP(src="10.8.0.1", dst="10.8.0.3") / UDP(sport=50001, dport=3389),  # RDP/UDP
        Ether() / IP(src="10.8.0.1", dst="10.8.0.3") / UDP(sport=50002, dport=22),  # SSH: tcp only
    ]
    path = tmp_path / "rdp.pcap"
    wrpcap(str(path), packets)
    events, _ = replay(path)
    by_port = {(f.protocol, f.dst_port): f for f in flows_of(events)}
    assert by_port[(6, 443)].detections == ()
    assert [d.rule for d in by_port[(6, 3389)].detections] == ["rdp"]
    assert [d.detail for d in by_port[(17, 3389)].detections] == ["RDP (3389/udp)"]
    assert by_port[(17, 22)].detections == ()
    raised = raised_of(events)
    assert [(r.protocol, r.dst_port, r.severity) for r in raised] == [
        (6, 3389, "critical"),
        (17, 3389, "critical"),
    ]


def test_a_critical_port_without_protocol_is_tcp_as_before() -> None:
    config = parse_agent_config(
        {"critical_ports": [{"port": 5900, "rule": "vnc", "name": "VNC", "severity": "critical"}]}
    )
    assert [(p.port, p.protocol) for p in config.critical_ports] == [(5900, "tcp")]
    defaults = {(p.port, p.protocol, p.rule) for p in AgentConfig().critical_ports}
    assert {(3389, "tcp", "rdp"), (3389, "udp", "rdp")} <= defaults


def test_threat_list_text_and_csv_v4_v6(tmp_path: Path) -> None:
    text = tmp_path / "feodo.txt"
    text.write_text(
        "# comment\n203.0.113.7\n198.51.100.0/24  # a network\nnot-an-ip\n2001:db8:bad::/48\n"
    )
    ips, skipped = parse_threat_file(text)
    assert skipped == 1 and len(ips) == 3
    assert _packed("203.0.113.7") in ips and _packed("198.51.100.99") in ips
    assert _packed("2001:db8:bad:1::5") in ips and _packed("2001:db8:bad0::1") not in ips
    assert _packed("203.0.113.8") not in ips
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "first_seen,ip,port\n2024-01-01,192.0.2.1,443\n2024-01-02,192.0.2.64/26,80\n"
    )
    ips, skipped = parse_threat_file(csv_file, column="ip")
    assert skipped == 0 and _packed("192.0.2.1") in ips and _packed("192.0.2.100") in ips


def test_threat_list_finding_names_the_list(tmp_path: Path) -> None:
    threat = tmp_path / "bad.txt"
    threat.write_text("10.0.0.0/8\n")
    config = AgentConfig(agent_id="t", threat_lists=(ThreatList(name="botnet", path=str(threat)),))
    events, _ = replay(DATA_DIR / "agent_vlan.pcap", config)
    flows = flows_of(events)
    assert all(f.severity == "critical" for f in flows)
    details = {d.detail for f in flows for d in f.detections}
    assert details == {"10.1.0.1 in list botnet", "10.1.0.2 in list botnet"}
    assert len(raised_of(events)) == 6  # both endpoints of three flows, at their first packet


def test_threat_list_reloads_on_change_and_survives_a_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "list.txt"
    path.write_text("192.0.2.1\n")
    detector = SuspiciousIpDetector([ThreatList(name="l", path=str(path))], reload_interval=0.0)
    path.write_text("192.0.2.2\n")
    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    detector.tick(0.0)
    assert detector._lists[0].ips.exact == {_packed("192.0.2.2")}
    path.unlink()
    detector.tick(0.0)
    assert detector._lists[0].ips.exact == {_packed("192.0.2.2")}  # kept
    assert "No such file" in caplog.text


def test_threat_list_reload_is_rate_limited(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("192.0.2.1\n")
    detector = SuspiciousIpDetector([ThreatList(name="l", path=str(path))], reload_interval=3600)
    path.write_text("192.0.2.2\n")
    os.utime(path, (1, 1))
    detector.tick(0.0)
    assert detector._lists[0].ips.exact == {_packed("192.0.2.1")}  # not checked again yet


def test_domain_suffix_match_on_label_boundaries() -> None:
    detector = DomainDetector(
        DomainPolicy(approved=("Example.COM", "bücher.example"), denied=("evil.example.com",))
    )
    assert detector.judge("www.example.com") is None
    assert detector.judge("example.com.") is None
    assert detector.judge("WWW.BÜCHER.example") is None
    assert detector.judge("xn--bcher-kva.example") is None  # the same name, as an A-label
    unapproved = detector.judge("badexample.com")
    assert unapproved is not None and unapproved.rule == "allowlist"
    denied = detector.judge("a.evil.example.com")
    assert denied is not None and (denied.rule, denied.severity) == ("denylist", "critical")


def test_denylist_alone_allows_everything_else(tmp_path: Path) -> None:
    denied = tmp_path / "denied.txt"
    denied.write_text("# blocked\nsplit.example.test\n")
    config = AgentConfig(agent_id="t", domains=DomainPolicy(denied_files=(str(denied),)))
    events, _ = replay(DATA_DIR / "agent_split_hello.pcap", config)
    flows = {f.domain: f for f in flows_of(events)}
    assert flows["records.example.test"].detections == ()
    assert flows["split.example.test"].severity == "critical"
    (raised,) = raised_of(events)
    assert raised.domain == "split.example.test"
    # raised on the packet completing the ClientHello, before the flow ended
    assert (
        flows["split.example.test"].first_seen < raised.ts < flows["split.example.test"].last_seen
    )


def test_unapproved_domain_from_passive_dns(tmp_path: Path) -> None:
    config = AgentConfig(agent_id="t", domains=DomainPolicy(approved=("v6.example.test",)))
    events, _ = replay(DATA_DIR / "agent_ipv6.pcap", config)
    flows = {(f.dst_port, f.domain_source): f for f in flows_of(events)}
    assert flows[(443, "sni")].detections == ()
    assert [d.rule for d in flows[(8443, "pdns")].detections] == ["allowlist"]


def test_idn_normalisation() -> None:
    assert normalise("BÜCHER.Example.") == "xn--bcher-kva.example"


def test_ipv6_threat(tmp_path: Path) -> None:
    threat = tmp_path / "v6.txt"
    threat.write_text("fd00::3\n")
    packets = [Ether() / IPv6(src="fd00::1", dst="fd00::3") / TCP(sport=1, dport=2, flags="S")]
    wrpcap(str(tmp_path / "v6.pcap"), packets)
    config = AgentConfig(
        agent_id="t", threat_lists=(ThreatList(name="v6", path=str(threat), severity="high"),)
    )
    (flow,) = flows_of(replay(tmp_path / "v6.pcap", config)[0])
    assert [d.detail for d in flow.detections] == ["fd00::3 in list v6"]


def test_heartbeats_report_the_size_of_the_domain_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    denied = tmp_path / "denied.txt"
    denied.write_text("# blocked\nevil.test\nEVIL.test.\n")  # one domain, written twice
    policy = DomainPolicy(approved=("a.test", "b.test"), denied_files=(str(denied),))
    events, _ = replay(DATA_DIR / "agent_sll.pcap", AgentConfig(agent_id="t", domains=policy))
    assert [beat.domain_rules for beat in heartbeats_of(events)] == [3]
    assert "no domain policy" not in caplog.text
    events, _ = replay(DATA_DIR / "agent_sll.pcap", AgentConfig(agent_id="t"))
    assert [beat.domain_rules for beat in heartbeats_of(events)] == [0]
    warned = [r for r in caplog.records if "no domain policy configured" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert "docs/agent.md#domain-policy" in warned[0].getMessage()
