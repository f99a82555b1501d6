"""Thresholds and allowlist of the behaviour detectors (app/analysis/behaviour), as one Struct.

Defaults come from the references docs/analysis.md cites (Zeek's scan policy and
bro-simple-scan, Zeek's SSH guessing policy, Suricata's thresholding examples, RITA): each
field's comment names its unit. ``branches`` overrides any threshold for one branch; ``allow``
names sources, destinations or ports a rule never alerts about (a vulnerability scanner the team
runs on purpose), each with a reason and an optional expiry.

The worker reads these from the ``[detection]`` section of the server's settings and, while it
runs, from an override file (``DATA/config/detection.toml`` unless ``override_file`` says
otherwise): a change there applies from the next batch, without a restart. The file is one
implementation of ``DetectionSource``; the configuration store can serve the same Struct later.
"""

from __future__ import annotations

import ipaddress
import logging
import tomllib
from pathlib import Path
from typing import Any, Protocol

import msgspec

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Thresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every tunable threshold; a branch may override any of them."""

    # Scans (failed TCP probes: a SYN answered by RST or nothing, no payload either way). An
    # episode ends after scan_idle_s without a probe (bro-simple-scan's 15 min), so slow scans
    # add up; port_scan: ports of one host (Zeek 15), addr_scan: hosts on one port (Zeek 25),
    # net_scan: distinct (host, port) pairs when neither shape dominates (bro-simple-scan 25).
    scan_ports: int = 15
    scan_hosts: int = 25
    scan_pairs: int = 25
    scan_idle_s: float = 900.0
    scan_slow_rate: float = 5.0  # probes/s under which a scan is tagged "slow"
    # UDP scans: unanswered UDP flows to distinct ports of one host; fewer suffice when the
    # host itself answered with ICMP/ICMPv6 port unreachable at least udp_unreachables times.
    udp_ports: int = 15
    udp_ports_confirmed: int = 5
    udp_unreachables: int = 5
    # SYN flood: half-open connections to one (host, port) within flood_window_s.
    flood_half_open: int = 500
    flood_window_s: float = 10.0
    # Password guessing: failed login attempts against one authentication service from one
    # source within guess_window_s: SSH attempts the agent saw refused, or for other services
    # (and agents too old to judge SSH) short sessions shaped like a failed login.
    guess_attempts: int = 10
    guess_window_s: float = 600.0
    guess_max_session_s: float = 30.0
    guess_ports: tuple[int, ...] = (21, 22, 23, 139, 445, 1433, 3306, 3389, 5432, 5900)
    # Beaconing: connections from one source to one destination and port at a steady period.
    beacon_connections: int = 10  # connections before the period is first judged
    beacon_tolerance: float = 0.3  # an interval within +-30% of the median period is on time
    beacon_on_time: float = 0.9  # share of on-time intervals that makes a beacon
    beacon_min_period_s: float = 10.0  # faster loops are scripts and pollers, not implants
    beacon_ignore_ports: tuple[int, ...] = (53, 123, 5353)  # resolvers, NTP, mDNS
    # DNS tunnelling: unique names under one parent domain from one source within dns_window_s
    # (RITA's 100), or fewer names that are long or random-looking.
    dns_unique_names: int = 100
    dns_suspicious_names: int = 10
    dns_long_label: int = 40  # characters in the labels left of the parent domain
    dns_entropy_bits: float = 3.8  # Shannon entropy per character of those labels
    dns_window_s: float = 3600.0
    # Unusual outbound volume: a source's bytes sent in one hour against its own hourly mean.
    volume_factor: float = 10.0
    volume_min_bytes: int = 100_000_000
    volume_baseline_hours: int = 24
    # An open alert's severity rises one step each time its count passes this many times the
    # rule's threshold (a port scan: 150 ports probed -> high), to high at most.
    escalate_factor: float = 10.0


class AllowRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Traffic one or more rules never alert about. Empty fields match anything."""

    reason: str  # required: an allowlist entry is a decision someone must be able to read
    rules: tuple[str, ...] = ("*",)
    src: str = ""  # an address or CIDR of the source (the scanner, the guesser)
    dst: str = ""  # an address or CIDR of the destination
    port: int = 0  # destination port
    until: float = 0.0  # Unix time it expires; 0: never


class DetectionSettings(Thresholds, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[detection]`` settings section: thresholds, per-branch overrides, allowlist."""

    enabled: bool = True  # false: no behaviour detector runs (agents' findings still alert)
    # Per-branch thresholds: {"lab": {"scan_ports": 200}} (TOML: [detection.branches.lab]).
    branches: dict[str, dict[str, Any]] = {}
    # Allowlist: entries of reason, rules ("*" or names), src, dst (address or CIDR), port,
    # until (Unix time, 0 = never); TOML: [[detection.allow]]. See docs/analysis.md.
    allow: tuple[AllowRule, ...] = ()
    max_tracked: int = 50_000  # per detector: entities with state (least recently seen dropped)
    update_every_s: float = 60.0  # an open alert is updated at most this often (or on 2x count)
    override_file: str = ""  # empty: DATA/config/detection.toml

    def __post_init__(self) -> None:
        for rule in self.allow:
            if not rule.reason.strip():
                raise ValueError("every detection.allow entry needs a reason")
            for value in (rule.src, rule.dst):
                if value:
                    ipaddress.ip_network(value, strict=False)  # ValueError names the value
        for branch, overrides in self.branches.items():
            unknown = set(overrides) - THRESHOLD_FIELDS
            if unknown:
                raise ValueError(f"detection.branches.{branch}: unknown {sorted(unknown)}")

    def for_branch(self, branch: str) -> Thresholds:
        """The thresholds of one branch: the defaults with its overrides applied."""
        base = {name: getattr(self, name) for name in THRESHOLD_FIELDS}
        return msgspec.convert({**base, **self.branches.get(branch, {})}, Thresholds, strict=False)


THRESHOLD_FIELDS = frozenset(field.name for field in msgspec.structs.fields(Thresholds))


class DetectionSource(Protocol):
    """Where the worker gets the current detection settings (a file today; a store later)."""

    def current(self) -> DetectionSettings:
        """The settings in force now."""
        ...


class FileDetectionSource:
    """The base settings with an override file merged over them, re-read when it changes.

    A file that cannot be used (bad TOML, unknown key, bad value) is logged once per change
    and the previous settings stay in force: a typo never switches detection off.
    """

    def __init__(self, base: DetectionSettings, path: Path) -> None:
        self.base, self.path = base, path
        self._settings = base
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read

    def current(self) -> DetectionSettings:
        """The settings in force now (one stat per call)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._seen is not None:
                log.info("detection override %s removed: back to the base settings", self.path)
            self._seen, self._settings = None, self.base
            return self._settings
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._seen:
            self._seen = stamp
            self._settings = self._load() or self._settings
        return self._settings

    def _load(self) -> DetectionSettings | None:
        try:
            raw = tomllib.loads(self.path.read_text(encoding="utf-8"))
            merged = {**msgspec.structs.asdict(self.base), **raw}
            settings = msgspec.convert(merged, DetectionSettings, strict=False)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            log.error(
                "detection override %s unreadable, keeping the previous: %s", self.path, error
            )
            return None
        except (msgspec.ValidationError, ValueError) as error:
            log.error("detection override %s invalid, keeping the previous: %s", self.path, error)
            return None
        log.info("detection override %s applied", self.path)
        return settings


def parse_networks(values: tuple[str, ...]) -> list[IPNetwork]:
    """CIDRs as network objects (values were validated when the settings were built)."""
    return [ipaddress.ip_network(value, strict=False) for value in values if value]
