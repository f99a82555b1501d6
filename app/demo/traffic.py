"""Generated demo traffic: rounds of benign and hostile flows, replayed with current timestamps.

A round is built with the analysis corpus's frame builders (``Capture``, ``TcpSession``), in
packet time starting at 0; ``DemoSource`` then plays it against the wall clock, so every frame
the agent meters carries the time it is metered at. Between frames and between rounds the
source yields ``None`` (a quiet live source), which keeps the agent's timers and heartbeats
running and lets it stop promptly.

Each round holds browsing (HTTP, TLS, DNS for approved names), SSH, RDP and Telnet attempts from
outside addresses, a password guesser (one address trying SSH logins again and again), a SYN scan
from an address on the demo threat list, and a DNS lookup of an unapproved domain: every detector
of the agent fires at least once per round, and the live wall shows the scanner and the guesser
as one row each however many flows they make.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

from scapy.layers.dns import DNS, DNSQR, DNSRR

from netmon.app.analysis.corpus.scenarios import Capture, TcpSession

LINKTYPE_ETHERNET = 1
APPROVED_DOMAINS = ("example.com", "example.org", "debian.org")
UNAPPROVED_DOMAIN = "files.unapproved-share.test"
THREAT_NETWORK = "198.51.100.0/24"  # written to the demo agent's threat list
SCANNER = "198.51.100.66"
GUESSER = "203.0.113.200"  # the random attackers below take .1-.199: never this one
OFFICE = "10.20.0."  # the monitored branch's hosts
RESOLVER = "10.20.0.53"
WEB_SERVERS = {"www.example.com": "93.184.215.14", "deb.debian.org": "151.101.2.132"}
ATTACKERS = ("203.0.113.", "192.0.2.")

Frame = tuple[float, bytes, int, int]


def _tcp_exchange(
    cap: Capture,
    rng: random.Random,
    client: str,
    server: str,
    port: int,
    t: float,
    sizes: tuple[int, int],
) -> None:
    """A complete TCP connection: handshake, one request, one answer, close."""
    session = TcpSession(cap, rng, client, server, port, t)
    session.handshake()
    session.send(True, rng.randbytes(sizes[0]))
    session.send(False, rng.randbytes(sizes[1]))
    session.close()


def _attempt(
    cap: Capture, rng: random.Random, attacker: str, server: str, port: int, t: float
) -> None:
    """A short login attempt at a critical port: banner exchange, a guess, reset."""
    _tcp_exchange(cap, rng, attacker, server, port, t, (rng.randint(40, 400), rng.randint(20, 300)))


def _dns(cap: Capture, rng: random.Random, client: str, name: str, answer: str, t: float) -> None:
    sport, qid = rng.randint(32768, 60999), rng.getrandbits(16)
    query = DNS(id=qid, rd=1, qd=DNSQR(qname=name))
    cap.udp(t, client, RESOLVER, sport, 53, bytes(query))
    reply = DNS(id=qid, qr=1, rd=1, ra=1, qd=query.qd, an=DNSRR(rrname=name, rdata=answer))
    cap.udp(t + rng.uniform(0.002, 0.03), RESOLVER, client, 53, sport, bytes(reply))


def _scan(cap: Capture, rng: random.Random, target: str, t: float, ports: int) -> None:
    """A SYN scan: closed ports answer RST/ACK."""
    for port in rng.sample(range(1, 10000), ports):
        session = TcpSession(cap, rng, SCANNER, target, port, t)
        session._packet(True, "S")
        session.wait(session.rtt)
        session.seq[True] += 1
        session._packet(False, "RA")
        t += rng.uniform(0.001, 0.01)


def _attacker(rng: random.Random) -> str:
    """A random outside address, a new one for each attempt."""
    return rng.choice(ATTACKERS) + str(rng.randint(1, 199))


def build_round(rng: random.Random, span_s: float = 4.0) -> list[tuple[float, bytes]]:
    """One round of traffic as (seconds from the round's start, Ethernet frame), time-ordered."""
    cap = Capture()

    def at() -> float:
        return rng.uniform(0, span_s)

    for _ in range(rng.randint(8, 14)):  # browsing
        client = OFFICE + str(rng.randint(10, 60))
        name = rng.choice(tuple(WEB_SERVERS))
        t = at()
        _dns(cap, rng, client, name, WEB_SERVERS[name], t)
        port = rng.choice((80, 443))
        _tcp_exchange(
            cap,
            rng,
            client,
            WEB_SERVERS[name],
            port,
            t + 0.05,
            (rng.randint(200, 600), rng.randint(2000, 40000)),
        )
    for name in ("www.example.org", "security.debian.org"):
        _dns(cap, rng, OFFICE + str(rng.randint(10, 60)), name, "93.184.215.15", at())
    _attempt(cap, rng, _attacker(rng), OFFICE + "22", 22, at())  # SSH
    _attempt(cap, rng, _attacker(rng), OFFICE + "33", 3389, at())  # RDP
    _attempt(cap, rng, _attacker(rng), OFFICE + "23", 23, at())  # Telnet
    for _ in range(rng.randint(6, 10)):  # the guesser: one short SSH login attempt after another
        _attempt(cap, rng, GUESSER, OFFICE + "22", 22, at())
    _scan(cap, rng, OFFICE + str(rng.randint(2, 9)), at(), ports=rng.randint(20, 40))
    _dns(cap, rng, OFFICE + str(rng.randint(10, 60)), UNAPPROVED_DOMAIN, "192.0.2.200", at())
    return sorted(cap.frames, key=lambda item: item[0])


class DemoSource:
    """Rounds of generated traffic played against the wall clock, forever (until ``stop``)."""

    def __init__(
        self,
        interval_s: float = 10.0,
        seed: int | None = None,
        stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.stop, self.clock, self.sleep = stop, clock, sleep
        self.rounds = 0

    def dropped(self) -> int:
        """Generated frames are never dropped."""
        return 0

    def close(self) -> None:
        """Nothing to release."""

    def __iter__(self) -> Iterator[Frame | None]:
        while not self.stop():
            start = self.clock()
            for offset, frame in build_round(self.rng):
                yield from self._quiet_until(start + offset)
                if self.stop():
                    return
                yield (self.clock(), frame, len(frame), LINKTYPE_ETHERNET)
            self.rounds += 1
            yield from self._quiet_until(start + self.interval_s)

    def _quiet_until(self, moment: float) -> Iterator[None]:
        """Yield None (a quiet capture) every <= 0.2 s until the wall clock reaches ``moment``."""
        while not self.stop():
            left = moment - self.clock()
            if left <= 0:
                return
            self.sleep(min(left, 0.2))
            yield None
