"""The committed real captures agree with their ground truth, as the real agent meters them.

tests/data/make_captures.py ran real tools in network namespaces and wrote each set's pcap and
truth (tests/data/captures.py). Here each pcap is replayed through ``netmon agent replay`` and
the flows are held against the truth: every flow belongs to one scenario (or is link-local
housekeeping), every scenario shows up inside its own time, the agent's connections equal
tshark's, and each attack's counts are what its tool reported. These are facts about the data,
not about any detector.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from ipaddress import ip_address
from pathlib import Path

import pytest

from netmon.app.analysis.corpus.build import replay
from netmon.storage.contract.events import FlowObserved
from tests.data.captures import (
    REAL_DIR,
    SETS,
    CaptureSet,
    Scenario,
    TruthError,
    load_set,
    pcap_path,
)

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
SYN, ACK = 0x02, 0x10
NEIGHBOUR_DISCOVERY = range(133, 138)  # ICMPv6 router/neighbour solicitation and advert, redirect
UNREACHABLE = {(ICMP, 3, 3), (ICMP6, 1, 4)}  # (protocol, type, code): port unreachable
# An exited tool's last packets (a RST, an answer in flight) land a moment after its end.
LATE_S = 2.0
# How late a paced client's connection may start after its planned time (process start-up).
PACING_SLACK_S = 0.5

Metered = tuple[CaptureSet, list[FlowObserved]]


@pytest.fixture(scope="module", params=SETS)
def metered(request: pytest.FixtureRequest) -> Metered:
    """One capture set's truth and the flows the real agent meters from its pcap."""
    truth = load_set(request.param)
    return truth, replay(pcap_path(truth))


def _by_scenario(metered: Metered) -> dict[str, list[FlowObserved]]:
    truth, flows = metered
    owned: dict[str, list[FlowObserved]] = defaultdict(list)
    for flow in flows:
        owner = truth.owner(flow.src_ip) or truth.owner(flow.dst_ip)
        if owner is not None:
            owned[owner.name].append(flow)
    return owned


def _from(scenario: Scenario, flows: list[FlowObserved], protocol: int) -> list[FlowObserved]:
    return [f for f in flows if f.src_ip in scenario.sources and f.protocol == protocol]


def _opened(scenario: Scenario, flows: list[FlowObserved]) -> list[FlowObserved]:
    """TCP flows the scenario's host opened (its SYN is in the flow)."""
    return [f for f in _from(scenario, flows, TCP) if f.src2dst_tcp_flags & SYN]


def _housekeeping(flow: FlowObserved) -> bool:
    """Link traffic of the hosts themselves (MLD reports, neighbour discovery)."""
    addresses = (ip_address(flow.src_ip), ip_address(flow.dst_ip))
    local = any(a.is_link_local or a.is_multicast for a in addresses)
    return flow.protocol == ICMP6 and (local or flow.src_port in NEIGHBOUR_DISCOVERY)


def test_every_flow_belongs_to_one_scenario_or_the_link(metered: Metered) -> None:
    truth, flows = metered
    strays = [
        (f.src_ip, f.dst_ip, f.protocol)
        for f in flows
        if truth.owner(f.src_ip) is None and truth.owner(f.dst_ip) is None and not _housekeeping(f)
    ]
    assert strays == []
    both = [f for f in flows if truth.owner(f.src_ip) and truth.owner(f.dst_ip)]
    assert both == [], "scenario hosts only ever talk to the victim"


def test_every_scenario_is_in_the_capture_within_its_own_time(metered: Metered) -> None:
    truth, _ = metered
    owned = _by_scenario(metered)
    for scenario in truth.scenarios:
        flows = [f for f in owned[scenario.name] if not _housekeeping(f)]
        assert flows, f"{scenario.name}: no flow from {scenario.sources}"
        assert min(f.first_seen for f in flows) >= scenario.start, scenario.name
        assert max(f.last_seen for f in flows) <= scenario.end + LATE_S, scenario.name
        assert truth.start <= scenario.start < scenario.end <= truth.end


def test_the_agent_counts_the_connections_tshark_counts(metered: Metered) -> None:
    truth, _ = metered
    owned = _by_scenario(metered)
    for scenario in truth.scenarios:
        opened = _opened(scenario, owned[scenario.name])
        assert len(opened) == scenario.measured.tcp_connections, scenario.name


def test_benign_connection_counts_match_what_the_clients_made(metered: Metered) -> None:
    truth, _ = metered
    owned = _by_scenario(metered)
    for scenario in truth.scenarios:
        if scenario.kind != "attack" and scenario.expected.connections:
            opened = _opened(scenario, owned[scenario.name])
            assert len(opened) == scenario.expected.connections, scenario.name
        if scenario.expected.queries:
            assert scenario.measured.dns_queries == scenario.expected.queries, scenario.name
        if scenario.target_ports == "icmp":
            echoes = _from(scenario, owned[scenario.name], ICMP)
            assert sum(f.src2dst_packets for f in echoes) == scenario.expected.packets
            assert len({f.dst_ip for f in echoes}) == scenario.expected.hosts


def _check_scan(scenario: Scenario, flows: list[FlowObserved]) -> None:
    probes = _from(scenario, flows, UDP if scenario.behaviour == "udp_scan" else TCP)
    ports = {f.dst_port for f in probes}
    hosts = {f.dst_ip for f in probes}
    assert len(ports) == scenario.expected.ports, scenario.name
    assert len(hosts) == scenario.expected.hosts, scenario.name
    assert hosts <= set(scenario.targets), scenario.name
    assert set(scenario.expected.open_ports) <= ports, scenario.name


def _check_udp_answers(scenario: Scenario, flows: list[FlowObserved]) -> None:
    answers = [
        f
        for f in flows
        if (f.protocol, f.src_port, f.dst_port) in UNREACHABLE and f.dst_ip in scenario.sources
    ]
    assert answers, f"{scenario.name}: no ICMP port unreachable"
    assert sum(f.src2dst_packets for f in answers) == scenario.measured.icmp_unreachable
    # the victim's kernel rate-limits its ICMP errors: at most one answer per probe
    probes = sum(f.src2dst_packets for f in _from(scenario, flows, UDP))
    assert 0 < scenario.measured.icmp_unreachable <= probes, scenario.name


def _check_flood(scenario: Scenario, flows: list[FlowObserved]) -> None:
    syns = _opened(scenario, flows)
    assert len(syns) == scenario.expected.packets, scenario.name
    assert {(f.dst_ip, f.dst_port) for f in syns} == {
        (scenario.targets[0], int(scenario.target_ports))
    }
    # one SYN per source port, and the handshake never completes: the attacker's kernel resets
    # the SYN/ACK it did not ask for
    assert all(f.src2dst_packets <= 2 and not f.src2dst_tcp_flags & ACK for f in syns)


def _check_sessions(scenario: Scenario, flows: list[FlowObserved]) -> None:
    opened = _opened(scenario, flows)
    port = int(scenario.target_ports)
    assert {f.dst_port for f in opened} == {port}, scenario.name
    if scenario.expected.connections:
        assert len(opened) == scenario.expected.connections, scenario.name
    if scenario.behaviour == "auth_guess":
        assert scenario.expected.attempts >= len(opened) >= 1, scenario.name


def _check_dns_tunnel(scenario: Scenario, flows: list[FlowObserved]) -> None:
    queries = [f for f in _from(scenario, flows, UDP) if f.dst_port == 53]
    assert queries and all(f.domain.endswith(scenario.expected.parent_domain) for f in queries)
    assert scenario.measured.dns_names == scenario.expected.names, scenario.name
    if len(queries) > 1:  # one lookup per dig run: the agent names each flow
        assert len({f.domain for f in queries}) == scenario.expected.names, scenario.name


CHECKS = {
    "port_scan": (_check_scan,),
    "slow_scan": (_check_scan,),
    "addr_scan": (_check_scan,),
    "udp_scan": (_check_scan, _check_udp_answers),
    "syn_flood": (_check_flood,),
    "auth_guess": (_check_sessions,),
    "beacon": (_check_sessions,),
    "dns_tunnel": (_check_dns_tunnel,),
}


def test_each_attack_shows_the_counts_its_tool_reported(metered: Metered) -> None:
    truth, _ = metered
    owned = _by_scenario(metered)
    attacks = [s for s in truth.scenarios if s.kind == "attack"]
    assert {s.behaviour for s in attacks} == set(CHECKS), "every behaviour in every set"
    for scenario in attacks:
        assert scenario.behaviour is not None
        for check in CHECKS[scenario.behaviour]:
            check(scenario, owned[scenario.name])


def test_periodic_scenarios_keep_the_period_and_jitter_they_were_run_with(
    metered: Metered,
) -> None:
    truth, _ = metered
    owned = _by_scenario(metered)
    periodic = [s for s in truth.scenarios if s.expected.period_s]
    assert {s.kind for s in periodic} >= {"attack"}, "a beacon in every set"
    for scenario in periodic:
        starts = sorted(f.first_seen for f in _opened(scenario, owned[scenario.name]))
        gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
        period, jitter = scenario.expected.period_s, scenario.expected.jitter
        assert len(starts) == scenario.expected.connections, scenario.name
        # each gap is drawn uniformly within period +- jitter; a curl starts a moment late
        low, high = period * (1 - jitter) - PACING_SLACK_S, period * (1 + jitter) + PACING_SLACK_S
        assert all(low <= gap <= high for gap in gaps), (scenario.name, gaps)


def test_addresses_name_one_scenario_each_and_the_lists_agree(metered: Metered) -> None:
    truth, _ = metered
    sources = Counter(a for s in truth.scenarios for a in s.sources)
    assert max(sources.values()) == 1, "one source host per scenario"
    assert set(truth.attackers) == {
        a for s in truth.scenarios if s.kind == "attack" for a in s.sources
    }
    assert set(truth.benign_clients) == {
        a for s in truth.scenarios if s.kind != "attack" for a in s.sources
    }
    assert not set(truth.attackers) & set(truth.victim + truth.victim_extra)


def test_at_least_500_benign_flows_in_each_set(metered: Metered) -> None:
    truth, flows = metered
    benign = set(truth.benign_clients)
    count = sum(1 for f in flows if {f.src_ip, f.dst_ip} & benign and not _housekeeping(f))
    assert count >= 500
    assert "lookalike" in {s.kind for s in truth.scenarios}


def _pairs_of_sets() -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(SETS) for b in SETS[i + 1 :]]


@pytest.mark.parametrize(("one", "other"), _pairs_of_sets())
def test_each_set_has_its_own_look_alikes_made_with_other_settings(one: str, other: str) -> None:
    first, second = (
        [s for s in load_set(name).scenarios if s.kind == "lookalike"] for name in (one, other)
    )
    assert len(first) == len(second) == 5
    # no look-alike's command, nor its ports with its counts, is in another set (an SSH login
    # is on port 22 and a lookup on 53 in every set: the settings are what differ)
    assert not {s.command for s in first} & {s.command for s in second}
    settings = {(s.target_ports, s.expected) for s in first}
    assert not settings & {(s.target_ports, s.expected) for s in second}


@pytest.mark.parametrize(("one", "other"), _pairs_of_sets())
def test_no_attack_is_run_with_the_same_command_line_in_two_sets(one: str, other: str) -> None:
    first, second = (
        {s.command for s in load_set(name).scenarios if s.kind == "attack"} for name in (one, other)
    )
    assert not first & second


def test_the_sets_use_addresses_of_their_own() -> None:
    sources = [set(a for s in load_set(name).scenarios for a in s.sources) for name in SETS]
    assert all(not a & b for i, a in enumerate(sources) for b in sources[i + 1 :])


def test_a_truth_file_that_does_not_match_is_refused_naming_it(tmp_path: Path) -> None:
    good = load_set("train")
    broken = (REAL_DIR / "train.json").read_text().replace('"kind": "attack"', '"kind": "evil"')
    (tmp_path / "train.json").write_text(broken)
    with pytest.raises(TruthError, match=r"train\.json.*kind"):
        load_set("train", tmp_path)
    with pytest.raises(TruthError, match="heldout.json"):
        load_set("heldout", tmp_path)
    assert good.scenarios
