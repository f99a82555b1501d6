"""Make the real captures in tests/data/real/: real tools in network namespaces, with truth.

Run as root from the repository root (takes about 9.5 minutes, all three sets):

    .venv/bin/python -m tests.data.make_captures            # every set
    .venv/bin/python -m tests.data.make_captures --set fresh

Each set builds a fresh network (capture_net: a bridge and one namespace per host), starts the
victim's servers (capture_servers), records the bridge (capture_record) while its scenarios run
in parallel lanes, each from its own host, and writes ``real/<set>.pcap`` and
``real/<set>.json`` (the truth, tests/data/captures.py). Namespaces are removed on exit and
before a run starts, so a crashed run leaves nothing the next one trips over. CI never runs
this: it replays the committed files.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import msgspec

from tests.data import capture_attacks as attacks
from tests.data import capture_benign as benign
from tests.data import capture_fresh as fresh
from tests.data.capture_net import Host, Lan, remove_all, run
from tests.data.capture_record import SNAPLEN, TRIM_RULE, measure, recording, trim
from tests.data.capture_servers import Victim, victim_servers
from tests.data.capture_tools import Run
from tests.data.captures import (
    REAL_DIR,
    SETS,
    Behaviour,
    CaptureSet,
    Expected,
    IcmpLimits,
    Kind,
    Measured,
    Scenario,
    save_set,
)

log = logging.getLogger("make_captures")

VICTIM = Host(
    name="victim",
    ipv4="10.20.0.9",
    ipv6="fd00:20::9",
    extra_ipv4=tuple(f"10.20.0.{last}" for last in range(100, 140)),
)
# attackers 10.20.1.(base+i), clients 10.20.2.(base+i)
ADDRESS_BASE = {"train": 10, "heldout": 40, "fresh": 70}
Action = Callable[[Host, Victim, random.Random], Run]


class Plan(NamedTuple):
    """One scenario to run: what it is and the function that runs it."""

    name: str
    kind: Kind
    behaviour: Behaviour | None
    tool: str
    action: Action


def _attack(name: str, behaviour: Behaviour, tool: str, action: Action) -> Plan:
    return Plan(name, "attack", behaviour, tool, action)


def _benign(name: str, tool: str, action: Action, kind: Kind = "benign") -> Plan:
    return Plan(name, kind, None, tool, action)


# Each set is a list of lanes; the scenarios of a lane run one after another, the lanes at once.
TRAIN: list[list[Plan]] = [
    [
        _attack("syn_scan_t4", "port_scan", "nmap", attacks.syn_scan_fast),
        _attack("connect_scan", "port_scan", "nmap", attacks.connect_scan),
        _attack("udp_scan", "udp_scan", "nmap", attacks.udp_scan),
        _attack("slow_scan_t2", "slow_scan", "nmap", attacks.slow_syn_scan),
        _attack("addr_scan_ssh", "addr_scan", "nmap", attacks.addr_scan),
        _attack("syn_flood_80", "syn_flood", "hping3", attacks.syn_flood),
        _attack("ssh_guess_sshpass", "auth_guess", "sshpass", attacks.ssh_guess),
    ],
    [_attack("beacon_http_12s", "beacon", "curl", attacks.beacon_http)],
    [_attack("dns_tunnel_iodine", "dns_tunnel", "iodine", attacks.dns_tunnel_iodine)],
    [
        _benign("ssh_idle_70s", "ssh", benign.idle_ssh),
        _benign("ssh_sessions", "ssh", functools.partial(benign.ssh_sessions, count=8)),
    ],
    [_benign("web_browsing", "dig+curl", functools.partial(benign.web_browsing, count=120))],
    [_benign("web_ipv6", "dig+curl", functools.partial(benign.web_v6, count=40))],
    [_benign("dns_lookups", "dig", functools.partial(benign.dns_lookups, count=150))],
    [_benign("tls_fetches", "curl", functools.partial(benign.tls_fetches, count=40))],
    [
        _benign("telnet_sessions", "telnet", functools.partial(benign.telnet_sessions, count=2)),
        _benign("pings", "nping", benign.pings),
    ],
    # last, so every other scenario keeps the address it had before this one was added
    [_attack("telnet_guess", "auth_guess", "telnet", attacks.telnet_guess)],
    # the train set's own look-alikes, after the rest for the same reason; their settings
    # (counts, periods, hosts, ports, tools) differ from the held-out ones
    [
        _benign("ssh_password_logins", "sshpass", benign.ssh_password_logins, "lookalike"),
        _benign("http_upload", "curl", benign.http_upload, "lookalike"),
    ],
    [
        _benign("service_checks", "curl+bash", benign.service_checks, "lookalike"),
        _benign("cdn_name_aaaa", "dig", benign.cdn_name_aaaa, "lookalike"),
    ],
    [_benign("feed_poller", "curl", benign.feed_poller, "lookalike")],
]

HELDOUT: list[list[Plan]] = [
    [
        _attack("connect_scan_2000", "port_scan", "nmap", attacks.connect_scan_high),
        _attack("udp_scan_v6", "udp_scan", "nmap", attacks.udp_scan_v6),
        _attack("addr_scan_http", "addr_scan", "nmap", attacks.addr_scan_connect),
        _attack("syn_flood_443", "syn_flood", "hping3", attacks.syn_flood_fast),
        _attack("hydra_ssh", "auth_guess", "hydra", attacks.hydra_ssh),
        _attack("hydra_ftp", "auth_guess", "hydra", attacks.hydra_ftp),
    ],
    [_attack("slow_scan_2s", "slow_scan", "nmap", attacks.slow_scan_delay)],
    [_attack("beacon_https_20s", "beacon", "curl", attacks.beacon_https)],
    [_attack("dns_tunnel_dig", "dns_tunnel", "dig", attacks.dns_tunnel_dig)],
    [
        _benign("ssh_logins_ok", "ssh", benign.ssh_logins_ok, "lookalike"),
        _benign("bulk_upload", "scp", benign.bulk_upload, "lookalike"),
        _benign("ssh_sessions", "ssh", functools.partial(benign.ssh_sessions, count=6)),
    ],
    [_benign("monitoring", "curl+bash", benign.monitoring, "lookalike")],
    [_benign("jittery_poller", "curl", benign.jittery_poller, "lookalike")],
    [_benign("cdn_name", "dig", benign.cdn_name, "lookalike")],
    [_benign("web_browsing", "dig+curl", functools.partial(benign.web_browsing, count=60))],
    [_benign("dns_lookups", "dig", functools.partial(benign.dns_lookups, count=80))],
    [_benign("tls_fetches", "curl", functools.partial(benign.tls_fetches, count=25))],
]

# Made after the detectors were built and scored once: every setting differs from both sets.
FRESH: list[list[Plan]] = [
    [
        _attack("syn_scan_3000", "port_scan", "nmap", fresh.syn_scan_3000),
        _attack("connect_scan_top100", "port_scan", "nmap", fresh.connect_scan_top100),
        _attack("udp_scan_12", "udp_scan", "nmap", fresh.udp_scan_12),
        _attack("addr_scan_443", "addr_scan", "nmap", fresh.addr_scan_443),
        _attack("syn_flood_8080", "syn_flood", "hping3", fresh.syn_flood_8080),
        _attack("hydra_ssh_logins", "auth_guess", "hydra", fresh.hydra_ssh_logins),
    ],
    [_attack("slow_scan_1s", "slow_scan", "nmap", fresh.slow_scan_1s)],
    [_attack("ssh_guess_v6", "auth_guess", "sshpass", fresh.ssh_guess_v6)],
    [_attack("beacon_post_25s", "beacon", "curl", fresh.beacon_post_25s)],
    [_attack("dns_tunnel_cname", "dns_tunnel", "dig", fresh.dns_tunnel_cname)],
    [
        _benign("ssh_key_commands", "ssh", fresh.ssh_key_commands, "lookalike"),
        _benign("ftp_upload", "curl", fresh.ftp_upload, "lookalike"),
        _benign("ssh_sessions", "ssh", functools.partial(benign.ssh_sessions, count=6)),
    ],
    [_benign("http_monitoring", "curl+bash", fresh.http_monitoring, "lookalike")],
    [_benign("https_poller", "curl", fresh.https_poller, "lookalike")],
    [_benign("cdn_name_https", "dig", fresh.cdn_name_https, "lookalike")],
    [_benign("web_browsing", "dig+curl", functools.partial(benign.web_browsing, count=60))],
    [_benign("web_ipv6", "dig+curl", functools.partial(benign.web_v6, count=20))],
    [_benign("dns_lookups", "dig", functools.partial(benign.dns_lookups, count=80))],
    [_benign("tls_fetches", "curl", functools.partial(benign.tls_fetches, count=25))],
    [
        _benign("ssh_idle_70s", "ssh", benign.idle_ssh),
        _benign("telnet_sessions", "telnet", functools.partial(benign.telnet_sessions, count=2)),
        _benign("pings", "nping", benign.pings),
    ],
]

PLANS = {"train": TRAIN, "heldout": HELDOUT, "fresh": FRESH}


def assign_hosts(set_name: str, lanes: list[list[Plan]]) -> dict[str, Host]:
    """One host per scenario: attackers in 10.20.1.0/24, clients in 10.20.2.0/24."""
    hosts: dict[str, Host] = {}
    counters = {"attack": 0, "client": 0}
    for plan in (plan for lane in lanes for plan in lane):
        group = "attack" if plan.kind == "attack" else "client"
        counters[group] += 1
        last = ADDRESS_BASE[set_name] + counters[group]
        subnet = 1 if group == "attack" else 2
        hosts[plan.name] = Host(
            name=f"{set_name[0]}{group[0]}{counters[group]}",
            ipv4=f"10.20.{subnet}.{last}",
            ipv6=f"fd00:20::{subnet}:{last}",
        )
    return hosts


class Outcome(NamedTuple):
    plan: Plan
    host: Host
    run: Run
    start: float
    end: float


_print_lock = threading.Lock()


def _say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def _run_lane(
    lane: list[Plan], hosts: dict[str, Host], victim: Victim, set_name: str
) -> list[Outcome]:
    outcomes = []
    for plan in lane:
        host = hosts[plan.name]
        _say(f"  {plan.name:<20} from {host.ipv4:<12} started")
        start = time.time()
        result = plan.action(host, victim, random.Random(f"{set_name}:{plan.name}"))
        end = time.time()
        # the key's temporary directory means nothing once the run is over
        result = msgspec.structs.replace(
            result, command=result.command.replace(f"{victim.root}/", "")
        )
        _say(f"  {plan.name:<20} from {host.ipv4:<12} done in {end - start:5.1f} s")
        outcomes.append(Outcome(plan, host, result, start, end))
    return outcomes


def _icmp_limits(host: Host) -> IcmpLimits:
    keys = (
        "net.ipv4.icmp_ratelimit",
        "net.ipv4.icmp_msgs_per_sec",
        "net.ipv4.icmp_msgs_burst",
        "net.ipv6.icmp.ratelimit",
    )
    values = [int(v) for v in run(host.ns, ["sysctl", "-n", *keys]).stdout.split()]
    return IcmpLimits(
        icmp_ratelimit_ms=values[0],
        icmp_msgs_per_sec=values[1],
        icmp_msgs_burst=values[2],
        icmpv6_ratelimit_ms=values[3],
    )


PACKAGES = {  # tool -> the Debian package that ships it
    "nmap": "nmap",
    "hping3": "hping3",
    "hydra": "hydra",
    "sshpass": "sshpass",
    "iodine": "iodine",
    "ssh": "openssh-client",
    "sshd": "openssh-server",
    "vsftpd": "vsftpd",
    "inetd": "inetutils-inetd",
    "telnetd": "inetutils-telnetd",
    "telnet": "inetutils-telnet",
    "dnsmasq": "dnsmasq-base",
    "curl": "curl",
    "dig": "bind9-dnsutils",
    "openssl": "openssl",
    "tcpdump": "tcpdump",
    "tshark": "tshark",
}


def tool_versions() -> dict[str, str]:
    """The installed package version of every tool the captures use."""
    versions = {}
    for tool, package in PACKAGES.items():
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
        )
        versions[tool] = f"{package} {result.stdout.strip() or '(not from a package)'}"
    return versions


def _with_capture_counts(outcome: Outcome, measured: Measured) -> Expected:
    """Counts a tool cannot report itself (iodine's queries) taken from the capture."""
    expected = outcome.run.expected
    if outcome.plan.behaviour == "dns_tunnel" and not expected.names:
        return msgspec.structs.replace(
            expected, names=measured.dns_names, queries=measured.dns_queries
        )
    return expected


def make_set(
    set_name: str, out_dir: Path, keep_raw: bool = False, only: set[str] | None = None
) -> CaptureSet:
    """Run every scenario of one set on a fresh network and write its pcap and truth."""
    lanes = [[p for p in lane if only is None or p.name in only] for lane in PLANS[set_name]]
    lanes = [lane for lane in lanes if lane]
    hosts = assign_hosts(set_name, lanes)
    pcap = out_dir / f"{set_name}.pcap"
    with tempfile.TemporaryDirectory(prefix="netmon-raw-") as tmp:
        raw = Path(tmp, "raw.pcap")
        with Lan([VICTIM, *hosts.values()]), victim_servers(VICTIM) as victim:
            icmp = _icmp_limits(VICTIM)
            _say(f"{set_name}: {len(hosts)} scenarios in {len(lanes)} lanes, recording")
            with recording(raw, VICTIM) as stats:
                start = time.time()
                with ThreadPoolExecutor(len(lanes)) as pool:
                    futures = [
                        pool.submit(_run_lane, lane, hosts, victim, set_name) for lane in lanes
                    ]
                    outcomes = [outcome for future in futures for outcome in future.result()]
                end = time.time()
        frames, trimmed = trim(raw, pcap)
        if keep_raw:
            shutil.copy(raw, out_dir / f"{set_name}.raw.pcap")
    _say(
        f"{set_name}: tcpdump captured {stats.captured}, dropped {stats.dropped}; "
        f"{frames} frames kept, {trimmed} trimmed; {pcap.stat().st_size / 1e6:.2f} MB"
    )
    if stats.dropped:
        raise RuntimeError(f"tcpdump dropped {stats.dropped} packets: make the capture again")
    sources = {address: o.plan.name for o in outcomes for address in o.host.addresses}
    measured = measure(pcap, sources)
    expected = {o.plan.name: _with_capture_counts(o, measured[o.plan.name]) for o in outcomes}
    scenarios = tuple(
        Scenario(
            name=o.plan.name,
            set=set_name,
            kind=o.plan.kind,
            behaviour=o.plan.behaviour,
            tool=o.plan.tool,
            command=o.run.command,
            sources=tuple(o.host.addresses),
            targets=o.run.targets,
            target_ports=o.run.target_ports,
            start=round(o.start, 6),
            end=round(o.end, 6),
            expected=expected[o.plan.name],
            measured=measured[o.plan.name],
            notes=o.run.notes,
        )
        for o in sorted(outcomes, key=lambda o: o.start)
    )
    capture = CaptureSet(
        name=set_name,
        pcap=pcap.name,
        made=datetime.date.today().isoformat(),
        interface="br0 (a Linux bridge joining every host's veth; offloads cut to one segment)",
        snaplen=SNAPLEN,
        trimmed=TRIM_RULE,
        victim=tuple(VICTIM.addresses),
        victim_extra=VICTIM.extra_ipv4,
        benign_clients=tuple(a for s in scenarios if s.kind != "attack" for a in s.sources),
        attackers=tuple(a for s in scenarios if s.kind == "attack" for a in s.sources),
        icmp=icmp,
        tools=tool_versions(),
        start=round(start, 6),
        end=round(end, 6),
        scenarios=scenarios,
    )
    _say(f"{set_name}: truth written to {save_set(capture, out_dir)}")
    return capture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=[*SETS, "all"], default="all")
    parser.add_argument("--out", type=Path, default=REAL_DIR, help="where pcaps and truth go")
    parser.add_argument("--keep-raw", action="store_true", help="also keep the untrimmed pcap")
    parser.add_argument(
        "--only", help="comma-separated scenario names (a partial set: use another --out)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        print("make_captures: run as root (namespaces, raw sockets, tcpdump)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        for name in SETS if args.set == "all" else (args.set,):
            make_set(
                name, args.out, args.keep_raw, set(args.only.split(",")) if args.only else None
            )
    finally:
        remove_all()
    _say(f"done in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
