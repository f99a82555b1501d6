"""Real captures on 127.77.N.0/24: ``dig +tcp`` against dnsmasq, and a UDP scan beside a ping.

DNS over TCP must name its flow and meet the domain policy as DNS over UDP does; the ICMP
port-unreachable answers of an ``nmap -sU`` must form their own flow (type 3, code 3), apart
from the echo flow of a ping between the same two hosts. Both captures are cross-checked
against tshark like the others (test_loopback_captures.py); tshark counts ICMP only per address
pair (``conv,ip``), so the ICMP flows are checked there: the sum of our flows of the pair.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmon.agent.config import AgentConfig, DomainPolicy
from tests.polling import wait_until

from .conftest import (
    NET,
    assert_counts_equal_tshark,
    assert_names_equal_tshark,
    flows_of,
    port_open,
    replay,
    require_tools,
    tcpdump,
    tshark_address_pairs,
)

DNS_SERVER, ANSWERED = f"{NET}.10", f"{NET}.12"
SCANNER, TARGET = f"{NET}.8", f"{NET}.7"
SCANNED_PORTS = range(18200, 18208)


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's captures."""
    return tmp_path_factory.mktemp("captures")


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[list[str]]:
    """A real dnsmasq on DNS_SERVER:53 (UDP and TCP); yields dig's arguments for it."""
    require_tools("dnsmasq", "dig")
    server = subprocess.Popen(
        [
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            f"--listen-address={DNS_SERVER}",
            "--bind-interfaces",
            "--port=53",
            "--no-resolv",
            "--no-hosts",
            "--pid-file",
            f"--address=/www.tcp-dns.netmon/{ANSWERED}",
            "--address=/other.tcp-dns.netmon/fd00::12",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dig = ["dig", f"@{DNS_SERVER}", "+tcp", "+tries=1", "+time=2", "+short"]
    try:
        wait_until(
            lambda: (
                subprocess.run(
                    [*dig, "www.tcp-dns.netmon"], capture_output=True, text=True
                ).stdout.strip()
                == ANSWERED
            ),
            what="dnsmasq over TCP",
        )
        yield dig
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def dns_tcp_pcap(captures: Path, dnsmasq: list[str]) -> Path:
    """Two ``dig +tcp`` queries, then a connection to the address the first one answered."""
    path = captures / "dns_tcp.pcap"
    with tcpdump(path, f"net {NET}.0/24"):
        subprocess.run([*dnsmasq, "www.tcp-dns.netmon", "A"], check=True, capture_output=True)
        subprocess.run([*dnsmasq, "other.tcp-dns.netmon", "AAAA"], check=True, capture_output=True)
        assert not port_open(ANSWERED, 18083)  # a SYN and an RST, named from the TCP answer
    return path


@pytest.fixture(scope="module")
def udp_scan_pcap(captures: Path) -> Path:
    """hping3 pings, an ``nmap -sU`` of 8 closed ports, another ping: one host pair."""
    require_tools("nmap", "hping3")
    path = captures / "udp_scan.pcap"
    ping = ["hping3", "--icmp", "-i", "u100000", "-a", SCANNER, TARGET]
    with tcpdump(path, f"net {NET}.0/24"):
        subprocess.run([*ping[:1], "-c", "2", *ping[1:]], capture_output=True, timeout=30)
        ports = f"{SCANNED_PORTS[0]}-{SCANNED_PORTS[-1]}"
        scan = subprocess.run(
            ["nmap", "-sU", "-n", "-Pn", "--max-retries", "0", "-e", "lo", "-S", SCANNER]
            + ["-p", ports, TARGET],
            capture_output=True,
            text=True,
            timeout=60,
        )
        subprocess.run([*ping[:1], "-c", "1", *ping[1:]], capture_output=True, timeout=30)
    if scan.returncode != 0 or scan.stdout.count("/udp closed") != len(SCANNED_PORTS):
        pytest.skip(f"nmap cannot scan here: {(scan.stderr or scan.stdout).strip()[-300:]}")
    return path


CAPTURES = ["dns_tcp_pcap", "udp_scan_pcap"]


@pytest.mark.parametrize("capture", CAPTURES)
def test_flow_counts_equal_tshark_conversations(
    capture: str, request: pytest.FixtureRequest
) -> None:
    assert_counts_equal_tshark(request.getfixturevalue(capture))


@pytest.mark.parametrize("capture", CAPTURES)
def test_domains_equal_tshark_names(capture: str, request: pytest.FixtureRequest) -> None:
    assert_names_equal_tshark(request.getfixturevalue(capture))


def test_dns_over_tcp_names_the_flow_and_meets_the_policy(dns_tcp_pcap: Path) -> None:
    config = AgentConfig(agent_id="test", domains=DomainPolicy(approved=("example.org",)))
    flows = flows_of(replay(dns_tcp_pcap, config)[0])
    dns = {f.domain: f for f in flows if f.dst_port == 53}
    assert set(dns) == {"www.tcp-dns.netmon", "other.tcp-dns.netmon"}
    for name, flow in dns.items():
        assert (flow.protocol, flow.dst_ip, flow.domain_source) == (6, DNS_SERVER, "dns")
        assert (flow.dns_queries, flow.dns_names, flow.dns_sample) == (1, 1, (name,))
        assert [(d.kind, d.detail) for d in flow.detections] == [
            ("unapproved_domain", f"{name} is not an approved domain")
        ]
    (later,) = [f for f in flows if f.dst_ip == ANSWERED]
    assert (later.domain, later.domain_source, later.end_reason) == (
        "www.tcp-dns.netmon",
        "pdns",
        "rst",
    )


def test_udp_scan_answers_form_their_own_icmp_flow(udp_scan_pcap: Path) -> None:
    flows = flows_of(replay(udp_scan_pcap)[0])
    pair = [f for f in flows if {f.src_ip, f.dst_ip} == {SCANNER, TARGET}]
    probes = sorted(f.dst_port for f in pair if f.protocol == 17)
    assert probes == list(SCANNED_PORTS)
    icmp = {(f.src_ip, f.src_port, f.dst_port): f for f in pair if f.protocol == 1}
    assert set(icmp) == {(SCANNER, 8, 0), (TARGET, 3, 3)}
    unreachable = icmp[(TARGET, 3, 3)]
    assert (unreachable.dst_ip, unreachable.src2dst_packets, unreachable.dst2src_packets) == (
        SCANNER,
        len(SCANNED_PORTS),
        0,
    )
    echo = icmp[(SCANNER, 8, 0)]
    assert (echo.src2dst_packets, echo.dst2src_packets) == (3, 3)  # both pings, one flow
    # tshark's address-pair conversation: the sum of every flow of the pair, each way.
    theirs = tshark_address_pairs(udp_scan_pcap)
    a, b = next(key for key in theirs if set(key) == {SCANNER, TARGET})
    sums = [0, 0, 0, 0]
    for flow in pair:
        forward = flow.src_ip == a
        sums[0 if forward else 2] += flow.src2dst_packets
        sums[1 if forward else 3] += flow.src2dst_bytes
        sums[2 if forward else 0] += flow.dst2src_packets
        sums[3 if forward else 1] += flow.dst2src_bytes
    assert tuple(sums) == theirs[(a, b)]
