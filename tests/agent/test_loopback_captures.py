"""Golden tests on real loopback captures: real programs talk on 127.77.N.0/24 under tcpdump.

Each capture is cross-checked against tshark on the same file: per-direction packet and byte
counts of every TCP/UDP conversation, the total bytes, and the application names.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netmon.agent.config import AgentConfig, CriticalPort
from tests.polling import wait_until
from tests.ports import free_port

from .conftest import (
    NET,
    assert_counts_equal_tshark,
    assert_names_equal_tshark,
    flows_of,
    port_open,
    raised_of,
    replay,
    require_tools,
    server_ready,
    tcpdump,
)

CURL = ("curl", "-s", "-o", "/dev/null", "--max-time", "10")


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's captures."""
    return tmp_path_factory.mktemp("captures")


def _get_from_port_3389(host: str, port: int) -> bytes:
    """An HTTP GET whose client side uses source port 3389 (SO_REUSEADDR: TIME_WAIT of reruns)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((f"{NET}.6", 3389))
        sock.settimeout(10)
        sock.connect((host, port))
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def http_pcap(captures: Path) -> Path:
    """curl against a real HTTP server, captured on "any" (Linux cooked v2 frames)."""
    require_tools("curl")
    port = free_port(f"{NET}.1")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            f"{NET}.1",
            "-d",
            str(captures),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: server_ready(f"{NET}.1", port), what="http.server")
        path = captures / "http.pcap"
        with tcpdump(path, f"net {NET}.0/24", interface="any"):
            url = f"http://{NET}.1:{port}/"
            subprocess.run([*CURL, "-H", "Host: WWW.Example-HTTP.test", url], check=True)
            # A client that happens to use source port 3389, talking to the web server.
            assert _get_from_port_3389(f"{NET}.1", port).startswith(b"HTTP/1.0 200")
        return path
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def dns_pcap(captures: Path) -> Path:
    """dig against a real dnsmasq, then a connection to the answered address (Linux SLL v1)."""
    require_tools("dnsmasq", "dig")
    server = subprocess.Popen(
        [
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            f"--listen-address={NET}.2",
            "--bind-interfaces",
            "--port=53",
            "--no-resolv",
            "--no-hosts",
            "--pid-file",
            f"--address=/www.test-dns.netmon/{NET}.9",
            "--address=/v6.test-dns.netmon/fd00::9",
            "--cname=alias.test-dns.netmon,www.test-dns.netmon",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dig = ["dig", f"@{NET}.2", "+tries=1", "+time=2", "+short"]
    try:
        wait_until(
            lambda: (
                subprocess.run(
                    [*dig, "www.test-dns.netmon"], capture_output=True, text=True
                ).stdout.strip()
                == f"{NET}.9"
            ),
            what="dnsmasq",
        )
        path = captures / "dns.pcap"
        with tcpdump(path, f"net {NET}.0/24", interface="any", extra=("-y", "LINUX_SLL")):
            subprocess.run([*dig, "www.test-dns.netmon", "A"], check=True, capture_output=True)
            subprocess.run([*dig, "v6.test-dns.netmon", "AAAA"], check=True, capture_output=True)
            subprocess.run([*dig, "alias.test-dns.netmon", "A"], check=True, capture_output=True)
            # Nothing listens there: a SYN and an RST, labelled from the DNS answer above.
            assert not port_open(f"{NET}.9", 18082)
        return path
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def tls_pcap(captures: Path) -> Path:
    """curl with SNI against openssl s_server."""
    require_tools("openssl", "curl")
    key, cert = captures / "tls.key", captures / "tls.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=tls.netmon",
        ],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"{NET}.3:18443",
            "-cert",
            str(cert),
            "-key",
            str(key),
            "-www",
            "-quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: server_ready(f"{NET}.3", 18443), what="openssl s_server")
        path = captures / "tls.pcap"
        with tcpdump(path, f"net {NET}.0/24"):
            subprocess.run(
                [
                    *CURL,
                    "-k",
                    "--resolve",
                    f"secure.test-tls.netmon:18443:{NET}.3",
                    "https://secure.test-tls.netmon:18443/",
                ],
                check=True,
            )
        return path
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def ssh_pcap(captures: Path) -> Path:
    """ssh against a real sshd on port 22 (authentication fails; the flow is real)."""
    require_tools("ssh", "ssh-keygen")
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists():
        pytest.skip("sshd is not installed")
    host_key = captures / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = captures / "sshd_config"
    config.write_text(
        f"ListenAddress {NET}.4:22\nHostKey {host_key}\nPidFile {captures / 'sshd.pid'}\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    log = captures / "sshd.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(config)], stderr=log_file)
    try:
        try:
            wait_until(lambda: server_ready(f"{NET}.4", 22), what="sshd")
        except AssertionError:  # wait_until gave up
            pytest.skip(f"sshd did not start: {log.read_text()[-300:]}")
        path = captures / "ssh.pcap"
        with tcpdump(path, f"net {NET}.0/24"):
            subprocess.run(
                [
                    "ssh",
                    "-F",
                    "/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "ConnectTimeout=5",
                    f"nobody@{NET}.4",
                    "true",
                ],
                capture_output=True,
                timeout=30,
            )
        return path
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def nmap_pcap(captures: Path) -> Path:
    """An nmap SYN scan of 20 closed ports on a loopback address."""
    require_tools("nmap")
    path = captures / "nmap.pcap"
    with tcpdump(path, f"net {NET}.0/24"):
        result = subprocess.run(
            ["nmap", "-sS", "-n", "-Pn", "--max-retries", "0", "-p", "18100-18119", f"{NET}.5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if result.returncode != 0:
        pytest.skip(f"nmap cannot scan here: {result.stderr.strip()[-300:]}")
    return path


ALL_CAPTURES = ["http_pcap", "dns_pcap", "tls_pcap", "ssh_pcap", "nmap_pcap"]


@pytest.mark.parametrize("capture", ALL_CAPTURES)
def test_flow_counts_equal_tshark_conversations(
    capture: str, request: pytest.FixtureRequest
) -> None:
    assert_counts_equal_tshark(request.getfixturevalue(capture))


@pytest.mark.parametrize("capture", ALL_CAPTURES)
def test_domains_equal_tshark_names(capture: str, request: pytest.FixtureRequest) -> None:
    assert_names_equal_tshark(request.getfixturevalue(capture))


def _linktype(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "little")


def test_captures_cover_cooked_link_types(http_pcap: Path, dns_pcap: Path) -> None:
    # tcpdump on "any": Linux cooked v2 by default, v1 when asked (-y LINUX_SLL).
    assert (_linktype(http_pcap), _linktype(dns_pcap)) == (276, 113)


def test_http_host_and_client_port_3389_is_not_rdp(http_pcap: Path) -> None:
    flows = flows_of(replay(http_pcap)[0])
    named = [f for f in flows if f.domain == "www.example-http.test"]
    assert len(named) == 1 and named[0].domain_source == "http"
    from_3389 = [f for f in flows if f.src_port == 3389]
    assert len(from_3389) == 1 and from_3389[0].dst_ip == f"{NET}.1"
    assert from_3389[0].detections == () and from_3389[0].severity == "none"
    assert [f.end_reason for f in flows] == ["fin", "fin"]


def test_dns_answers_label_later_flows(dns_pcap: Path) -> None:
    flows = flows_of(replay(dns_pcap)[0])
    dns = {f.domain for f in flows if f.domain_source == "dns"}
    assert dns == {"www.test-dns.netmon", "v6.test-dns.netmon", "alias.test-dns.netmon"}
    for flow in (f for f in flows if f.domain_source == "dns"):  # one dig, one socket, one query
        assert (flow.dns_queries, flow.dns_names, flow.dns_sample) == (1, 1, (flow.domain,))
    later = [f for f in flows if f.dst_ip == f"{NET}.9"]
    assert len(later) == 1
    # dnsmasq answers the alias with a bare CNAME: the A record for .9 named www.
    assert (later[0].domain, later[0].domain_source) == ("www.test-dns.netmon", "pdns")


def test_tls_sni(tls_pcap: Path) -> None:
    flows = flows_of(replay(tls_pcap)[0])
    assert [(f.domain, f.domain_source) for f in flows] == [("secure.test-tls.netmon", "sni")]
    assert flows[0].features.handshake_duration > 0
    assert flows[0].features.fwd_init_win > 0 and flows[0].features.bwd_init_win > 0


def test_ssh_to_port_22_is_a_finding(ssh_pcap: Path) -> None:
    events, _ = replay(ssh_pcap)
    flows = flows_of(events)
    assert len(flows) == 1, flows
    flow = flows[0]
    assert flow.dst_port == 22
    assert [(d.kind, d.rule) for d in flow.detections] == [("critical_port", "ssh")]
    assert flow.severity == "high" and raised_of(events) == []


def test_critical_finding_is_raised_on_the_first_packet(ssh_pcap: Path) -> None:
    config = AgentConfig(
        agent_id="test",
        critical_ports=(CriticalPort(port=22, rule="ssh", name="SSH", severity="critical"),),
    )
    events, _ = replay(ssh_pcap, config)
    (raised,) = raised_of(events)
    (flow,) = flows_of(events)
    assert raised.flow_id == flow.id
    assert raised.ts == flow.first_seen  # the first packet, not the end of the flow
    assert events.index(raised) < events.index(flow)
    assert (raised.dst_port, raised.detection.rule) == (22, "ssh")


def test_nmap_syn_scan_gives_one_reset_flow_per_port(nmap_pcap: Path) -> None:
    flows = flows_of(replay(nmap_pcap)[0])
    assert sorted(f.dst_port for f in flows) == list(range(18100, 18120))
    for flow in flows:
        assert flow.end_reason == "rst"
        assert (flow.src2dst_packets, flow.dst2src_packets) == (1, 1)
        assert flow.features.syn_count == 1 and flow.features.rst_count == 1
