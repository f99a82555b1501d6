"""The ground truth of the real captures in tests/data/real/, and a loader for tests.

Each capture set (``train``, ``heldout``, ``fresh``) is one pcap and one JSON file made by
``make_captures.py``. The JSON lists every scenario: who ran which real tool with which exact
command line, from which addresses, against what, when (pcap time), and the counts a correct
alert would report, as the tool itself reported them or as its command line fixes them.
``Measured`` holds what tshark counted in the finished pcap, so a test can hold the agent's
flows against a second meter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

REAL_DIR = Path(__file__).resolve().parent / "real"
SETS = ("train", "heldout", "fresh")

Kind = Literal["attack", "benign", "lookalike"]
Behaviour = Literal[
    "port_scan",  # many ports of one host
    "addr_scan",  # one port across many hosts
    "slow_scan",  # a scan with seconds between probes
    "udp_scan",  # UDP probes answered by ICMP port unreachable
    "syn_flood",  # many half-open connections to one port
    "auth_guess",  # password guessing against a login service
    "beacon",  # periodic connections to one destination
    "dns_tunnel",  # many unique long names under one parent domain
]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Expected(_Strict, frozen=True):
    """What a correct alert about the scenario reports (0 or empty: not applicable)."""

    ports: int = 0  # distinct destination ports probed
    hosts: int = 0  # distinct destination hosts
    attempts: int = 0  # login attempts made
    connections: int = 0  # connections opened (beacon, sessions)
    packets: int = 0  # packets the tool sent (syn_flood)
    queries: int = 0  # DNS lookups made
    names: int = 0  # unique DNS names queried
    parent_domain: str = ""  # the domain the names sit under (dns_tunnel)
    period_s: float = 0.0  # mean time between connections (beacon, pollers)
    jitter: float = 0.0  # +- share of the period, uniformly drawn
    delay_s: float = 0.0  # the scanner's delay between probes (slow_scan)
    open_ports: tuple[int, ...] = ()  # what the scanner reported open
    succeeded: bool = False  # a guesser found the password


class Measured(_Strict, frozen=True):
    """Counted by tshark in the finished pcap, for the scenario's own addresses."""

    frames: int  # frames to or from the scenario's source addresses
    tcp_connections: int  # distinct TCP 4-tuples the sources sent a SYN (without ACK) on
    dst_ports: int  # distinct TCP/UDP destination ports of packets the sources sent
    dst_hosts: int  # distinct destination addresses of packets the sources sent
    dns_queries: int  # DNS queries the sources sent
    dns_names: int  # distinct names in those queries
    icmp_unreachable: int  # ICMP/ICMPv6 port unreachable messages sent to the sources


class Scenario(_Strict, frozen=True):
    """One run of one real tool (or one scripted client) from its own addresses."""

    name: str
    set: str
    kind: Kind
    tool: str
    command: str  # the exact command line; a loop shows one iteration and says so in notes
    sources: tuple[str, ...]  # every address of the source host (IPv4 and IPv6)
    targets: tuple[str, ...]
    target_ports: str  # nmap syntax: "1-1000", "22", "U:53,67"
    start: float  # pcap time (seconds since the epoch): the tool started
    end: float  # the tool ended
    expected: Expected
    measured: Measured
    behaviour: Behaviour | None = None  # attacks only
    notes: str = ""


class IcmpLimits(_Strict, frozen=True):
    """The victim's kernel ICMP error rate limits during the capture (left at their defaults)."""

    icmp_ratelimit_ms: int
    icmp_msgs_per_sec: int
    icmp_msgs_burst: int
    icmpv6_ratelimit_ms: int


class CaptureSet(_Strict, frozen=True):
    """One capture: its pcap, the network it was made on and every scenario in it."""

    name: str
    pcap: str  # file name in tests/data/real/
    made: str  # ISO date
    interface: str
    snaplen: int
    trimmed: str  # how payload was cut after capture (original lengths are kept)
    victim: tuple[str, ...]
    victim_extra: tuple[str, ...]  # more addresses of the victim host (scan targets)
    benign_clients: tuple[str, ...]
    attackers: tuple[str, ...]
    icmp: IcmpLimits
    tools: dict[str, str]  # program -> version
    start: float
    end: float
    scenarios: tuple[Scenario, ...]

    def scenario(self, name: str) -> Scenario:
        """The scenario called name."""
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        raise KeyError(name)

    def owner(self, address: str) -> Scenario | None:
        """The scenario whose source host has this address, if any."""
        for scenario in self.scenarios:
            if address in scenario.sources:
                return scenario
        return None


class TruthError(Exception):
    """A truth file is missing or does not match the Structs above."""


def load_set(name: str, directory: Path = REAL_DIR) -> CaptureSet:
    """The ground truth of capture set name (one of SETS); TruthError if unusable."""
    path = directory / f"{name}.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=CaptureSet)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
        raise TruthError(f"capture truth {path}: {error}") from None


def pcap_path(capture: CaptureSet) -> Path:
    """The committed pcap of a capture set."""
    return REAL_DIR / capture.pcap


def save_set(capture: CaptureSet, directory: Path = REAL_DIR) -> Path:
    """Write the truth of a capture set as indented JSON (reviewable in a diff)."""
    path = directory / f"{capture.name}.json"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(capture), indent=2) + b"\n")
    return path
