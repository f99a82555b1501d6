"""An agent without a domain policy: the agents projection keeps what its heartbeats say, and
the Live page's agents table shows a notice under its row that up/down pushes leave alone."""

from __future__ import annotations

import msgspec

from netmon.app.live import AgentStatusChanged, LiveRenderer
from netmon.app.projections import agents
from netmon.app.projections.runner import ProjectionSnapshot, apply_all
from netmon.web.assets import AssetCatalog
from netmon.web.templating import Renderer
from tests.live.factory import flow, heartbeat

START = 1_800_000_000.0
NOTICE = "domain policy: none — unapproved-domain detection is off"


def live_renderer(replica: str) -> LiveRenderer:
    """The live renderer as the server wires it: fragments from the dashboard's renderer."""
    return LiveRenderer(replica, Renderer(AssetCatalog()))


def _state(events: list) -> agents.AgentsState:
    snapshot = ProjectionSnapshot()
    apply_all(snapshot, events)
    return snapshot.agents


def test_the_projection_keeps_the_newest_heartbeats_domain_rules() -> None:
    beats = [heartbeat(START + i, agent_id="a1", domain_rules=i) for i in (2, 0, 7)]
    for order in (beats, beats[::-1]):
        assert _state(order).agents["a1"].domain_rules == 7
    assert _state([flow(START, agent_id="a2")]).agents["a2"].domain_rules == -1  # no heartbeat
    (row,) = agents.view(_state(beats), None, START + 10, timeout_s=60)
    assert row["domain_rules"] == 7


def test_a_snapshot_saved_before_the_field_reads_as_not_reported() -> None:
    old = {"agents": {"agents": {"a1": {"branch": "hq", "last_seen": START, "events": 3}}}}
    snapshot = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=ProjectionSnapshot)
    assert snapshot.agents.agents["a1"].domain_rules == -1
    assert agents.reported_domain_rules(msgspec.msgpack.encode(old)) == {"a1": -1}


def test_the_agents_table_shows_the_notice_only_for_an_agent_without_a_policy() -> None:
    state = _state(
        [
            heartbeat(START, agent_id="bare", domain_rules=0),
            heartbeat(START, agent_id="ruled", domain_rules=12),
            heartbeat(START, agent_id="old"),  # an agent too old to say: -1
        ]
    )
    rows = agents.view(state, None, START + 5, timeout_s=60)
    html = live_renderer("r1").snapshot_html([], missed=0, agents=rows)
    assert html.count(NOTICE) == 1
    assert 'id="domain-policy-bare"' in html and "docs/agent.md#domain-policy" in html
    assert html.index('id="agent-bare"') < html.index('id="domain-policy-bare"')
    # Rows built without the field (an older replica's view) show no notice.
    legacy = [{"agent_id": "x", "branch": "hq", "connected": True, "last_seen": START}]
    assert NOTICE not in live_renderer("r1").snapshot_html([], missed=0, agents=legacy)


def test_an_up_or_down_push_replaces_the_agents_row_not_its_notice() -> None:
    pushed = live_renderer("r1").status_html(AgentStatusChanged("bare", "hq", "down", START))
    assert 'id="agent-bare"' in pushed and "domain-policy-bare" not in pushed
