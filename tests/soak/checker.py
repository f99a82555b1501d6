"""The soak's checker: what every agent sent (its ledger) against what the store holds.

Flow ``i`` of agent ``A`` is stored with domain ``i<i>.<A>.soak``; probes are known by id. Lost =
sent but not stored; duplicated = stored more than once (by flow index, or by event id).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from tqdm import tqdm

from netmon.storage.contract.events import DetectionRaised, FlowClassified, FlowObserved
from netmon.storage.log_reader import EventLogReader

if TYPE_CHECKING:
    from tests.live.cluster import Dashboard


class SoakReport(msgspec.Struct, kw_only=True):
    seconds: float
    rate_asked: int
    rate_sent: float  # flows/s the fleets actually emitted
    agents: int
    sent: int  # flows + probes
    stored: int
    lost: int
    duplicated: int
    unexpected: int  # stored soak events no agent claims to have sent
    max_ack_latency_s: float
    p99_ack_latency_s: float
    feed_delivered: int
    feed_missed: int
    feed_missed_markers: int
    replica_kills: int
    nginx_reloads: int
    unexpected_exits: list[str]
    archives_sealed: int
    archives_uploaded: int
    acks_while_full: int
    gaps_reported: int
    verdicts: int  # FlowClassified events the worker wrote
    verdicts_repeated: int  # verdicts beyond the first for a flow (the worker's restarts)
    timeline: list[str]

    def render(self) -> str:
        lines = [
            "=== chaos soak report ===",
            f"duration            {self.seconds:.0f} s, {self.agents} agents",
            f"rate                asked {self.rate_asked} flows/s, "
            f"sent {self.rate_sent:.0f} flows/s",
            f"sent                {self.sent}",
            f"stored              {self.stored}",
            f"lost                {self.lost}",
            f"duplicated          {self.duplicated}",
            f"unexpected          {self.unexpected}",
            f"ack latency         max {self.max_ack_latency_s:.3f} s, "
            f"p99 {self.p99_ack_latency_s:.3f} s (worst agent)",
            f"live feed           delivered {self.feed_delivered}, missed {self.feed_missed} "
            f"(resync markers {self.feed_missed_markers})",
            f"chaos               {self.replica_kills} kill -9, {self.nginx_reloads} nginx reloads",
            f"offline hour        {self.archives_sealed} ZIP sealed, "
            f"{self.archives_uploaded} uploaded",
            f"disk full           {self.acks_while_full} events acknowledged while full",
            f"spool gaps          {self.gaps_reported}",
            f"worker verdicts     {self.verdicts} ({self.verdicts_repeated} repeated)",
            f"unexpected exits    {', '.join(self.unexpected_exits) or 'none'}",
            "timeline:",
            *(f"  {entry}" for entry in self.timeline),
        ]
        return "\n".join(lines)


class Stored:
    """What the store holds for the soak, counted in one scan."""

    def __init__(self) -> None:
        self.flows: collections.Counter[tuple[str, int]] = collections.Counter()  # (agent, i)
        self.ids: collections.Counter[str] = collections.Counter()  # soak event id -> times
        self.verdicts: collections.Counter[str] = collections.Counter()  # flow id -> verdicts


def stored_counts(data_dir: Path) -> Stored:
    """Count every soak flow, probe and verdict in the store."""
    stored = Stored()
    reader = EventLogReader(data_dir)
    for event in tqdm(
        reader.scan(None, None), desc="checking the store", unit=" events", mininterval=2.0
    ):
        if isinstance(event, FlowObserved) and event.domain.endswith(".soak"):
            index, agent, _ = event.domain.split(".", 2)
            stored.flows[(agent, int(index[1:]))] += 1
            stored.ids[event.id] += 1
        elif isinstance(event, DetectionRaised) and event.agent_id.startswith("agent-"):
            stored.ids[event.id] += 1
        elif isinstance(event, FlowClassified):
            stored.verdicts[event.flow_id] += 1
    return stored


def check(
    data_dir: Path, ledgers: dict[str, dict[str, Any]], dashboard: Dashboard, soak: Any
) -> SoakReport:
    """Compare the ledgers with the store and build the report."""
    stored = stored_counts(data_dir)
    flows, ids = stored.flows, stored.ids
    sent_flows = {(agent, i) for agent, ledger in ledgers.items() for i in range(ledger["sent"])}
    probes = {probe for ledger in ledgers.values() for probe in ledger["probes"]}
    stored_probes = {event_id for event_id in probes if ids[event_id]}
    lost = len(sent_flows - flows.keys()) + len(probes - stored_probes)
    duplicated = sum(count - 1 for count in flows.values() if count > 1)
    duplicated += sum(count - 1 for count in ids.values() if count > 1)
    unexpected = len(flows.keys() - sent_flows)
    timeline = soak.timeline
    seconds = soak.config.seconds
    return SoakReport(
        seconds=seconds,
        rate_asked=soak.config.rate,
        rate_sent=sum(ledger["sent"] for ledger in ledgers.values()) / seconds,
        agents=len(ledgers),
        sent=len(sent_flows) + len(probes),
        stored=len(flows) + len(stored_probes),
        lost=lost,
        duplicated=duplicated,
        unexpected=unexpected,
        max_ack_latency_s=max(
            (ledger["max_ack_latency_s"] for ledger in ledgers.values()), default=0.0
        ),
        p99_ack_latency_s=max((ledger["ack_p99_s"] for ledger in ledgers.values()), default=0.0),
        feed_delivered=len(stored_probes & dashboard.received.keys()),
        feed_missed=len(stored_probes - dashboard.received.keys()),
        feed_missed_markers=sum(dashboard.missed_markers),
        replica_kills=sum("kill -9" in line for line in timeline.entries),
        nginx_reloads=sum("nginx -s reload" in line for line in timeline.entries),
        unexpected_exits=[*soak.replica_exits]
        + [f"{child.name}: {code}" for child in soak.children for code in child.exits],
        archives_sealed=sum(ledger["archives_sealed"] for ledger in ledgers.values()),
        archives_uploaded=sum(ledger["archives_uploaded"] for ledger in ledgers.values()),
        acks_while_full=int(timeline.figures.get("acks_while_full", -1)),
        gaps_reported=sum(ledger["gaps"] for ledger in ledgers.values()),
        verdicts=sum(stored.verdicts.values()),
        verdicts_repeated=sum(n - 1 for n in stored.verdicts.values() if n > 1),
        timeline=timeline.entries,
    )
