"""Behaviour detectors on hand-made flows: each rule's threshold, its shape, its limits.

The proof on real traffic of real tools is tests/analysis/test_real_captures.py; these pin the
edges (one below the threshold stays silent, one at it fires) and the engine's bookkeeping
(allowlist, branch overrides, bounded state, hot reload, saving and loading its state).
"""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from netmon.app.analysis.behaviour.dns_tunnels import parent_domain
from netmon.app.analysis.behaviour.engine import BehaviourEngine, BehaviourState
from netmon.app.analysis.behaviour.findings import Finding
from netmon.app.analysis.rules import AlertEngine
from netmon.app.detection_settings import AllowRule, DetectionSettings, FileDetectionSource
from netmon.app.settings import AnalysisSettings
from netmon.storage.contract.events import (
    AlertOpened,
    AlertUpdated,
    Detection,
    FlowObserved,
    new_event_id,
)
from tests.factories import ACK, SYN
from tests.factories import tcp_flow as tcp

T = 1_800_000_000.0


class Fixed:
    """A DetectionSource that always answers the same settings."""

    def __init__(self, settings: DetectionSettings) -> None:
        self.settings = settings

    def current(self) -> DetectionSettings:
        return self.settings


def udp(src: str, dst: str, dport: int, at: float, *, answered: bool = False) -> FlowObserved:
    return FlowObserved(
        id=new_event_id(at),
        ts=at,
        branch="hq",
        agent_id="a1",
        first_seen=at,
        last_seen=at,
        src_ip=src,
        src_port=53000,
        dst_ip=dst,
        dst_port=dport,
        protocol=17,
        src2dst_packets=1,
        dst2src_packets=1 if answered else 0,
        src2dst_bytes=60,
        dst2src_bytes=80 if answered else 0,
    )


def unreachable(target: str, prober: str, at: float, count: int) -> FlowObserved:
    return FlowObserved(
        id=new_event_id(at),
        ts=at,
        branch="hq",
        agent_id="a1",
        first_seen=at,
        last_seen=at,
        src_ip=target,
        src_port=3,
        dst_ip=prober,
        dst_port=3,
        protocol=1,
        src2dst_packets=count,
        src2dst_bytes=70 * count,
    )


def dns(src: str, name: str, at: float) -> FlowObserved:
    flow = udp(src, "10.0.0.53", 53, at, answered=True)
    return msgspec.structs.replace(flow, domain=name, domain_source="dns")


def engine(**settings: object) -> BehaviourEngine:
    """An engine with these settings; hand-made flows come at exact intervals, so the beacon
    rule is off unless a test is about it."""
    settings.setdefault("beacon_connections", 1_000_000)
    return BehaviourEngine(Fixed(DetectionSettings(**settings)))  # type: ignore[arg-type]


def rules(findings: list[Finding]) -> dict[str, Finding]:
    return {f"{f.rule}|{f.entity}": f for f in findings}


# --- scans --------------------------------------------------------------------------------------


def test_a_port_scan_fires_at_the_threshold_not_before() -> None:
    behaviour = engine(scan_ports=15)
    below = [tcp("198.51.100.66", "10.20.0.9", port, T + port * 0.01) for port in range(1, 15)]
    assert behaviour.observe(below) == []
    found = rules(behaviour.observe([tcp("198.51.100.66", "10.20.0.9", 15, T + 1)]))
    finding = found["port_scan|198.51.100.66"]
    assert finding.evidence.count == 15 and finding.evidence.distinct_ports == 15
    assert finding.evidence.targets == ("10.20.0.9",)
    assert "15 ports of 10.20.0.9" in finding.title


def test_an_addr_scan_is_one_port_on_many_hosts_and_not_a_port_scan() -> None:
    behaviour = engine()
    flows = [tcp("198.51.100.7", f"10.20.0.{h}", 22, T + h) for h in range(100, 125)]
    found = rules(behaviour.observe(flows))
    assert list(found) == ["addr_scan|198.51.100.7"]
    assert found["addr_scan|198.51.100.7"].evidence.distinct_targets == 25


def test_a_slow_scan_adds_up_across_minutes_but_a_long_pause_starts_afresh() -> None:
    behaviour = engine(scan_idle_s=900)
    slow = [tcp("198.51.100.8", "10.20.0.9", p, T + p * 60) for p in range(1, 15)]  # 13 min
    assert behaviour.observe(slow) == []
    found = rules(behaviour.observe([tcp("198.51.100.8", "10.20.0.9", 15, T + 15 * 60)]))
    assert "slow" in found["port_scan|198.51.100.8"].tags
    paused = engine(scan_idle_s=900)
    first = [tcp("198.51.100.9", "10.20.0.9", p, T + p) for p in range(1, 10)]
    later = [tcp("198.51.100.9", "10.20.0.9", p, T + 2000 + p) for p in range(10, 16)]
    assert paused.observe(first) == [] and paused.observe(later) == []


def test_established_sessions_and_refused_half_of_a_few_ports_are_not_a_scan() -> None:
    behaviour = engine()
    web = [tcp("10.0.0.5", "10.20.0.9", 443, T + i, data=(500, 9000), reset=False, end="fin")
           for i in range(200)]  # fmt: skip
    refused = [tcp("10.0.0.6", "10.20.0.9", port, T + port) for port in (80, 443, 8080)]
    assert behaviour.observe(web + refused) == []


def test_a_udp_scan_fires_on_unanswered_ports_sooner_when_the_host_says_unreachable() -> None:
    behaviour = engine(udp_ports=15, udp_ports_confirmed=5, udp_unreachables=5)
    probes = [udp("198.51.100.10", "10.20.0.9", port, T + port) for port in range(1, 7)]
    assert behaviour.observe(probes) == []
    found = rules(behaviour.observe([unreachable("10.20.0.9", "198.51.100.10", T + 8, 6)]))
    finding = found["udp_scan|198.51.100.10"]
    assert finding.evidence.distinct_ports == 6 and "6 port-unreachable" in finding.title
    quiet = engine()
    resolver_down = [udp("10.0.0.5", "10.0.0.53", 53, T + i) for i in range(50)]
    assert quiet.observe([*resolver_down, unreachable("10.0.0.53", "10.0.0.5", T + 60, 50)]) == []


def test_multicast_is_never_a_udp_probe() -> None:
    behaviour = engine()
    flows = [udp("10.0.0.5", "239.255.255.250", 1900 + p, T + p) for p in range(40)]
    assert behaviour.observe(flows) == []


# --- floods, guessing ---------------------------------------------------------------------------


def test_a_syn_flood_names_its_victim_port_and_its_source() -> None:
    behaviour = engine(flood_half_open=500, flood_window_s=10)
    syns = [tcp("198.51.100.11", "10.20.0.9", 80, T + i / 1000, answer=SYN | ACK)
            for i in range(600)]  # fmt: skip
    found = rules(behaviour.observe(syns))
    flood = found["syn_flood|10.20.0.9"]
    assert flood.evidence.count == 600 and flood.evidence.sources == ("198.51.100.11",)
    assert "port_scan|198.51.100.11" not in found  # one port: not a scan


def test_a_syn_scan_is_not_a_flood() -> None:
    behaviour = engine()
    found = rules(
        behaviour.observe([tcp("198.51.100.12", "10.20.0.9", p, T) for p in range(1, 1001)])
    )
    assert set(found) == {"port_scan|198.51.100.12"}


def login(src: str, at: float, *, port: int = 22) -> FlowObserved:
    return tcp(src, "10.20.0.9", port, at, data=(1500, 3000), reset=False, duration=2, end="fin")


def test_password_guessing_fires_at_ten_short_logins_within_the_window() -> None:
    behaviour = engine(guess_attempts=10, guess_window_s=600)
    assert behaviour.observe([login("198.51.100.13", T + i * 5) for i in range(9)]) == []
    found = rules(behaviour.observe([login("198.51.100.13", T + 50)]))
    assert found["auth_guess|198.51.100.13"].evidence.count == 10
    spread = engine(guess_attempts=10, guess_window_s=600)
    assert spread.observe([login("198.51.100.14", T + i * 120) for i in range(12)]) == []


def test_long_interactive_sessions_are_not_guesses() -> None:
    behaviour = engine()
    sessions = [tcp("10.0.0.7", "10.20.0.9", 22, T + i * 5, data=(90_000, 400_000), reset=False,
                    duration=300, end="fin") for i in range(20)]  # fmt: skip
    assert behaviour.observe(sessions) == []


# --- beacons, tunnels, volume -------------------------------------------------------------------


def test_a_beacon_with_small_jitter_fires_and_a_jittery_poller_does_not() -> None:
    rng = random.Random(7)
    beacon = engine(beacon_connections=8)
    starts = [T + 10 * i + rng.uniform(-2, 2) for i in range(20)]  # +-20%
    flows = [tcp("10.0.0.8", "203.0.113.5", 443, s, data=(300, 300), reset=False, end="fin")
             for s in sorted(starts)]  # fmt: skip
    found = rules(beacon.observe(flows))
    assert "beacon|10.0.0.8" in found and "every 10." in found["beacon|10.0.0.8"].title
    poller = engine(beacon_connections=8)
    starts = [T + 10 * i + rng.uniform(-5, 5) for i in range(20)]  # +-50%
    flows = [tcp("10.0.0.9", "203.0.113.6", 443, s, data=(300, 300), reset=False, end="fin")
             for s in sorted(starts)]  # fmt: skip
    assert poller.observe(flows) == []


def test_dns_tunnel_counts_distinct_names_under_one_parent() -> None:
    rng = random.Random(3)
    tunnel = engine()
    names = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz234567", k=50)) + ".t.evil.test"
             for _ in range(12)]  # fmt: skip
    found = rules(tunnel.observe([dns("10.0.0.10", n, T + i) for i, n in enumerate(names)]))
    assert found["dns_tunnel|10.0.0.10"].evidence.distinct_targets == 12
    cdn = engine()
    name = "a" * 60 + ".cdn.example.net"
    assert cdn.observe([dns("10.0.0.11", name, T + i) for i in range(200)]) == []


def test_parent_domain_keeps_public_second_levels() -> None:
    assert parent_domain("x.y.example.co.uk") == ("x.y", "example.co.uk")
    assert parent_domain("abc.t.evil.test.") == ("abc.t", "evil.test")


def test_outbound_volume_needs_a_baseline_then_fires_on_ten_times_it() -> None:
    behaviour = engine(volume_min_bytes=10_000_000, volume_baseline_hours=24)

    def upload(hour: int, size: int) -> FlowObserved:
        flow = tcp("10.0.0.12", "203.0.113.7", 443, T + hour * 3600, data=(size, 100), reset=False)
        return msgspec.structs.replace(flow, src2dst_bytes=size)

    assert behaviour.observe([upload(h, 2_000_000) for h in range(0, 23)]) == []
    assert behaviour.observe([upload(23, 500_000_000)]) == []  # no baseline yet: a first backup
    assert behaviour.observe([upload(h, 2_000_000) for h in range(24, 24 * 5)]) == []
    found = rules(behaviour.observe([upload(24 * 5, 200_000_000)]))
    assert "outbound_volume|10.0.0.12" in found
    assert found["outbound_volume|10.0.0.12"].evidence.bytes == 200_000_000


# --- engine -------------------------------------------------------------------------------------


def test_the_allowlist_silences_a_known_scanner_but_not_others() -> None:
    allow = (AllowRule(reason="weekly Nessus run", src="198.51.100.0/28"),)
    behaviour = engine(allow=allow)
    scanner = [tcp("198.51.100.5", "10.20.0.9", p, T) for p in range(1, 100)]
    other = [tcp("198.51.100.66", "10.20.0.9", p, T) for p in range(1, 100)]
    assert set(rules(behaviour.observe(scanner + other))) == {"port_scan|198.51.100.66"}


def test_a_branch_override_raises_a_threshold_for_that_branch_only() -> None:
    behaviour = engine(branches={"lab": {"scan_ports": 200}})
    lab = [tcp("10.9.0.1", "10.20.0.9", p, T, branch="lab") for p in range(1, 100)]
    hq = [tcp("10.9.0.2", "10.20.0.9", p, T, branch="hq") for p in range(1, 100)]
    assert set(rules(behaviour.observe(lab + hq))) == {"port_scan|10.9.0.2"}


def test_a_threat_listed_scanner_is_tagged() -> None:
    behaviour = engine()
    listed = msgspec.structs.replace(
        tcp("198.51.100.66", "10.20.0.9", 1, T),
        detections=(Detection(kind="suspicious_ip", detail="in list", severity="high"),),
    )
    flows = [listed] + [tcp("198.51.100.66", "10.20.0.9", p, T) for p in range(2, 20)]
    assert "threat list" in behaviour.observe(flows)[0].tags


def test_state_is_bounded_past_its_cap_and_survives_a_save() -> None:
    behaviour = engine(max_tracked=1000)  # bench/analysis.py prints it at a million sources
    for chunk in range(20):
        behaviour.observe(
            [tcp(f"10.{chunk}.{i // 250}.{i % 250}", "10.20.0.9", 80, T) for i in range(10_000)]
        )
    assert max(behaviour.tracked().values()) <= 1000
    data = msgspec.msgpack.encode(behaviour.state)
    restored = msgspec.msgpack.decode(data, type=BehaviourState)
    assert len(restored.scans.sources) == len(behaviour.state.scans.sources)


def test_an_override_file_applies_without_restart_and_a_bad_one_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "detection.toml"
    source = FileDetectionSource(DetectionSettings(), path)
    assert source.current().scan_ports == 15
    path.write_text("scan_ports = 40\n")
    assert source.current().scan_ports == 40
    path.write_text("scan_portz = 41\n")
    assert source.current().scan_ports == 40  # the previous good settings stay
    assert "invalid, keeping the previous" in caplog.text
    path.unlink()
    assert source.current().scan_ports == 15


# --- aggregated alerts --------------------------------------------------------------------------


def test_a_scan_becomes_one_alert_updated_as_it_grows_then_escalated() -> None:
    behaviour = engine()
    alerts = AlertEngine(AnalysisSettings(), update_every_s=60, escalate_factor=10)
    events = []
    for second in range(10):
        batch = [tcp("198.51.100.66", "10.20.0.9", second * 100 + p, T + second)
                 for p in range(1, 101)]  # fmt: skip
        for finding in behaviour.observe(batch):
            events += alerts.on_finding(finding)
    opened = [e for e in events if isinstance(e, AlertOpened)]
    updates = [e for e in events if isinstance(e, AlertUpdated)]
    assert len(opened) == 1 and opened[0].rule == "port_scan"
    assert [u.seq for u in updates] == list(range(1, len(updates) + 1))
    assert updates and updates[-1].evidence.count <= 1000
    assert any(u.severity == "high" for u in updates)  # 10x the opening count
    flushed = alerts.flush(T + 100)
    assert flushed == [] or flushed[-1].evidence.count == 1000  # type: ignore[attr-defined]


def test_a_tunnel_on_one_socket_counts_the_names_the_agent_reported() -> None:
    sample = tuple(f"{'q' * 30}{i:04x}x9z.t.tun.test" for i in range(8))
    flow = msgspec.structs.replace(
        dns("10.0.0.13", sample[0], T), dns_queries=400, dns_names=380, dns_sample=sample
    )
    found = rules(engine().observe([flow]))
    assert found["dns_tunnel|10.0.0.13"].evidence.distinct_targets == 380


def test_refused_ssh_attempts_count_and_a_login_after_guessing_is_critical() -> None:
    behaviour = engine(guess_attempts=10)
    alerts = AlertEngine(AnalysisSettings())
    refused = [
        msgspec.structs.replace(login("198.51.100.20", T + i), auth_failures=4) for i in range(3)
    ]
    found = rules(behaviour.observe(refused))
    assert found["auth_guess|198.51.100.20"].evidence.count == 12  # hydra: 4 per session
    events = alerts.on_finding(found["auth_guess|198.51.100.20"])
    success = msgspec.structs.replace(login("198.51.100.20", T + 10), auth_success=True)
    finding = rules(behaviour.observe([success]))["auth_guess|198.51.100.20"]
    assert finding.severity == "critical" and "login succeeded" in finding.tags
    events += alerts.on_finding(finding)
    assert isinstance(events[-1], AlertUpdated) and events[-1].severity == "critical"


def test_logins_that_succeed_are_never_guesses() -> None:
    behaviour = engine()
    ok = [msgspec.structs.replace(login("10.0.0.30", T + i), auth_success=True) for i in range(40)]
    assert behaviour.observe(ok) == []


def schedule(period: float, jitter: float, count: int, rng: random.Random) -> list[float]:
    """Start times with gaps drawn uniformly within +-jitter of the period."""
    starts, at = [], T
    for _ in range(count):
        starts.append(at)
        at += period * (1 + rng.uniform(-jitter, jitter))
    return starts


def test_beacon_rates_on_simulated_schedules() -> None:
    """The rule's trade-off, measured: a +-20% beacon of 10 connections is found nearly always,
    a +-50% poller of 12 fetches rarely looks like one (docs/analysis.md quotes these)."""
    rng = random.Random(11)

    def fires(period: float, jitter: float, count: int) -> bool:
        behaviour = engine(beacon_connections=10)
        flows = [
            tcp("10.0.0.40", "203.0.113.9", 443, s, data=(300, 300), reset=False, end="fin")
            for s in schedule(period, jitter, count, rng)
        ]
        return bool(behaviour.observe(flows))

    found = sum(fires(20, 0.2, 10) for _ in range(400)) / 400
    mistaken = sum(fires(15, 0.5, 12) for _ in range(400)) / 400
    print(f"\nbeacon +-20% x10 found {found:.1%}; poller +-50% x12 taken for one {mistaken:.1%}")
    assert found >= 0.9 and mistaken <= 0.06
