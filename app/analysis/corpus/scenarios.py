"""Crafted traffic scenarios: frames with realistic TCP state and timing, one pcap each.

Every scenario talks between its own pair of loopback addresses so that the flows of one
capture all belong to it (that is how they are labelled). Timestamps are synthetic: a beacon
every 20 s for ten minutes is written in milliseconds.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR

from netmon.app.analysis.corpus.frames import tcp_frame, udp_frame, write_pcap

T0 = 1_767_225_600.0  # 2026-01-01 UTC: crafted captures start here
ACK, PSH, SYN, FIN, RST = "A", "PA", "S", "FA", "R"


@dataclass
class Capture:
    """Frames of one scenario, written in time order."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def add(self, frame: bytes, ts: float) -> None:
        self.frames.append((ts, frame))

    def udp(self, ts: float, src: str, dst: str, sport: int, dport: int, payload: bytes) -> None:
        self.add(udp_frame(src, dst, sport, dport, payload, ident=len(self.frames)), ts)

    def write(self, path: Path) -> int:
        write_pcap(path, self.frames)
        return len(self.frames)


class TcpSession:
    """One TCP connection between client and server with consistent seq/ack numbers."""

    def __init__(
        self, cap: Capture, rng: random.Random, client: str, server: str, dport: int, t: float
    ) -> None:
        self.cap, self.rng, self.t = cap, rng, t
        self.client, self.server = client, server
        self.sport, self.dport = rng.randint(32768, 60999), dport
        self.seq = {True: rng.getrandbits(32), False: rng.getrandbits(32)}
        self.win = {
            True: rng.choice((64240, 65495, 42340)),
            False: rng.choice((65160, 65483, 43690)),
        }
        self.rtt = rng.uniform(0.0001, 0.003)

    def _packet(self, from_client: bool, flags: str, payload: bytes = b"") -> None:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sport, dport = (self.sport, self.dport) if from_client else (self.dport, self.sport)
        ack = self.seq[not from_client] if "A" in flags else 0
        frame = tcp_frame(
            src,
            dst,
            sport,
            dport,
            flags,
            self.seq[from_client],
            ack,
            self.win[from_client],
            payload,
            ident=len(self.cap.frames),
        )
        self.cap.add(frame, self.t)
        self.seq[from_client] += len(payload) + (1 if ("S" in flags or "F" in flags) else 0)

    def wait(self, seconds: float) -> None:
        self.t += seconds

    def handshake(self) -> None:
        self._packet(True, SYN)
        self.wait(self.rtt / 2)
        self._packet(False, "SA")
        self.wait(self.rtt / 2)
        self._packet(True, ACK)

    def send(self, from_client: bool, data: bytes, mss: int = 1448) -> None:
        """Data in MSS-sized segments, each acknowledged by the peer."""
        for start in range(0, max(len(data), 1), mss):
            self.wait(self.rng.uniform(0.00002, 0.0004))
            self._packet(from_client, PSH, data[start : start + mss])
        self.wait(self.rtt / 2)
        self._packet(not from_client, ACK)

    def close(self) -> None:
        self.wait(self.rng.uniform(0.0001, 0.01))
        self._packet(True, FIN)
        self.wait(self.rtt / 2)
        self._packet(False, FIN)
        self.wait(self.rtt / 2)
        self._packet(True, ACK)


def _text(rng: random.Random, n: int) -> bytes:
    return "".join(rng.choices(string.ascii_letters + " \n", k=n)).encode()


def _noise(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _starts(rng: random.Random, count: int, span: float) -> list[float]:
    return sorted(T0 + rng.uniform(0, span) for _ in range(count))


# --- Benign ----------------------------------------------------------------------------------


def web(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """HTTP/1.1: a few requests per connection, pages of 1-60 kB, keep-alive pauses."""
    for t in _starts(rng, count, 600):
        s = TcpSession(cap, rng, client, server, rng.choice((80, 8080, 8000)), t)
        s.handshake()
        for _ in range(rng.randint(1, 4)):
            host = f"www{rng.randint(1, 9)}.example.test"
            s.send(True, f"GET /{rng.randint(1, 999)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            s.wait(rng.uniform(0.001, 0.05))
            s.send(False, b"HTTP/1.1 200 OK\r\n\r\n" + _text(rng, rng.randint(300, 60000)))
            s.wait(rng.uniform(0.01, 2.0))
        s.close()


def tls(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """TLS-like: hello exchange, then application records both ways."""
    for t in _starts(rng, count, 600):
        s = TcpSession(cap, rng, client, server, 443, t)
        s.handshake()
        s.send(True, b"\x16\x03\x01" + _noise(rng, rng.randint(250, 600)))
        s.send(False, b"\x16\x03\x03" + _noise(rng, rng.randint(2500, 5000)))
        s.send(True, b"\x14\x03\x03" + _noise(rng, rng.randint(60, 130)))
        for _ in range(rng.randint(1, 6)):
            s.wait(rng.uniform(0.005, 1.5))
            s.send(True, b"\x17\x03\x03" + _noise(rng, rng.randint(80, 900)))
            s.send(False, b"\x17\x03\x03" + _noise(rng, rng.randint(200, 40000)))
        s.close()


def dns(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """Ordinary lookups: short names, one query and one answer per flow."""
    words = ("mail", "www", "api", "cdn", "login", "static", "news", "shop")
    for t in _starts(rng, count, 600):
        name = f"{rng.choice(words)}.{rng.choice(('example', 'corp', 'school'))}.test"
        sport, qid = rng.randint(32768, 60999), rng.getrandbits(16)
        query = DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=rng.choice(("A", "AAAA"))))
        cap.udp(t, client, server, sport, 53, bytes(query))
        address = f"10.{rng.randint(0, 255)}.0.{rng.randint(1, 254)}"
        answer = DNS(
            id=qid, qr=1, ra=1, qd=query.qd, an=DNSRR(rrname=name, type="A", ttl=300, rdata=address)
        )
        cap.udp(t + rng.uniform(0.0002, 0.03), server, client, 53, sport, bytes(answer))


def ntp(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """NTP-like UDP: 48-byte request and answer, sometimes a few polls on one flow."""
    for t in _starts(rng, count, 600):
        sport = rng.choice((123, rng.randint(32768, 60999)))
        for _ in range(rng.randint(1, 3)):
            cap.udp(t, client, server, sport, 123, _noise(rng, 48))
            cap.udp(t + rng.uniform(0.0005, 0.02), server, client, 123, sport, _noise(rng, 48))
            t += rng.uniform(1, 16)


def bulk(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """Downloads of 0.1-1 MB (backups, updates): long runs of full segments."""
    for t in _starts(rng, count, 600):
        s = TcpSession(cap, rng, client, server, rng.choice((80, 443, 873)), t)
        s.handshake()
        s.send(True, _text(rng, rng.randint(100, 300)))
        s.send(False, _noise(rng, rng.randint(100_000, 1_000_000)))
        s.close()


# --- Attacks ---------------------------------------------------------------------------------


def portscan(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """SYN scan: one SYN per port, RST/ACK from closed ports, SYN/ACK + RST from open ones."""
    t = T0 + rng.uniform(0, 60)
    for port in rng.sample(range(1, 65536), count):
        s = TcpSession(cap, rng, client, server, port, t)
        s.win[True] = rng.choice((1024, 2048, 3072, 4096))
        s._packet(True, SYN)
        s.wait(s.rtt / 2)
        if rng.random() < 0.05:
            s._packet(False, "SA")
            s.wait(s.rtt / 2)
            s._packet(True, RST)
        else:
            s.seq[True] += 1
            s._packet(False, "RA")
        t += rng.uniform(0.00005, 0.002)


def synflood(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """SYN flood at one open port: SYN/ACKs (and retransmissions) never acknowledged."""
    t = T0 + rng.uniform(0, 60)
    port = rng.choice((80, 443, 8080))
    for _ in range(count):
        s = TcpSession(cap, rng, client, server, port, t)
        s._packet(True, SYN)
        s.wait(s.rtt / 2)
        s._packet(False, "SA")
        if rng.random() < 0.5:
            s.wait(1.0)
            s._packet(False, "SA")
        t += rng.uniform(0.00001, 0.0005)


def ssh_bruteforce(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """Password guessing: banner, key exchange, a few auth attempts, disconnect; over and over."""
    t = T0 + rng.uniform(0, 60)
    for _ in range(count):
        s = TcpSession(cap, rng, client, server, rng.choice((22, 22, 2222)), t)
        s.handshake()
        s.send(True, b"SSH-2.0-libssh_0.9.6\r\n")
        s.send(False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
        s.send(True, _noise(rng, rng.randint(1000, 1500)))
        s.send(False, _noise(rng, rng.randint(1000, 1100)))
        s.send(True, _noise(rng, 48))
        s.send(False, _noise(rng, rng.randint(500, 1600)))
        for _ in range(rng.randint(1, 3)):
            s.wait(rng.uniform(0.05, 2.5))  # the server's failed-password delay
            s.send(True, _noise(rng, rng.choice((84, 100, 116))))
            s.send(False, _noise(rng, rng.choice((52, 68))))
        s.close()
        t += rng.uniform(0.2, 3.0)


def dns_tunnel(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """Data in long random labels, TXT answers carrying data back (iodine/dnscat style)."""
    t = T0 + rng.uniform(0, 60)
    alphabet = string.ascii_lowercase + string.digits
    for _ in range(count):
        sport, qid = rng.randint(32768, 60999), rng.getrandbits(16)
        labels = [
            "".join(rng.choices(alphabet, k=rng.randint(50, 63))) for _ in range(rng.randint(2, 3))
        ]
        name = ".".join(labels) + ".t.tunnel.test"
        query = DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype="TXT"))
        cap.udp(t, client, server, sport, 53, bytes(query))
        txt = "".join(rng.choices(alphabet, k=rng.randint(150, 250)))
        answer = DNS(id=qid, qr=1, aa=1, qd=query.qd, an=DNSRR(rrname=name, type="TXT", rdata=txt))
        cap.udp(t + rng.uniform(0.001, 0.05), server, client, 53, sport, bytes(answer))
        t += rng.uniform(0.01, 0.3)


def c2_beacon(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """A long-lived connection checking in every 10-40 s with tiny, regular messages."""
    for t in _starts(rng, count, 120):
        s = TcpSession(cap, rng, client, server, rng.choice((443, 8443, 4444, 8080)), t)
        s.handshake()
        period = rng.uniform(10, 40)
        for _ in range(rng.randint(8, 20)):
            s.wait(period * rng.uniform(0.97, 1.03))
            s.send(True, _noise(rng, rng.randint(60, 120)))
            s.send(False, _noise(rng, rng.randint(40, 90)))
        s.close()


def exfiltration(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """Uploads of 0.2-2.4 MB in bursts: the client sends, the server only acknowledges."""
    for t in _starts(rng, count, 600):
        s = TcpSession(cap, rng, client, server, rng.choice((443, 21, 8443, 9001)), t)
        s.handshake()
        for _ in range(rng.randint(2, 6)):
            s.send(True, _noise(rng, rng.randint(100_000, 400_000)))
            s.wait(rng.uniform(0.5, 5))
        s.close()


Scenario = Callable[[random.Random, Capture, str, str, int], None]
# name -> (label, generator, flows); label "benign" or the attack type.
SCENARIOS: dict[str, tuple[str, Scenario, int]] = {
    "web": ("benign", web, 180),
    "tls": ("benign", tls, 180),
    "dns": ("benign", dns, 300),
    "ntp": ("benign", ntp, 150),
    "bulk": ("benign", bulk, 30),
    "portscan": ("portscan", portscan, 600),
    "synflood": ("synflood", synflood, 600),
    "ssh_bruteforce": ("password_guess", ssh_bruteforce, 150),
    "dns_tunnel": ("dns_tunnel", dns_tunnel, 300),
    "c2_beacon": ("c2_beacon", c2_beacon, 60),
    "exfiltration": ("exfiltration", exfiltration, 30),
}


def write_scenario(name: str, path: Path, seed: int, scale: float = 1.0) -> int:
    """Generate one scenario into a pcap; return its packet count."""
    _, generate, flows = SCENARIOS[name]
    rng = random.Random(f"{seed}:{name}")
    index = list(SCENARIOS).index(name) + 1
    client, server = f"127.77.{index}.1", f"127.77.{index}.2"
    cap = Capture()
    generate(rng, cap, client, server, max(2, int(flows * scale)))
    return cap.write(path)
