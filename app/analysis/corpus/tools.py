"""Real programs on loopback, recorded with tcpdump: the part of the corpus no generator fakes.

Each helper runs bounded traffic (counts, timeouts) between 127.0.0.0/8 addresses only. The
servers (http.server, dnsmasq, sshd) and the recorder are context managers that always stop
their process. Tools that are missing make ``ToolMissing`` so callers can skip one scenario.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)


class ToolMissing(Exception):
    """A program a scenario needs is not installed or cannot run here."""


def require(*programs: str) -> None:
    """Raise ToolMissing naming the first program not on PATH."""
    for program in programs:
        if shutil.which(program) is None:
            raise ToolMissing(f"{program} is not installed")


# tcpdump hands packets over in ring-buffer blocks (up to a second late) and drops what is
# still in the ring when it is interrupted; immediate mode avoids that but drops packets under
# load. So the recorder sends a marker datagram after the traffic and waits until the marker is
# in the file: every packet before it is then written too. Its flows are left out by replay.
SENTINEL_IP = "127.0.0.254"
SENTINEL_PORT = 9  # discard


@contextlib.contextmanager
def recording(path: Path, bpf: str, timeout: float = 10.0) -> Iterator[None]:
    """tcpdump on lo into path while the block runs; the pcap is complete on exit."""
    require("tcpdump")
    bpf = f"({bpf}) or host {SENTINEL_IP}"
    proc = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-n", "-U", "-B", "32768", "-s", "0", "-w", str(path), bpf],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _await_line(proc, b"listening on", timeout)
        yield
        _flush_marker(path, timeout)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _flush_marker(path: Path, timeout: float) -> None:
    """Send marker datagrams until one shows up in the capture file."""
    import socket

    token = os.urandom(16).hex().encode()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            sock.sendto(token, (SENTINEL_IP, SENTINEL_PORT))
            for _ in range(25):
                if token in path.read_bytes():
                    return
                time.sleep(0.1)
    raise ToolMissing(f"tcpdump did not write to {path} within {timeout} s")


def _name(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    return str(args[0]) if isinstance(args, list | tuple) else str(args)


def _await_line(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> None:
    """Block until the process prints marker on stderr (its readiness signal)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if marker in line:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise ToolMissing(f"{_name(proc)} did not start: {seen.decode(errors='replace').strip()}")


def free_port(host: str, kind: int = 1) -> int:
    """A port nobody listens on at host right now (kind 1 = TCP, 2 = UDP)."""
    import socket

    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ToolMissing(f"{_name(proc)} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise ToolMissing(f"{_name(proc)} did not listen on {host}:{port}")


@contextlib.contextmanager
def _running(
    args: list[str], ready: tuple[str, int] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if ready is not None:
            _wait_port(ready[0], ready[1], proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def http_server(host: str, port: int) -> Iterator[list[str]]:
    """python's http.server over a directory of pages from 200 B to 400 kB; yields their names."""
    with tempfile.TemporaryDirectory(prefix="netmon-web-") as root:
        names = []
        for size in (200, 1500, 7000, 30000, 120000, 400000):
            name = f"page{size}.html"
            Path(root, name).write_bytes(os.urandom(size // 2).hex().encode())
            names.append(name)
        args = [sys.executable, "-m", "http.server", "--bind", host, "--directory", root, str(port)]
        with _running(args, ready=(host, port)):
            yield names


@contextlib.contextmanager
def dns_server(host: str, port: int) -> Iterator[None]:
    """dnsmasq answering *.example.test and *.corp.test from its config, no upstream."""
    require("dnsmasq")
    args = [
        "dnsmasq",
        "-k",
        "--no-resolv",
        "--no-hosts",
        "-C",
        "/dev/null",
        "--bind-interfaces",
        f"--listen-address={host}",
        f"--port={port}",
        "--pid-file=",
        "--user=root",
        "--address=/example.test/127.0.0.10",
        "--address=/corp.test/127.0.0.11",
    ]
    with _running(args):
        _wait_udp_dns(host, port)
        yield


def _wait_udp_dns(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(
            [
                "dig",
                f"@{host}",
                "-p",
                str(port),
                "+tries=1",
                "+time=1",
                "+short",
                "ready.example.test",
            ],
            capture_output=True,
        )
        if result.returncode == 0 and result.stdout.strip():
            return
        time.sleep(0.05)
    raise ToolMissing(f"dnsmasq did not answer on {host}:{port}")


def self_signed_cert(root: Path, name: str, days: int) -> tuple[Path, Path]:
    """A throwaway EC P-256 key and self-signed certificate for ``name``, in ``root``."""
    key, cert = root / "tls_key.pem", root / "tls_cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(days),
         "-subj", f"/CN={name}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


@contextlib.contextmanager
def tls_server(host: str, port: int) -> Iterator[None]:
    """openssl s_server with a throwaway self-signed certificate, answering with a status page."""
    require("openssl")
    with tempfile.TemporaryDirectory(prefix="netmon-tls-") as root:
        key, cert = self_signed_cert(Path(root), "site.test", days=1)
        args = [
            "openssl",
            "s_server",
            "-accept",
            f"{host}:{port}",
            "-key",
            str(key),
            "-cert",
            str(cert),
            "-www",
            "-quiet",
        ]
        with _running(args, ready=(host, port)):
            yield


def curl_tls(host: str, port: int, count: int) -> None:
    """count HTTPS requests with SNI (site.test pinned to host), certificate not checked."""
    require("curl")
    for i in range(count):
        name = f"www{i % 5}.site.test"
        subprocess.run(
            [
                "curl",
                "-s",
                "-k",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "--resolve",
                f"{name}:{port}:{host}",
                f"https://{name}:{port}/",
            ],
            check=False,
        )


def curl_fetches(host: str, port: int, pages: list[str], count: int) -> None:
    """count curl runs, each fetching 1-3 pages over one connection (keep-alive)."""
    require("curl")

    def fetch(i: int) -> None:
        args = ["curl", "-s", "--max-time", "5"]
        for k in range(1 + i % 3):
            args += ["-o", "/dev/null", f"http://{host}:{port}/{pages[(i + k) % len(pages)]}"]
        subprocess.run(args, stdout=subprocess.DEVNULL, check=False)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fetch, range(count)))


def dig_queries(host: str, port: int, count: int) -> None:
    """count lookups of varied names (A and AAAA) with dig, one query per run."""
    require("dig")
    words = ("www", "mail", "api", "intranet", "files", "vpn", "print", "wiki")

    def query(i: int) -> None:
        name = f"{words[i % len(words)]}{i}.{'example' if i % 2 else 'corp'}.test"
        qtype = "AAAA" if i % 3 == 0 else "A"
        subprocess.run(
            ["dig", f"@{host}", "-p", str(port), "+tries=1", "+time=2", name, qtype],
            capture_output=True,
            check=False,
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(query, range(count)))


def nmap_syn_scan(target: str, ports: str) -> None:
    """A real SYN scan (nmap -sS) of target; needs root (raw sockets)."""
    require("nmap")
    result = subprocess.run(
        ["nmap", "-sS", "-Pn", "-n", "-T4", "--max-retries", "1", "-p", ports, target],
        capture_output=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise ToolMissing(f"nmap failed: {result.stderr.decode(errors='replace').strip()}")


def hping_syn_flood(target: str, port: int, count: int) -> None:
    """count SYNs from changing source ports at ~2,000/s (hping3 -S), bounded."""
    require("hping3")
    subprocess.run(
        ["hping3", "-q", "-S", "-p", str(port), "-i", "u500", "-c", str(count), target],
        capture_output=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def ssh_server(host: str, port: int) -> Iterator[None]:
    """A throwaway sshd (own host key and config) that accepts nobody."""
    require("sshd", "ssh-keygen", "ssh")
    with tempfile.TemporaryDirectory(prefix="netmon-sshd-") as root:
        key = Path(root, "host_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
        config = Path(root, "sshd_config")
        config.write_text(
            f"ListenAddress {host}:{port}\nHostKey {key}\nPidFile none\nUsePAM no\n"
            "PasswordAuthentication yes\nMaxStartups 100\nMaxAuthTries 3\nLoginGraceTime 10\n"
        )
        with _running(
            [shutil.which("sshd") or "sshd", "-D", "-e", "-f", str(config)], ready=(host, port)
        ):
            yield


def ssh_guesses(host: str, port: int, count: int) -> None:
    """count failed logins with the real ssh client (no key, no password: refused every time)."""
    options = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
    ]

    def attempt(i: int) -> None:
        user = ("root", "admin", "oracle", "test", "ubuntu")[i % 5]
        subprocess.run(
            ["ssh", *options, "-p", str(port), f"{user}@{host}", "true"],
            capture_output=True,
            timeout=15,
            check=False,
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(attempt, range(count)))
