"""Real sessions that idle longer than the idle timeout: the second piece keeps its server.

A real ssh logs in to a real sshd (a key made for the test) and runs ``sleep 3; echo late``:
the session is quiet for 3 s, then the server speaks first. A Python client and server on a
high port do the same, where no port hints at the server and only the memory of the first
piece can tell. Replayed with ``idle_timeout = 2`` s, each session is cut in two; both pieces
must have the client as initiator, and the SSH pieces both carry the critical-port finding.
The pauses are the traffic under test (an idle session), not a way to wait for something.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmon.agent.config import AgentConfig
from netmon.storage.contract.events import FlowObserved
from tests.polling import wait_until
from tests.ports import free_port

from .conftest import (
    MARKER_IP,
    NET,
    canonical,
    flows_of,
    replay,
    server_ready,
    tcpdump,
    tshark_conversations,
)

SSH_SERVER, PY_SERVER = f"{NET}.13", f"{NET}.14"
IDLE = AgentConfig(agent_id="test", idle_timeout=2.0)
PAUSE_S = 3.0


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's captures."""
    return tmp_path_factory.mktemp("sessions")


@pytest.fixture(scope="module")
def sshd(captures: Path) -> Iterator[Path]:
    """A real sshd on SSH_SERVER:22 that lets root in with a key made here; yields the key."""
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists():
        pytest.skip("sshd is not installed")
    host_key, client_key = captures / "host_key", captures / "client_key"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = captures / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    config = captures / "sshd_config"
    config.write_text(
        f"ListenAddress {SSH_SERVER}:22\nHostKey {host_key}\nPidFile {captures / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    log = captures / "sshd.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(config)], stderr=log_file)
    try:
        try:
            wait_until(lambda: server_ready(SSH_SERVER, 22), what="sshd")
        except AssertionError:  # wait_until gave up
            pytest.skip(f"sshd did not start: {log.read_text()[-300:]}")
        yield client_key
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def ssh_idle_pcap(captures: Path, sshd: Path) -> Path:
    """An ssh login whose command is quiet for PAUSE_S, then prints a line."""
    path = captures / "ssh_idle.pcap"
    with tcpdump(path, f"host {SSH_SERVER} or host {MARKER_IP}"):
        result = subprocess.run(
            ["ssh", "-F", "/dev/null", "-i", str(sshd), "-o", "BatchMode=yes"]
            + ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
            + ["-o", "ConnectTimeout=5", f"root@{SSH_SERVER}", f"sleep {PAUSE_S:g}; echo late"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    if result.stdout.strip() != "late":
        pytest.skip(f"ssh login failed here: {result.stderr.strip()[-300:]}")
    return path


def _serve_once(listener: socket.socket, pause: threading.Event) -> None:
    """Answer one request, stay quiet PAUSE_S, then send more (the server speaks first)."""
    conn, _ = listener.accept()
    with conn:
        conn.recv(100)
        conn.sendall(b"hello")
        pause.wait(PAUSE_S)  # the idle period under test
        conn.sendall(b"late news")
        conn.recv(100)  # the client's close


@pytest.fixture(scope="module")
def python_idle_pcap(captures: Path) -> Path:
    """A Python client and server on a high port, quiet for PAUSE_S mid-session."""
    port = free_port(PY_SERVER)
    path = captures / "python_idle.pcap"
    with socket.create_server((PY_SERVER, port)) as listener:
        server = threading.Thread(target=_serve_once, args=(listener, threading.Event()))
        server.start()
        with tcpdump(path, f"host {PY_SERVER} or host {MARKER_IP}"):
            with socket.create_connection((PY_SERVER, port), timeout=10) as client:
                client.sendall(b"request")
                assert client.recv(100) == b"hello"
                assert client.recv(100) == b"late news"
            server.join(timeout=10)
    return path


def _pieces(path: Path, server: str) -> list[FlowObserved]:
    return [f for f in flows_of(replay(path, IDLE)[0]) if server in (f.src_ip, f.dst_ip)]


def test_an_idle_ssh_session_keeps_its_server_and_its_finding(ssh_idle_pcap: Path) -> None:
    pieces = _pieces(ssh_idle_pcap, SSH_SERVER)
    assert len(pieces) == 2 and pieces[0].end_reason == "idle"
    for piece in pieces:
        assert (piece.dst_ip, piece.dst_port) == (SSH_SERVER, 22)
        assert [(d.kind, d.rule) for d in piece.detections] == [("critical_port", "ssh")]
    assert pieces[1].src_port == pieces[0].src_port
    assert pieces[1].dst2src_payload_bytes > 0  # the server's "late" line, after the pause


def test_an_idle_session_on_a_high_port_keeps_its_server(python_idle_pcap: Path) -> None:
    pieces = _pieces(python_idle_pcap, PY_SERVER)
    assert len(pieces) == 2 and pieces[0].end_reason == "idle"
    assert {(f.dst_ip, f.dst_port) for f in pieces} == {(PY_SERVER, pieces[0].dst_port)}
    assert pieces[0].dst_port != pieces[0].src_port
    assert pieces[1].dst2src_payload_bytes == len(b"late news")
    # Without the memory nothing tells the server: the piece begins with its packet.
    alone = AgentConfig(agent_id="test", idle_timeout=2.0, orientation_cache_size=0)
    second = [f for f in flows_of(replay(python_idle_pcap, alone)[0]) if f.src_ip == PY_SERVER]
    assert len(second) == 1


@pytest.mark.parametrize("capture", ["ssh_idle_pcap", "python_idle_pcap"])
def test_the_pieces_add_up_to_tshark_s_conversation(
    capture: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(capture)
    server = SSH_SERVER if capture.startswith("ssh") else PY_SERVER
    pieces = _pieces(path, server)
    ((key, counts),) = [
        (k, v) for k, v in tshark_conversations(path).items() if server in (k[1], k[3])
    ]
    assert {canonical(6, f.src_ip, f.src_port, f.dst_ip, f.dst_port) for f in pieces} == {
        canonical(*key)
    }
    client_first = key[1] != server
    totals = (
        sum(f.src2dst_packets for f in pieces),
        sum(f.src2dst_bytes for f in pieces),
        sum(f.dst2src_packets for f in pieces),
        sum(f.dst2src_bytes for f in pieces),
    )
    assert totals == (counts if client_first else (*counts[2:], *counts[:2]))
