"""Agent test helpers: real loopback captures made with tcpdump, replay, and tshark's view.

Captures use a /24 inside 127.77.0.0/16 chosen at random per test session (``NET``) and
unusual ports, so parallel runs on the same machine neither collide nor see each other's
packets. tcpdump writes packet-buffered (-U); a capture ends when a marker datagram sent
after the traffic shows up in the file (a real condition, not a sleep), then tcpdump gets
SIGINT and is waited for.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmon.agent.capture import FileSource
from netmon.agent.config import AgentConfig
from netmon.agent.pipeline import PipelineStats, run_pipeline
from netmon.storage.contract.events import AgentHeartbeat, DetectionRaised, Event, FlowObserved
from tests.polling import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"
NET = f"127.77.{random.randrange(1, 255)}"  # this session's /24 ("127.77.N")
MARKER_IP = f"{NET}.254"
MARKER_PORT = 19999


def port_open(host: str, port: int) -> bool:
    """True when a TCP server accepts connections on host:port."""
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def connections_closed(host: str, port: int) -> bool:
    """True when no TCP connection to host:port is still exchanging packets (ss, iproute2)."""
    out = subprocess.run(
        ["ss", "-Htan", "dst", f"{host}:{port}"], capture_output=True, text=True, check=True
    ).stdout
    return all(line.startswith("TIME-WAIT") for line in out.splitlines() if line.strip())


def server_ready(host: str, port: int) -> bool:
    """The server accepts connections, and our probe connection is fully closed again.

    Otherwise the probe's late FIN/ACK would land in the next capture as a stray flow.
    """
    if not port_open(host, port):
        return False
    wait_until(lambda: connections_closed(host, port), what=f"probe to {host}:{port} to close")
    return True


def require_tools(*names: str) -> None:
    """Skip the test when a system tool is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"system tools not installed: {', '.join(missing)}")


@contextlib.contextmanager
def tcpdump(
    path: Path, bpf: str, interface: str = "lo", extra: tuple[str, ...] = ()
) -> Iterator[None]:
    """Capture on ``interface`` into ``path`` while the block runs; complete file on exit."""
    require_tools("tcpdump")
    marker = f"netmon-end-{path.name}".encode()
    proc = subprocess.Popen(
        ["tcpdump", "-i", interface, "-U", "-n", "-s", "0", "-w", str(path), *extra, bpf],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        seen = []
        while True:  # readline blocks until tcpdump reports, or returns b"" when it exits
            line = proc.stderr.readline().decode()
            seen.append(line)
            if "listening on" in line or not line:
                break
        if "listening on" not in line:
            proc.wait(timeout=5)
            pytest.skip(f"tcpdump cannot capture here: {''.join(seen).strip()}")
        yield
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(marker, (MARKER_IP, MARKER_PORT))
        wait_until(lambda: marker in path.read_bytes(), what="tcpdump to write the marker")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def replay(path: Path, config: AgentConfig | None = None) -> tuple[list[Event], PipelineStats]:
    """Run the real pipeline on a capture file; returns the events and the counters."""
    events: list[Event] = []
    stats = run_pipeline(FileSource(path), config or AgentConfig(agent_id="test"), events.append)
    return events, stats


def flows_of(events: list[Event]) -> list[FlowObserved]:
    """The FlowObserved events, without the capture marker's flows (datagram, ICMP error)."""
    return [
        e for e in events if isinstance(e, FlowObserved) and MARKER_IP not in (e.src_ip, e.dst_ip)
    ]


def raised_of(events: list[Event]) -> list[DetectionRaised]:
    """The DetectionRaised events."""
    return [e for e in events if isinstance(e, DetectionRaised)]


def heartbeats_of(events: list[Event]) -> list[AgentHeartbeat]:
    """The AgentHeartbeat events."""
    return [e for e in events if isinstance(e, AgentHeartbeat)]


Counts = tuple[int, int, int, int]  # a->b frames, a->b bytes, b->a frames, b->a bytes


def _tshark_tables(path: Path, *tables: str) -> list[tuple[str, str, str, Counts]]:
    """Rows of tshark's conversation tables: (table, a, b, counts)."""
    require_tools("tshark")
    command = ["tshark", "-n", "-r", str(path), "-q"]
    for table in tables:
        command += ["-z", f"conv,{table}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = []
    table = ""
    for line in out.splitlines():
        if line.endswith(" Conversations"):
            table = line.split()[0]  # "TCP", "UDP", "IPv4", "IPv6"
        elif "<->" in line:
            left, right = line.split("<->")
            fields = right.split()
            # "<-" (b to a) frames, bytes, "bytes", "->" (a to b) frames, bytes, "bytes", ...
            b_frames, b_bytes, unit1, a_frames, a_bytes, unit2 = fields[1:7]
            assert unit1 == unit2 == "bytes", f"unexpected tshark units: {line}"
            counts = (int(a_frames), int(a_bytes), int(b_frames), int(b_bytes))
            rows.append((table, left.strip(), fields[0], counts))
    return rows


def tshark_conversations(path: Path) -> dict[tuple[int, str, int, str, int], Counts]:
    """tshark's TCP/UDP conversations: (proto, a, port, b, port) -> a->b, b->a frames/bytes."""
    result: dict[tuple[int, str, int, str, int], Counts] = {}
    for table, a, b, counts in _tshark_tables(path, "tcp", "udp"):
        a_ip, a_port = a.rsplit(":", 1)
        b_ip, b_port = b.rsplit(":", 1)
        proto = 6 if table == "TCP" else 17
        result[(proto, a_ip, int(a_port), b_ip, int(b_port))] = counts
    return result


def tshark_address_pairs(path: Path) -> dict[tuple[str, str], Counts]:
    """tshark's IPv4/IPv6 conversations, every protocol of an address pair together."""
    return {(a, b): counts for _, a, b, counts in _tshark_tables(path, "ip", "ipv6")}


def canonical(
    proto: int, a: str, ap: int, b: str, bp: int
) -> tuple[int, tuple[str, int], tuple[str, int]]:
    """A conversation's key whichever end is written first."""
    return (proto, *sorted([(a, ap), (b, bp)]))  # type: ignore[return-value]


def assert_counts_equal_tshark(path: Path) -> None:
    """Every TCP/UDP flow's per-direction frames and bytes equal tshark's conversation; the
    total bytes equal tshark's; no frame was malformed."""
    events, stats = replay(path)
    ours = [e for e in events if isinstance(e, FlowObserved) and e.protocol in (6, 17)]
    theirs = tshark_conversations(path)
    assert ours and len(ours) == len(theirs)
    by_key = {canonical(k[0], k[1], k[2], k[3], k[4]): (k, v) for k, v in theirs.items()}
    for flow in ours:
        key, (a_frames, a_bytes, b_frames, b_bytes) = by_key[
            canonical(flow.protocol, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port)
        ]
        if (key[1], key[2]) == (flow.src_ip, flow.src_port):
            expected = (a_frames, a_bytes, b_frames, b_bytes)
        else:
            expected = (b_frames, b_bytes, a_frames, a_bytes)
        assert (
            flow.src2dst_packets,
            flow.src2dst_bytes,
            flow.dst2src_packets,
            flow.dst2src_bytes,
        ) == expected, flow
    all_flows = [e for e in events if isinstance(e, FlowObserved)]
    assert sum(f.src2dst_bytes + f.dst2src_bytes for f in all_flows) == tshark_total_bytes(path)
    assert stats.packets_malformed == 0


def assert_names_equal_tshark(path: Path) -> None:
    """The flows named from DNS, SNI or HTTP are those tshark finds a name in, with its name."""
    rows = tshark_fields(
        path,
        "ip.src",
        "ip.dst",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "ip.proto",
        "dns.qry.name",
        "tls.handshake.extensions_server_name",
        "http.host",
        display_filter="dns.qry.name or tls.handshake.extensions_server_name or http.host",
    )
    expected: dict[tuple[int, tuple[str, int], tuple[str, int]], str] = {}
    for src, dst, tsp, tdp, usp, udp_, proto, qname, sni, host in rows:
        name = (qname or sni or host).split(",")[0].lower()
        if host and not qname and not sni:
            name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        if name.replace(".", "").isdigit():
            continue  # an IP literal is not a domain
        expected[canonical(int(proto), src, int(tsp or usp), dst, int(tdp or udp_))] = name
    events, _ = replay(path)
    ours = {
        canonical(f.protocol, f.src_ip, f.src_port, f.dst_ip, f.dst_port): f.domain
        for f in flows_of(events)
        if f.domain_source in ("dns", "sni", "http")
    }
    assert ours == expected


def tshark_fields(path: Path, *fields: str, display_filter: str = "") -> list[list[str]]:
    """Rows of tshark field values (one row per frame matching the filter)."""
    require_tools("tshark")
    command = ["tshark", "-n", "-r", str(path), "-T", "fields"]
    for field in fields:
        command += ["-e", field]
    if display_filter:
        command += ["-Y", display_filter]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def tshark_total_bytes(path: Path) -> int:
    """Sum of frame lengths of every IP frame in the capture, as tshark reports them."""
    rows = tshark_fields(path, "frame.len", display_filter="ip or ipv6")
    return sum(int(row[0]) for row in rows)
