"""The agent's configuration: one frozen msgspec Struct loaded from ``agent.toml``.

Every field is documented in docs/agent.md. Unknown keys are errors (a typo must not silently
fall back to a default). The agent holds no secret here: the transport's credentials live in its
own section (``[transport]``, agent/transport.py) and have no default.
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from netmon.agent.transport import TransportConfig

Severity = Literal["none", "low", "medium", "high", "critical"]


class AgentConfigError(Exception):
    """The agent configuration cannot be used; the message names the setting and why."""


class ConfigSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of the config Structs: unknown keys are errors."""


class CriticalPort(ConfigSection, frozen=True):
    """A server port whose use is a finding (judged on the responder's port only).

    An entry names one transport protocol; without ``protocol`` it is TCP, as it always was, so
    a service on both (RDP: 3389/tcp and 3389/udp) takes two entries.
    """

    port: int
    rule: str  # short name used in findings: "ssh", "rdp", "telnet"
    name: str  # human-readable service: "SSH"
    protocol: Literal["tcp", "udp"] = "tcp"
    severity: Severity = "high"


DEFAULT_CRITICAL_PORTS: tuple[CriticalPort, ...] = (
    CriticalPort(port=22, rule="ssh", name="SSH", severity="high"),
    CriticalPort(port=23, rule="telnet", name="Telnet", severity="critical"),
    CriticalPort(port=3389, rule="rdp", name="RDP", severity="critical"),
    # RDP's UDP transport (MS-RDPEUDP) carries the same sessions as 3389/tcp.
    CriticalPort(port=3389, rule="rdp", name="RDP", protocol="udp", severity="critical"),
)


class ThreatList(ConfigSection, frozen=True):
    """A file of IPs and CIDRs (plain text, one per line, or CSV with the IP in a column)."""

    name: str
    path: str
    severity: Severity = "critical"
    # CSV only: the column holding the IP/CIDR (a header name or a 0-based index as a string);
    # empty means "the first cell of each row that parses as an IP or CIDR".
    column: str = ""


class DomainPolicy(ConfigSection, frozen=True):
    """Approved (allowlist) and denied domains; both match a name and all its subdomains."""

    approved: tuple[str, ...] = ()
    approved_files: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    denied_files: tuple[str, ...] = ()
    unapproved_severity: Severity = "medium"
    denied_severity: Severity = "critical"


class AgentConfig(ConfigSection, frozen=True):
    """Everything the agent needs; passed as an object, never read from globals."""

    server_url: str = ""  # where ``netmon agent run`` streams to (the transport's concern)
    agent_id: str = ""  # empty: the host name
    branch: str = "default"
    interface: str = "lo"
    bpf_filter: str = ""
    # Flow timeouts, seconds of packet time.
    idle_timeout: float = 60.0
    active_timeout: float = 1800.0
    # A flow on a DNS port is exported after this long, and goes on as a new piece: a busy DNS
    # tunnel (one socket, thousands of names) never idles, and the server needs its names soon.
    # 0: no special case (``active_timeout`` applies).
    dns_active_timeout: float = 60.0
    tcp_close_grace: float = 2.0  # after FIN both ways or RST, late packets still join the flow
    activity_threshold: float = 5.0  # gap that splits "active" from "idle" periods (features)
    max_flows: int = 1_000_000
    expiry_scan_per_tick: int = 10_000
    tick_interval: float = 1.0
    heartbeat_interval: float = 30.0
    pdns_cache_size: int = 100_000
    # Flows that ended on a timeout whose orientation (who is the server) is remembered for
    # ``active_timeout``, so the next piece of the same connection keeps it; 0: none.
    orientation_cache_size: int = 100_000
    list_reload_interval: float = 30.0  # at most one mtime check per list per interval
    critical_ports: tuple[CriticalPort, ...] = DEFAULT_CRITICAL_PORTS
    threat_lists: tuple[ThreatList, ...] = ()
    domains: DomainPolicy = DomainPolicy()
    transport: TransportConfig = TransportConfig()  # [transport], see docs/transport.md

    def resolved_agent_id(self) -> str:
        """The configured agent id, or the host name when none is set."""
        return self.agent_id or socket.gethostname()

    def dns_flow_timeout(self) -> float:
        """The active timeout of a flow on a DNS port: the shorter of the two, 0 meaning none."""
        if self.dns_active_timeout > 0:
            return min(self.dns_active_timeout, self.active_timeout)
        return self.active_timeout


def load_agent_config(path: Path | None) -> AgentConfig:
    """Read ``agent.toml`` (defaults when ``path`` is None); raise AgentConfigError."""
    if path is None:
        return AgentConfig()
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise AgentConfigError(f"agent config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise AgentConfigError(f"agent config {path} is not valid TOML: {error}") from None
    return parse_agent_config(raw, str(path))


def parse_agent_config(raw: dict[str, object], origin: str = "<config>") -> AgentConfig:
    """Validate a decoded TOML document; the error names the bad field's path."""
    try:
        config = msgspec.convert(raw, AgentConfig)
    except msgspec.ValidationError as error:
        raise AgentConfigError(f"invalid agent config {origin}: {error}") from None
    _check_ranges(config, origin)
    return config


def _check_ranges(config: AgentConfig, origin: str) -> None:
    positive = {
        "idle_timeout": config.idle_timeout,
        "active_timeout": config.active_timeout,
        "tick_interval": config.tick_interval,
        "heartbeat_interval": config.heartbeat_interval,
        "max_flows": config.max_flows,
        "expiry_scan_per_tick": config.expiry_scan_per_tick,
        "pdns_cache_size": config.pdns_cache_size,
    }
    for name, value in positive.items():
        if value <= 0:
            raise AgentConfigError(f"invalid agent config {origin}: {name} must be > 0")
    if config.dns_active_timeout < 0:
        raise AgentConfigError(f"invalid agent config {origin}: dns_active_timeout must be >= 0")
    if config.orientation_cache_size < 0:
        raise AgentConfigError(
            f"invalid agent config {origin}: orientation_cache_size must be >= 0"
        )
    for entry in config.critical_ports:
        if not 0 < entry.port < 65536:
            raise AgentConfigError(
                f"invalid agent config {origin}: critical_ports port {entry.port} out of range"
            )
