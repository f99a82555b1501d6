"""Agents: last seen, events/s, spool backlog, lag and domain policy as last reported, connected
or not.

"Last reported" is the heartbeat (and the branch that of the event) with the newest (ts, id),
not the last one read, so the state does not depend on the order writers' segments are read
in. "Connected" is decided at query time against a clock: an agent is connected while it was
seen within ``timeout_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import msgspec

from netmon.app.projections.brief import FROM_AGENTS, FeedEvent, FlowBrief
from netmon.storage.contract.events import AgentHeartbeat, FlowObserved

_AGENT_ID, _ORDER = attrgetter("agent_id"), attrgetter("ts", "id")
NO_DOMAIN_POLICY = "none — unapproved-domain detection is off; see docs/agent.md#domain-policy"


class AgentState(msgspec.Struct):
    """What is known of one agent."""

    branch: str
    last_seen: float = 0.0  # newest ts of any event the agent sent
    last_id: str = ""  # that event's id (ties on ts are broken by id)
    events: int = 0  # events received from it
    heartbeat_ts: float = 0.0
    heartbeat_id: str = ""
    boot_id: str = ""
    version: str = ""
    uptime_s: float = 0.0
    events_per_s: float = 0.0
    packets_dropped: int = 0
    spool_batches: int = 0
    spool_bytes: int = 0
    lag_s: float = 0.0
    # Approved+denied domains of its policy; 0: none, so unapproved-domain detection is off;
    # -1: not reported (no heartbeat yet, or an agent older than the field).
    domain_rules: int = -1


class AgentsState(msgspec.Struct):
    """The agents projection's state, keyed by agent id."""

    agents: dict[str, AgentState] = {}


class SavedAgents(msgspec.Struct):
    """Only the agents of a saved projection snapshot (app/projections/runner.py): a reader that
    needs nothing else skips decoding the rest."""

    agents: AgentsState = msgspec.field(default_factory=AgentsState)


def reported_domain_rules(snapshot: bytes) -> dict[str, int]:
    """Each agent's last reported ``domain_rules``, from a saved snapshot's bytes.

    Raises ``msgspec.DecodeError`` or ``msgspec.ValidationError`` when they are not one.
    """
    saved = msgspec.msgpack.decode(snapshot, type=SavedAgents)
    return {agent_id: agent.domain_rules for agent_id, agent in saved.agents.agents.items()}


def apply(state: AgentsState, event: FeedEvent) -> None:
    """Fold one event into the agents table."""
    if not isinstance(event, FROM_AGENTS):
        return
    agent_id: str = event.agent_id  # type: ignore[union-attr]
    agent = state.agents.get(agent_id)
    if agent is None:
        agent = state.agents[agent_id] = AgentState(branch=event.branch)
    agent.events += 1
    if (event.ts, event.id) > (agent.last_seen, agent.last_id):
        agent.last_seen, agent.last_id, agent.branch = event.ts, event.id, event.branch
    if isinstance(event, AgentHeartbeat) and (event.ts, event.id) > (
        agent.heartbeat_ts,
        agent.heartbeat_id,
    ):
        agent.heartbeat_ts, agent.heartbeat_id = event.ts, event.id
        agent.boot_id, agent.version, agent.uptime_s = event.boot_id, event.version, event.uptime_s
        agent.events_per_s, agent.packets_dropped = event.events_per_s, event.packets_dropped
        agent.spool_batches, agent.spool_bytes = event.spool_batches, event.spool_bytes
        agent.lag_s, agent.domain_rules = event.lag_s, event.domain_rules


def apply_flows(state: AgentsState, flows: Sequence[FlowObserved | FlowBrief]) -> None:
    """Fold flows of one branch as ``apply`` would one by one: a flow is never a heartbeat,
    so each agent only counts them and keeps the newest (ts, id), found here in C."""
    if not flows:
        return
    if len(set(map(_AGENT_ID, flows))) != 1:
        for flow in flows:
            apply(state, flow)
        return
    first = flows[0]
    agent = state.agents.get(first.agent_id)
    if agent is None:
        agent = state.agents[first.agent_id] = AgentState(branch=first.branch)
    agent.events += len(flows)
    newest = max(map(_ORDER, flows))
    if newest > (agent.last_seen, agent.last_id):
        agent.last_seen, agent.last_id = newest
        agent.branch = first.branch


def domain_policy_text(domain_rules: int) -> str:
    """What an agent's reported policy means, in words (``netmon agents list``, the dashboard)."""
    if domain_rules < 0:
        return "not reported (no heartbeat yet, or an agent older than this server)"
    if domain_rules == 0:
        return NO_DOMAIN_POLICY
    return f"{domain_rules} approved and denied domain{'s' if domain_rules != 1 else ''}"


def is_connected(agent: AgentState, now: float, timeout_s: float) -> bool:
    """Whether the agent was heard from within ``timeout_s`` of ``now``."""
    return now - agent.last_seen <= timeout_s


def view(
    state: AgentsState, branches: set[str] | None, now: float, timeout_s: float
) -> list[dict[str, Any]]:
    """Every agent of the given branches (None: all), sorted by id."""
    rows = []
    for agent_id in sorted(state.agents):
        agent = state.agents[agent_id]
        if branches is not None and agent.branch not in branches:
            continue
        row = msgspec.structs.asdict(agent)
        del row["heartbeat_id"], row["last_id"]
        rows.append({"agent_id": agent_id, "connected": is_connected(agent, now, timeout_s), **row})
    return rows
