"""The hub never waits for a client, counts what a slow one missed, pushes each wall row a batch
changed once (events to scripts), and renders escaped HTML."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from netmon.app.live import RESYNC, AgentStatusChanged, LiveHub, LiveRenderer
from netmon.app.projections import recent, wall, wall_rows
from netmon.app.projections.wall_rows import WallRow
from netmon.storage.contract.events import AlertAcknowledged, new_event_id
from netmon.web.assets import AssetCatalog
from netmon.web.templating import Renderer
from tests.live.factory import EVIL_DOMAIN, alert, flow, heartbeat

START = 1_800_000_000.0


def live_renderer(replica: str) -> LiveRenderer:
    """The live renderer as the server wires it: fragments from the dashboard's renderer."""
    return LiveRenderer(replica, Renderer(AssetCatalog()))


def publish(hub: LiveHub, state: recent.RecentState, events: list) -> None:
    """What the live service does with a batch: fold it into the projections, then publish."""
    for event in events:
        recent.apply(state, event)
    hub.publish(events, state)


async def test_a_stalled_client_gets_the_missed_count_then_live_rows_again() -> None:
    hub, state = LiveHub(queue_size=4), recent.RecentState()
    fast, stalled = hub.connect(None), hub.connect(None)
    events = [flow(START + i * 60, critical=True) for i in range(10)]  # one row a minute
    received = []
    for event in events:
        publish(hub, state, [event])  # returns at once whatever the stalled client does
        item, _ = await fast.next()
        received.append(item)
    assert [row.newest for row in received] == [event.id for event in events]  # type: ignore[union-attr]
    item, missed = await stalled.next()
    assert item is RESYNC and missed == 10
    assert stalled.queue.empty() and not stalled.resync_pending
    late = flow(START + 900, critical=True)
    publish(hub, state, [late])
    item, missed = await stalled.next()
    assert isinstance(item, WallRow) and item.newest == late.id and missed == 0


async def test_a_batch_pushes_each_row_it_changed_once_and_scripts_get_every_event() -> None:
    hub, state = LiveHub(queue_size=16), recent.RecentState()
    dashboard, script = hub.connect(None), hub.connect(None, rows=False)
    flood = [
        msgspec.structs.replace(flow(START + 10 + i / 100, critical=True), src_ip="198.51.100.66")
        for i in range(500)
    ]
    publish(hub, state, flood)
    row, _ = await dashboard.next()
    assert dashboard.queue.empty() and isinstance(row, WallRow)
    assert (row.entity, row.flows, row.version) == ("198.51.100.66", 500, 500)
    # A script gets the 500 events themselves: past its queue's bound, a resync.
    assert await script.next() == (RESYNC, 500)


async def test_clients_see_only_their_branches_and_only_critical_activity() -> None:
    hub, state = LiveHub(queue_size=16), recent.RecentState()
    hq, everything = hub.connect(frozenset({"hq"})), hub.connect(None)
    batch = [flow(START, "lab", critical=True), flow(START + 1, "hq"), alert(START + 2, "hq")]
    publish(hub, state, batch)
    assert hq.queue.qsize() == 1 and everything.queue.qsize() == 2
    item, _ = await hq.next()
    assert isinstance(item, WallRow) and (item.branch, item.kind) == ("hq", "alert")
    hub.publish_status(AgentStatusChanged("agent-lab", "lab", "down", START))
    assert hq.queue.empty() and everything.queue.qsize() == 3
    hub.disconnect(everything)
    publish(hub, state, [alert(START + 3, "hq")])
    assert everything.queue.qsize() == 3 and hq.queue.qsize() == 1


def rows_of(events: list) -> list[WallRow]:
    state = recent.RecentState()
    for event in events:
        recent.apply(state, event)
    return wall_rows.view(state.walls, state.walls.keys())


def test_html_fragments_escape_attacker_text() -> None:
    renderer = live_renderer("r1")
    (row,) = rows_of([flow(START, critical=True, domain=EVIL_DOMAIN)])
    for html in (renderer.row_html(row), renderer.snapshot_html([row], missed=3)):
        assert "<img" not in html and "onerror=alert(1)&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;.evil" in html
        assert f'id="{row.id}"' in html and 'data-severity="critical"' in html
    assert 'hx-swap-oob="true"' in renderer.row_html(row)
    snapshot = renderer.snapshot_html([row], missed=3)
    assert 'id="live-rows" hx-swap-oob="true"' in snapshot and "3 updates missed" in snapshot
    assert f'id="{row.id}" class' in snapshot  # rows of a snapshot are not swapped one by one
    status = renderer.status_html(AgentStatusChanged("<b>x</b>", "hq", "down", START))
    assert "<b>" not in status and "&lt;b&gt;x&lt;/b&gt;" in status


def test_an_alert_row_shows_who_acknowledged_it() -> None:
    opened = alert(START, "hq")
    acknowledged = AlertAcknowledged(
        id=new_event_id(START + 5), ts=START + 5, branch="hq", alert_id=opened.alert_id,
        by="<b>admin</b>",
    )  # fmt: skip
    (row,) = rows_of([opened, acknowledged])
    html = live_renderer("r1").row_html(row)
    assert (
        'data-state="acknowledged"' in html and "acknowledged by &lt;b&gt;admin&lt;/b&gt;" in html
    )
    assert "Port scan from 10.0.0.5" in html and "alert port_scan" in html


def test_json_messages_carry_the_event_as_data() -> None:
    renderer = live_renderer("r2")
    event = flow(START, critical=True, domain=EVIL_DOMAIN)
    message = json.loads(renderer.event_json(event))
    assert message["type"] == "event" and message["event"]["domain"] == EVIL_DOMAIN
    rows = rows_of([event])
    snapshot = json.loads(renderer.snapshot_json([event, heartbeat(START)], 0, rows))
    assert snapshot["replica"] == "r2" and [e["type"] for e in snapshot["events"]] == [
        "FlowObserved",
        "AgentHeartbeat",
    ]
    assert snapshot["rows"][0]["domains"] == [EVIL_DOMAIN] and snapshot["rows"][0]["flows"] == 1
    status = json.loads(renderer.status_json(AgentStatusChanged("a1", "hq", "up", START)))
    assert status == {
        "type": "agent",
        "agent_id": "a1",
        "branch": "hq",
        "status": "up",
        "ts": START,
    }


def test_a_snapshot_replaces_the_agents_rows_escaped() -> None:
    renderer = live_renderer("r1")
    rows = [
        {"agent_id": "sensor-1", "branch": "hq", "connected": True, "last_seen": START},
        {"agent_id": "<b>x</b>", "branch": "lab", "connected": False, "last_seen": START},
    ]
    snapshot = renderer.snapshot_html([], missed=0, agents=rows)
    assert 'id="agent-rows" hx-swap-oob="true"' in snapshot
    assert 'id="agent-sensor-1" class="agent-up"' in snapshot and "2027-01-15" in snapshot
    assert "<b>" not in snapshot
    assert 'id="agent-&lt;b&gt;x&lt;/b&gt;" class="agent-down"' in snapshot
    assert 'id="agent-rows"' not in renderer.snapshot_html([], missed=0)  # no agents given


def test_the_page_keeps_as_many_rows_of_one_source_as_the_wall() -> None:
    page = Path(__file__).resolve().parents[2] / "web" / "templates" / "live.html"
    assert f'data-entity-rows="{wall.ENTITY_ROWS}"' in page.read_text()
