"""Benign look-alikes: crafted benign traffic shaped like an attack (the model's hard negatives).

A model trained on attacks and on ordinary browsing has never seen a monitoring system poll
thirty hosts, an application resolve the same long CDN name every few seconds, a deployment
script log in over SSH again and again, or an updater poll with jitter. Each of those looks,
per flow and in its source's context, closer to an attack than to browsing, so without
examples the model calls them unknown (or worse). These scenarios teach it the difference for
the kinds of look-alike issue 15 names; their parameters (hosts, periods, names, sizes) are
chosen here, not read from any capture the model is scored on.

Every scenario runs from its own loopback addresses (127.78.N.x), like scenarios.py's.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR

from netmon.app.analysis.corpus.scenarios import T0, Capture, TcpSession

SPAN = 600.0  # every scenario spreads over ten minutes


def _ok(rng: random.Random, size: int) -> bytes:
    body = bytes(rng.choice(b'abcdefghijklmnopqrstuvwxyz0123456789{}:," ') for _ in range(size))
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body


def monitoring(rng: random.Random, cap: Capture, client: str, net: str, rounds: int) -> None:
    """A monitoring server checking 24-36 hosts each round: HTTP health pages, SSH and SMTP
    banners, now and then a host that is down (refused); rounds every 20-60 s."""
    hosts = [f"{net}.{10 + i}" for i in range(rng.randint(24, 36))]
    checks = {host: rng.choice(("http", "http", "metrics", "ssh", "smtp")) for host in hosts}
    t = T0
    for _ in range(rounds):
        for host in hosts:
            t += rng.uniform(0.005, 0.2)
            _check(rng, cap, client, host, checks[host], t)
        t += rng.uniform(20, 60)


def _check(rng: random.Random, cap: Capture, client: str, host: str, kind: str, t: float) -> None:
    port = {"http": 80, "metrics": 9100, "ssh": 22, "smtp": 25}[kind]
    s = TcpSession(cap, rng, client, host, port, t)
    if rng.random() < 0.02:  # the host or its service is down this round
        s._packet(True, "S")
        s.wait(s.rtt)
        s.seq[True] += 1
        s._packet(False, "RA")
        return
    s.handshake()
    if kind in ("http", "metrics"):
        path = "/health" if kind == "http" else "/metrics"
        s.send(True, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: check\r\n\r\n".encode())
        s.wait(rng.uniform(0.001, 0.02))
        s.send(False, _ok(rng, rng.randint(20, 200) if kind == "http" else rng.randint(2000, 9000)))
    else:
        banner = b"SSH-2.0-OpenSSH_9.6\r\n" if kind == "ssh" else b"220 mail.corp ESMTP ready\r\n"
        s.send(False, banner)
        if kind == "smtp":
            s.send(True, b"QUIT\r\n")
            s.send(False, b"221 bye\r\n")
        elif rng.random() < 0.5:  # many checkers abort once they have the banner
            s._packet(True, "FA")
            s._packet(True, "R")
            return
    s.close()


_CDN_WORDS = (
    "static", "img", "media", "assets", "edge", "cache", "content", "delivery", "global",
    "images", "video", "prod", "eu", "west", "origin", "shard", "v2", "files", "cdn", "app",
)  # fmt: skip


def _cdn_name(rng: random.Random) -> str:
    """A long CDN name: words and a few digits, as long as the tunnel scenario's names (60-180
    characters), so that only its repetition tells it from a tunnel."""
    length = rng.randint(60, 180)
    labels = [f"{rng.choice('aesg')}{rng.randint(100, 99999)}"]
    while sum(map(len, labels)) + len(labels) < length - 12:
        words = rng.sample(_CDN_WORDS, rng.randint(1, 4))
        labels.append("-".join(words)[:63])
    return ".".join(labels) + "." + rng.choice(("cdnprovider", "edgenet", "fastcache")) + ".example"


def cdn_lookups(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """An application resolving the same few long CDN names over and over (CNAME + A)."""
    names = [_cdn_name(rng) for _ in range(rng.randint(2, 5))]
    t = T0
    for _ in range(count):
        t += rng.uniform(0.3, 6.0)
        name = rng.choice(names)
        sport, qid = rng.randint(32768, 60999), rng.getrandbits(16)
        query = DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=rng.choice(("A", "AAAA"))))
        cap.udp(t, client, server, sport, 53, bytes(query))
        target = "e" + name.split(".", 1)[1]
        answer = DNS(
            id=qid,
            qr=1,
            ra=1,
            qd=query.qd,
            an=DNSRR(rrname=name, type="CNAME", ttl=20, rdata=target)
            / DNSRR(rrname=target, type="A", ttl=20, rdata=f"10.{rng.randint(0, 255)}.8.9"),
        )
        cap.udp(t + rng.uniform(0.0005, 0.04), server, client, 53, sport, bytes(answer))


def scripted_logins(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """A deployment script: SSH in (accepted at once), run a command, read its output, leave;
    again every 2-30 s."""
    t = T0
    for _ in range(count):
        t += rng.uniform(2, 30)
        s = TcpSession(cap, rng, client, server, 22, t)
        s.handshake()
        s.send(True, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
        s.send(False, b"SSH-2.0-OpenSSH_9.6\r\n")
        s.send(True, rng.randbytes(rng.randint(1200, 1600)))
        s.send(False, rng.randbytes(rng.randint(1000, 1200)))
        s.send(True, rng.randbytes(rng.randint(40, 60)))
        s.send(False, rng.randbytes(rng.randint(400, 700)))
        s.send(True, rng.randbytes(rng.choice((380, 420, 460))))  # public key: accepted
        s.send(False, rng.randbytes(rng.choice((28, 36))))
        s.send(True, rng.randbytes(rng.randint(100, 300)))  # channel, exec
        s.wait(rng.uniform(0.05, 1.5))
        s.send(False, rng.randbytes(rng.randint(100, 6000)))  # the command's output
        s.close()


def update_poller(rng: random.Random, cap: Capture, client: str, server: str, count: int) -> None:
    """An updater asking for news every 15-90 s (+-35% jitter), one connection per poll."""
    period = rng.uniform(15, 90)
    t = T0
    for _ in range(count):
        t += period * rng.uniform(0.65, 1.35)
        s = TcpSession(cap, rng, client, server, rng.choice((80, 443, 8080)), t)
        s.handshake()
        s.send(True, b"GET /api/v2/updates?channel=stable HTTP/1.1\r\nHost: updates\r\n\r\n")
        s.wait(rng.uniform(0.005, 0.2))
        s.send(False, _ok(rng, rng.randint(60, 1500)))
        s.close()


LookAlike = Callable[[random.Random, Capture, str, str, int], None]
# name -> (generator, count); every flow is labelled benign. monitoring's count is rounds,
# and its "server" argument is the network its hosts live on.
LOOKALIKES: dict[str, tuple[LookAlike, int]] = {
    "lookalike_monitoring": (monitoring, 8),
    "lookalike_cdn_names": (cdn_lookups, 200),
    "lookalike_ssh_logins": (scripted_logins, 50),
    "lookalike_poller": (update_poller, 30),
}


def write_lookalike(name: str, path: Path, seed: int, scale: float = 1.0) -> int:
    """Generate one look-alike scenario into a pcap; return its packet count."""
    generate, count = LOOKALIKES[name]
    rng = random.Random(f"{seed}:{name}")
    index = list(LOOKALIKES).index(name) + 1
    client, server = f"127.78.{index}.1", f"127.78.{index}.2"
    if generate is monitoring:
        server = f"127.78.{index}"
    cap = Capture()
    generate(rng, cap, client, server, max(2, int(count * scale)))
    return cap.write(path)
