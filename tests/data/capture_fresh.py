"""The fresh set: every behaviour and look-alike again, with settings neither other set uses.

The held-out set was looked at while the detectors were built (its misses shaped design
changes), so it stopped being a clean measure. This set was made afterwards and scored once:
other port ranges, scan types and delays, another flood port, rate and count, hydra with
several logins and two tasks, sshpass over IPv6, a beacon that POSTs to another port, a tunnel
of CNAME lookups under another parent; look-alikes with other counts, periods, commands, ports
and tools. ``test_capture_truth.py`` checks that no attack or look-alike command is shared with
another set. Each function runs one scenario and returns its ``Run``, like capture_attacks and
capture_benign.
"""

from __future__ import annotations

import base64
import os
import random
import tempfile
from pathlib import Path

from tests.data import capture_benign as benign
from tests.data.capture_attacks import (
    GUESSES,
    HydraRun,
    extra_range,
    flood,
    hydra,
    scan,
    with_delay,
)
from tests.data.capture_net import Host, run
from tests.data.capture_servers import ALT_PORT, PASSWORD, SERVICE_PORT, USER, Victim
from tests.data.capture_tools import (
    SSH_OPTIONS,
    Run,
    checked,
    command_line,
    curl,
    dig,
    nmap,
    paced,
    ssh,
)
from tests.data.captures import Expected

# 20 ports in neither other slow scan's list (20-59; the held-out 30); all closed on the victim
SLOW_FRESH_PORTS = "79,88,106,113,119,179,199,389,427,465,513,515,543,544,548,554,587,631,873,990"
# 12 UDP ports, 53 (open) and 11 in neither other UDP scan's list
UDP_FRESH_12 = "53,111,177,427,1194,1701,1812,2049,3478,5060,5683,10161"
ADDR_SCAN_HOSTS = slice(10, 40)  # 30 of the victim's 40 extra addresses


# --- attacks -------------------------------------------------------------------------------


def syn_scan_3000(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sS -T3 over ports 3000-3400 (all closed)."""
    return scan(host, ["-sS", "-T3", "-n"], victim.ip, "3000-3400", "")


def connect_scan_top100(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sT over nmap's 100 most frequent TCP ports (--top-ports 100)."""
    command, report = nmap(host, ["-sT", "-n", "--top-ports", "100", victim.ip])
    return Run(
        command=command,
        targets=(victim.ip,),
        target_ports=report.services,
        expected=Expected(ports=report.ports_probed, hosts=1, open_ports=report.open_ports),
        notes="target_ports is the list nmap's XML report gives for --top-ports 100",
    )


def slow_scan_1s(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sT --scan-delay 1s over 20 ports: a slow connect scan."""
    run = scan(host, ["-sT", "-n", "--scan-delay", "1s"], victim.ip, SLOW_FRESH_PORTS, "")
    return with_delay(run, 1.0)


def udp_scan_12(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sU (default timing) over 12 ports of the victim's IPv4 address."""
    return scan(
        host,
        ["-sU", "-n"],
        victim.ip,
        UDP_FRESH_12,
        "closed ports answer ICMP port unreachable, rate-limited by the victim's kernel",
    )


def addr_scan_443(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sS -T3 -p 443 over 30 of the victim's extra addresses."""
    addresses = victim.host.extra_ipv4[ADDR_SCAN_HOSTS]
    first, last = addresses[0], addresses[-1].rsplit(".", 1)[1]
    command, report = nmap(host, ["-sS", "-T3", "-n", "-p", "443", f"{first}-{last}"])
    return Run(
        command=command,
        targets=addresses,
        target_ports="443",
        expected=Expected(ports=1, hosts=report.hosts_up, open_ports=report.open_ports),
        notes=f"the victim's extra addresses are {extra_range(victim)}; this scan takes 30",
    )


def syn_flood_8080(host: Host, victim: Victim, rng: random.Random) -> Run:
    """hping3: 4,000 SYNs to port 8080 (a listening service), one per 0.3 ms."""
    return flood(host, victim, ALT_PORT, "u300", 4000)


def hydra_ssh_logins(host: Host, victim: Victim, rng: random.Random) -> Run:
    """hydra -t 2 against sshd: 3 logins x 9 wrong passwords."""
    settings = HydraRun(
        service="ssh",
        port=22,
        tasks=2,
        users=("root", "admin", USER),
        passwords=GUESSES[:9],
        notes="users.txt: root, admin, capuser; passwords.txt: 9 wrong passwords; attempts "
        "counted from hydra's [ATTEMPT] lines; hydra's 2 tasks each keep a connection for "
        "several guesses",
    )
    return hydra(host, victim, settings)


def ssh_guess_v6(host: Host, victim: Victim, rng: random.Random) -> Run:
    """sshpass + ssh over IPv6: 15 wrong passwords, a connection each, 1.5 s +- 30 % apart."""
    users = ("admin", "ubuntu", USER)
    outcomes: list[int] = []

    def guess(index: int) -> None:
        args = _sshpass(GUESSES[24 + index], users[index % 3], victim.host.ipv6)
        outcomes.append(run(host.ns, args).returncode)  # sshpass: 5 is a wrong password

    paced(15, 1.5, 0.3, rng, guess)
    return Run(
        command=command_line(_sshpass(GUESSES[38], users[14 % 3], victim.host.ipv6)),
        targets=(victim.host.ipv6,),
        target_ports="22",
        expected=Expected(attempts=outcomes.count(5), connections=15, ports=1, hosts=1),
        notes="run 15 times, starts 1.5 s +- 30 % apart, users admin, ubuntu, capuser in turn "
        "and the 25th to 39th passwords of the guess list; one password per connection",
    )


def _sshpass(password: str, user: str, target: str) -> list[str]:
    return [
        "sshpass",
        "-p",
        password,
        "ssh",
        *SSH_OPTIONS,
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password",
        f"{user}@{target}",
        "true",
    ]


def beacon_post_25s(host: Host, victim: Victim, rng: random.Random) -> Run:
    """curl POSTing a check-in to the internal service every 25 s +- 15 %, 10 connections."""
    url = f"http://{victim.ip}:{SERVICE_PORT}/api/v1/checkin"
    args = curl(url, "--data-binary", "id=7f3a91&state=idle")
    paced(10, 25.0, 0.15, rng, lambda _i: checked(host, args, timeout=15))
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports=str(SERVICE_PORT),
        expected=Expected(connections=10, period_s=25.0, jitter=0.15, hosts=1, ports=1),
        notes="run 10 times, starts 25 s +- 15 % apart (uniform, seeded); the service drops "
        "the body and answers 201",
    )


def _b32(rng: random.Random, size: int) -> str:
    return base64.b32encode(rng.randbytes(size)).decode().lower().rstrip("=")


def dns_tunnel_cname(host: Host, victim: Victim, rng: random.Random) -> Run:
    """dnscat-like: 120 CNAME lookups of unique base32 labels under one parent, via dig."""
    parent = "sync.metrics-relay.org"
    names = [f"{_b32(rng, 30)}.{_b32(rng, 10)}.{parent}" for _ in range(120)]
    paced(
        120, 0.5, 0.5, rng, lambda i: checked(host, dig(victim.ip, names[i], "CNAME"), timeout=10)
    )
    return Run(
        command=command_line(dig(victim.ip, names[0], "CNAME")),
        targets=(victim.ip,),
        target_ports="U:53",
        expected=Expected(
            queries=len(names), names=len(set(names)), parent_domain=parent, hosts=1, ports=1
        ),
        notes="run 120 times, 0.5 s +- 50 % apart, each with a new name: a 48- and a "
        "16-character base32 label under the parent",
    )


# --- look-alikes ---------------------------------------------------------------------------


def ssh_key_commands(host: Host, victim: Victim, rng: random.Random) -> Run:
    """25 scripted key logins that succeed and run df, 0.8 s +- 50 % apart."""
    args = ssh(host, victim.client_key, victim.ip, USER, "df -h /")
    paced(25, 0.8, 0.5, rng, lambda _i: checked(host, args))
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="22",
        expected=Expected(connections=25, attempts=25, succeeded=True),
        notes="run 25 times, starts 0.8 s +- 50 % apart, like an inventory script",
    )


HTTP_ROUND = (
    'for a in "$@"; do '
    'curl -s -o /dev/null --max-time 3 "http://$a/health"; '
    f'curl -s -o /dev/null --max-time 3 "http://$a:{SERVICE_PORT}/health"; '
    "done"
)
MONITORED = slice(0, 30)  # the first 30 of the victim's 40 extra addresses


def http_monitoring(host: Host, victim: Victim, rng: random.Random) -> Run:
    """3 rounds ~6 s apart: a health GET on port 80 and one on 8081 of 30 hosts."""
    addresses = list(victim.host.extra_ipv4[MONITORED])
    args = ["bash", "-c", HTTP_ROUND, "monitor", *addresses]
    paced(3, 6.0, 0.1, rng, lambda _i: checked(host, args, timeout=120))
    return Run(
        command=command_line(["bash", "-c", HTTP_ROUND, "monitor", "ADDRESS..."]),
        targets=tuple(addresses),
        target_ports=f"80,{SERVICE_PORT}",
        expected=Expected(hosts=len(addresses), ports=2, connections=3 * 2 * len(addresses)),
        notes="3 rounds, starts 6 s +- 10 % apart, over the first 30 extra addresses",
    )


def https_poller(host: Host, victim: Victim, rng: random.Random) -> Run:
    """An update check over HTTPS: curl -k every 20 s +- 45 %, 11 fetches (~3.5 minutes)."""
    name = "updates.vendor-software.example"
    args = curl(f"https://{name}/v2/check", "-k", "--resolve", f"{name}:443:{victim.ip}")
    paced(11, 20.0, 0.45, rng, lambda _i: checked(host, args))
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="443",
        expected=Expected(connections=11, period_s=20.0, jitter=0.45),
        notes="run 11 times, starts 20 s +- 45 % apart (uniform, seeded)",
    )


CDN_NAME_FRESH = (
    "a1834-v4.dsc.edgeserver-media.content-distribution.eu-west-2.assets.static-delivery-cdn.org"
)


def cdn_name_https(host: Host, victim: Victim, rng: random.Random) -> Run:
    """The same long CDN name looked up 180 times, as HTTPS records (what browsers ask now)."""
    return benign.repeated_name(host, victim, rng, CDN_NAME_FRESH, "HTTPS", 180, 0.4)


def ftp_upload(host: Host, victim: Victim, rng: random.Random) -> Run:
    """One 15 MiB backup uploaded over FTP (curl -T, passive mode) to the victim's vsftpd."""
    with tempfile.TemporaryDirectory(prefix="netmon-upload-") as tmp:
        backup = Path(tmp, "backup.tar.gz")
        backup.write_bytes(os.urandom(15 * 1024 * 1024))
        args = ["curl", "-s", "--max-time", "120", "--user", f"{USER}:{PASSWORD}"]
        args += ["-T", str(backup), f"ftp://{victim.ip}/"]
        checked(host, args, timeout=180)
    (victim.root / "home" / backup.name).unlink(missing_ok=True)
    command = command_line(args).replace(str(backup), backup.name)
    return Run(
        command=command.replace(PASSWORD, "PASSWORD"),
        targets=(victim.ip,),
        target_ports="21",
        expected=Expected(connections=2, attempts=1, succeeded=True),
        notes="15 MiB of random bytes in one FTP upload: a login on the control connection "
        "(port 21), the file on a passive-mode data connection to a port vsftpd chose",
    )
