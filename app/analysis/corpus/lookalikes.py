"""A crafted benign look-alike: long CDN names resolved again and again (a hard negative).

The other look-alikes issue 15 names (a monitoring loop over many hosts, scripted SSH logins
that succeed, a jittery update poller, a bulk upload) are real traffic now: the train capture
(tests/data/real/train.*) holds each, made by real tools with other settings than the held-out
capture's, and they replace the crafted ones that stood in for them here. This one stays: the
real train capture resolves a single CDN name, and without a few long names each asked again
the model loses the contrast a DNS tunnel is judged by (a new long name every query): built
without it, the default model called the held-out dig tunnel `unknown` throughout
(docs/analysis.md, "What the numbers say").

It runs from its own loopback addresses (127.78.N.x), like scenarios.py's.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR

from netmon.app.analysis.corpus.scenarios import T0, Capture

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


LookAlike = Callable[[random.Random, Capture, str, str, int], None]
# name -> (generator, count); every flow is labelled benign.
LOOKALIKES: dict[str, tuple[LookAlike, int]] = {
    "lookalike_cdn_names": (cdn_lookups, 200),
}


def write_lookalike(name: str, path: Path, seed: int, scale: float = 1.0) -> int:
    """Generate one look-alike scenario into a pcap; return its packet count."""
    generate, count = LOOKALIKES[name]
    rng = random.Random(f"{seed}:{name}")
    index = list(LOOKALIKES).index(name) + 1
    client, server = f"127.78.{index}.1", f"127.78.{index}.2"
    cap = Capture()
    generate(rng, cap, client, server, max(2, int(count * scale)))
    return cap.write(path)
