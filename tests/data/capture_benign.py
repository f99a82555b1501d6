"""Benign traffic and benign look-alikes, each from its own client host.

Ordinary work (web pages after a DNS lookup, DNS lookups, TLS fetches, SSH and Telnet sessions
with data, a long idle SSH session, pings) and the look-alikes: scripted SSH logins that
succeed, a monitoring loop over many hosts, a jittery update poller, one long CDN name asked
again and again, a bulk upload. Each set has its own look-alikes, made with other settings
(counts, periods, hosts, ports, tools), so the held-out ones stay unseen. Each returns its
``Run`` like the attacks.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from tests.data.capture_net import Host
from tests.data.capture_servers import PASSWORD, SERVICE_PORT, SITES, TLS_NAMES, USER, Victim
from tests.data.capture_tools import (
    SSH_OPTIONS,
    Run,
    checked,
    command_line,
    curl,
    dig,
    paced,
    ssh,
    telnet_session,
)
from tests.data.captures import Expected

PAGES = ("index.html", "news.html", "style.css", "app.js", "logo.png")
QTYPES = ("A", "A", "AAAA", "A", "MX", "TXT")


def _page_urls(name: str, index: int) -> list[str]:
    """1 to 3 pages for one curl run (http.server speaks HTTP/1.0: a connection per page)."""
    return [f"http://{name}/{PAGES[(index + k) % len(PAGES)]}" for k in range(1 + index % 3)]


def web_browsing(host: Host, victim: Victim, rng: random.Random, count: int) -> Run:
    """count visits: dig the site's name, then curl 1-3 of its pages."""

    def visit(index: int) -> None:
        name = SITES[index % len(SITES)]
        checked(host, dig(victim.ip, name), timeout=10)
        args = [
            "curl",
            "-s",
            "--max-time",
            "10",
            "--resolve",
            f"{name}:80:{victim.site_address(name)}",
        ]
        for url in _page_urls(name, index):
            args += ["-o", "/dev/null", url]
        checked(host, args, timeout=15)

    paced(count, 0.6, 0.5, rng, visit)
    return Run(
        command=f"{command_line(dig(victim.ip, 'NAME'))}; curl -s --resolve NAME:80:ADDRESS URL...",
        targets=(victim.ip, *(victim.site_address(name) for name in SITES)),
        target_ports="80,U:53",
        expected=Expected(connections=sum(len(_page_urls("", i)) for i in range(count))),
        notes=f"{count} visits 0.6 s +- 50 % apart, each a dig of one of {len(SITES)} sites "
        "then one curl of 1-3 pages from the address the resolver gave (HTTP/1.0: one "
        "connection per page)",
    )


def web_v6(host: Host, victim: Victim, rng: random.Random, count: int) -> Run:
    """count page fetches and AAAA lookups over IPv6."""
    ip6 = victim.host.ipv6

    def visit(index: int) -> None:
        checked(host, dig(ip6, SITES[index % len(SITES)], "AAAA"), timeout=10)
        checked(host, curl(f"http://[{ip6}]/{PAGES[index % len(PAGES)]}"), timeout=15)

    paced(count, 1.5, 0.5, rng, visit)
    return Run(
        command=f"{command_line(dig(ip6, SITES[0], 'AAAA'))}; {command_line(curl(f'http://[{ip6}]/PAGE'))}",
        targets=(ip6,),
        target_ports="80,U:53",
        expected=Expected(connections=count),
        notes=f"{count} visits 1.5 s +- 50 % apart over IPv6",
    )


def dns_lookups(host: Host, victim: Victim, rng: random.Random, count: int) -> Run:
    """count lookups of real-looking names (A, AAAA, MX, TXT); every tenth over TCP."""
    words = ("www", "mail", "api", "login", "static", "cdn", "vpn", "files", "calendar", "auth")
    domains = ("example.com", "corp.test", "python.org", "debian.org", "office.example.net")

    def lookup(index: int) -> None:
        name = f"{words[index % len(words)]}.{domains[index % len(domains)]}"
        extra = ("+tcp",) if index % 10 == 9 else ()
        checked(host, dig(victim.ip, name, QTYPES[index % len(QTYPES)], *extra), timeout=10)

    paced(count, 0.6, 0.5, rng, lookup)
    return Run(
        command=command_line(dig(victim.ip, "www.example.com", "A")),
        targets=(victim.ip,),
        target_ports="53,U:53",
        expected=Expected(
            queries=count, names=len({f"{words[i % 10]}.{domains[i % 5]}" for i in range(count)})
        ),
        notes=f"{count} lookups 0.6 s +- 50 % apart; every tenth with +tcp",
    )


def tls_fetches(host: Host, victim: Victim, rng: random.Random, count: int) -> Run:
    """count HTTPS fetches with SNI (curl -k: the certificate is self-signed)."""
    names = TLS_NAMES

    def fetch(index: int) -> None:
        name = names[index % len(names)]
        checked(host, curl(f"https://{name}/", "-k", "--resolve", f"{name}:443:{victim.ip}"))

    paced(count, 1.5, 0.5, rng, fetch)
    return Run(
        command=command_line(
            curl(f"https://{names[0]}/", "-k", "--resolve", f"{names[0]}:443:{victim.ip}")
        ),
        targets=(victim.ip,),
        target_ports="443",
        expected=Expected(connections=count),
        notes=f"{count} fetches 1.5 s +- 50 % apart over 4 server names",
    )


def ssh_sessions(host: Host, victim: Victim, rng: random.Random, count: int) -> Run:
    """count key logins that copy /etc/services back (every fourth over IPv6)."""

    def session(index: int) -> None:
        target = victim.host.ipv6 if index % 4 == 3 else victim.ip
        checked(host, ssh(host, victim.client_key, target, USER, "cat /etc/services"))

    paced(count, 4.0, 0.5, rng, session)
    return Run(
        command=command_line(ssh(host, victim.client_key, victim.ip, USER, "cat /etc/services")),
        targets=tuple(victim.host.addresses),
        target_ports="22",
        expected=Expected(connections=count),
        notes=f"{count} sessions 4 s +- 50 % apart, every fourth over IPv6",
    )


def idle_ssh(host: Host, victim: Victim, rng: random.Random) -> Run:
    """One SSH session idle for 70 s (longer than the agent's 60 s idle timeout), then data."""
    args = ssh(host, victim.client_key, victim.ip, USER, "sleep 70; cat /etc/services")
    checked(host, args, timeout=120)
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="22",
        expected=Expected(connections=1),
        notes="no packet at all during the 70 s sleep (no keep-alives configured): a meter "
        "with a 60 s idle timeout sees two pieces of one connection",
    )


def telnet_sessions(host: Host, victim: Victim, rng: random.Random, count: int) -> Run:
    """count Telnet logins (the real telnet client, scripted) that print /etc/services."""
    for _ in range(count):
        telnet_session(host, victim.ip, USER, PASSWORD, "cat /etc/services")
    return Run(
        command=f"telnet {victim.ip}  (login {USER}, then: cat /etc/services; exit)",
        targets=(victim.ip,),
        target_ports="23",
        expected=Expected(connections=count, attempts=count, succeeded=True),
        notes=f"{count} sessions, one after the other, each logging in with the right password",
    )


def pings(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nping --icmp: 4 echo requests each to the victim and 5 of its extra addresses."""
    targets = (victim.ip, *victim.host.extra_ipv4[:5])
    args: list[str] = []
    for target in targets:
        args = ["nping", "--icmp", "-c", "4", "--delay", "250ms", target]
        checked(host, args, timeout=30)
    return Run(
        command=command_line(args),
        targets=targets,
        target_ports="icmp",
        expected=Expected(hosts=len(targets), packets=4 * len(targets)),
        notes="run once per target; IPv4 only (ping is not installed and nping's ICMPv6 mode "
        "fails on this machine)",
    )


# --- held-out look-alikes ------------------------------------------------------------------


def ssh_logins_ok(host: Host, victim: Victim, rng: random.Random) -> Run:
    """30 scripted key logins that succeed (ssh -i key user@victim true), back to back."""
    args = ssh(host, victim.client_key, victim.ip, USER, "true")
    for _ in range(30):
        checked(host, args)
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="22",
        expected=Expected(connections=30, attempts=30, succeeded=True),
        notes="run 30 times back to back, like a configuration tool's loop",
    )


MONITOR_ROUND = (
    'for a in "$@"; do '
    'curl -s -o /dev/null --max-time 3 "http://$a/health"; '
    'timeout 3 bash -c "exec 3<>/dev/tcp/$a/22" 2>/dev/null; '
    "done"
)


def monitoring(host: Host, victim: Victim, rng: random.Random) -> Run:
    """3 rounds ~5 s apart: an HTTP health GET and a bare TCP connect to port 22 on 40 hosts."""
    addresses = list(victim.host.extra_ipv4)
    args = ["bash", "-c", MONITOR_ROUND, "monitor", *addresses]
    paced(3, 5.0, 0.1, rng, lambda _i: checked(host, args, timeout=120))
    return Run(
        command=command_line(["bash", "-c", MONITOR_ROUND, "monitor", "ADDRESS..."]),
        targets=victim.host.extra_ipv4,
        target_ports="22,80",
        expected=Expected(hosts=len(addresses), ports=2, connections=3 * 2 * len(addresses)),
        notes="3 rounds, starts 5 s +- 10 % apart; a bare connect and close is what nc -z does",
    )


def jittery_poller(host: Host, victim: Victim, rng: random.Random) -> Run:
    """An update poller: curl every 15 s +- 50 %, 12 fetches (~3 minutes)."""
    args = curl(f"http://{victim.ip}/updates/latest.json")
    paced(12, 15.0, 0.5, rng, lambda _i: checked(host, args))
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="80",
        expected=Expected(connections=12, period_s=15.0, jitter=0.5),
        notes="run 12 times, starts 15 s +- 50 % apart (uniform, seeded)",
    )


CDN_NAME = "e7791.dscx.akamaiedge.net.static-content-delivery.images.exmpl-cdn.com"


def repeated_name(
    host: Host, victim: Victim, rng: random.Random, name: str, kind: str, times: int, gap: float
) -> Run:
    """One long name looked up ``times`` times (``kind`` records), ``gap`` s +- 50 % apart: a
    CDN name is long, but it repeats, unlike a tunnel's."""
    args = dig(victim.ip, name, kind)
    paced(times, gap, 0.5, rng, lambda _i: checked(host, args, timeout=10))
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="U:53",
        expected=Expected(names=1, queries=times),
        notes=f"run {times} times, {gap} s +- 50 % apart; the name has {len(name)} characters",
    )


def cdn_name(host: Host, victim: Victim, rng: random.Random) -> Run:
    """The same 70-character CDN name looked up 200 times."""
    return repeated_name(host, victim, rng, CDN_NAME, "A", 200, 0.15)


def bulk_upload(host: Host, victim: Victim, rng: random.Random) -> Run:
    """One 20 MB upload with scp (SFTP) to the victim."""
    with tempfile.TemporaryDirectory(prefix="netmon-upload-") as tmp:
        backup = Path(tmp, "backup.tar")
        backup.write_bytes(os.urandom(20 * 1024 * 1024))
        args = [
            "scp",
            *SSH_OPTIONS,
            "-o",
            "BatchMode=yes",
            "-i",
            str(victim.client_key),
            str(backup),
            f"{USER}@{victim.ip}:backup.tar",
        ]
        checked(host, args, timeout=300)
    (victim.root / "home" / "backup.tar").unlink(missing_ok=True)
    return Run(
        command=command_line(args).replace(str(backup), "backup.tar"),
        targets=(victim.ip,),
        target_ports="22",
        expected=Expected(connections=1, packets=0),
        notes="20 MiB of random bytes, one SFTP connection",
    )


# --- train look-alikes ---------------------------------------------------------------------


def ssh_password_logins(host: Host, victim: Victim, rng: random.Random) -> Run:
    """20 scripted password logins that succeed (sshpass, the right password), running uptime."""
    args = [
        "sshpass",
        "-p",
        PASSWORD,
        "ssh",
        *SSH_OPTIONS,
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password",
        f"{USER}@{victim.ip}",
        "uptime",
    ]
    paced(20, 1.0, 0.5, rng, lambda _i: checked(host, args))
    return Run(
        command=command_line(args).replace(PASSWORD, "PASSWORD"),
        targets=(victim.ip,),
        target_ports="22",
        expected=Expected(connections=20, attempts=20, succeeded=True),
        notes="run 20 times, starts 1 s +- 50 % apart: the same tool as the train set's "
        "guesser, with the right password, like a script that logs in with one",
    )


SERVICE_ROUND = (
    'for a in "$@"; do '
    f'curl -s -o /dev/null --max-time 3 "http://$a:{SERVICE_PORT}/health"; '
    'timeout 3 bash -c "exec 3<>/dev/tcp/$a/443" 2>/dev/null; '
    "done"
)
MONITORED = slice(15, 40)  # 25 of the victim's 40 extra addresses


def service_checks(host: Host, victim: Victim, rng: random.Random) -> Run:
    """3 rounds ~8 s apart: a health GET on 8081 and a bare TCP connect to 443 on 25 hosts."""
    addresses = list(victim.host.extra_ipv4[MONITORED])
    args = ["bash", "-c", SERVICE_ROUND, "monitor", *addresses]
    paced(3, 8.0, 0.1, rng, lambda _i: checked(host, args, timeout=120))
    return Run(
        command=command_line(["bash", "-c", SERVICE_ROUND, "monitor", "ADDRESS..."]),
        targets=tuple(addresses),
        target_ports=f"443,{SERVICE_PORT}",
        expected=Expected(hosts=len(addresses), ports=2, connections=3 * 2 * len(addresses)),
        notes="3 rounds, starts 8 s +- 10 % apart, over the last 25 extra addresses; the "
        "connect to 443 is closed before the TLS handshake (a load balancer's TCP check)",
    )


def feed_poller(host: Host, victim: Victim, rng: random.Random) -> Run:
    """A feed poller: curl every 12 s +- 40 % from a web site's address, 10 fetches (~2 min)."""
    address = victim.site_address("www.debian.org")
    args = curl(f"http://{address}/updates/feed.xml")
    paced(10, 12.0, 0.4, rng, lambda _i: checked(host, args))
    return Run(
        command=command_line(args),
        targets=(address,),
        target_ports="80",
        expected=Expected(connections=10, period_s=12.0, jitter=0.4),
        notes="run 10 times, starts 12 s +- 40 % apart (uniform, seeded)",
    )


CDN_NAME_TRAIN = "d3k8q0x7rz2m4.cloudfront-media.static-assets.delivery.global-edge.example-cdn.net"


def cdn_name_aaaa(host: Host, victim: Victim, rng: random.Random) -> Run:
    """The same long CDN name looked up (AAAA) 150 times."""
    return repeated_name(host, victim, rng, CDN_NAME_TRAIN, "AAAA", 150, 0.3)


def http_upload(host: Host, victim: Victim, rng: random.Random) -> Run:
    """One 10 MiB upload over HTTP (curl -T, a PUT) to the internal service."""
    with tempfile.TemporaryDirectory(prefix="netmon-upload-") as tmp:
        backup = Path(tmp, "backup.tar")
        backup.write_bytes(os.urandom(10 * 1024 * 1024))
        # no Expect: 100-continue: the HTTP/1.0 service never answers it (curl would wait 1 s)
        url = f"http://{victim.ip}:{SERVICE_PORT}/backup/backup.tar"
        args = ["curl", "-s", "-o", "/dev/null", "--max-time", "120", "-H", "Expect:"]
        args += ["-T", str(backup), url]
        checked(host, args, timeout=180)
    return Run(
        command=command_line(args).replace(str(backup), "backup.tar"),
        targets=(victim.ip,),
        target_ports=str(SERVICE_PORT),
        expected=Expected(connections=1),
        notes="10 MiB of random bytes in one HTTP PUT; the service reads and drops them",
    )
