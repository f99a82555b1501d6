"""The hub never waits for a client, counts what a slow one missed, and renders escaped HTML."""

from __future__ import annotations

import json

from netmon.app.live import RESYNC, AgentStatusChanged, LiveHub, LiveRenderer
from netmon.web.assets import AssetCatalog
from netmon.web.templating import Renderer
from tests.live.factory import EVIL_DOMAIN, alert, flow, heartbeat

START = 1_800_000_000.0


def live_renderer(replica: str) -> LiveRenderer:
    """The live renderer as the server wires it: fragments from the dashboard's renderer."""
    return LiveRenderer(replica, Renderer(AssetCatalog()))


async def test_a_stalled_client_gets_the_missed_count_then_live_events_again() -> None:
    hub = LiveHub(queue_size=4)
    fast, stalled = hub.connect(None), hub.connect(None)
    events = [flow(START + i, critical=True) for i in range(10)]
    received = []
    for event in events:
        hub.publish([event])  # returns at once whatever the stalled client does
        item, _ = await fast.next()
        received.append(item)
    assert received == events
    item, missed = await stalled.next()
    assert item is RESYNC and missed == 10
    assert stalled.queue.empty() and not stalled.resync_pending
    late = flow(START + 20, critical=True)
    hub.publish([late])
    assert await stalled.next() == (late, 0)


async def test_clients_see_only_their_branches_and_only_critical_events() -> None:
    hub = LiveHub(queue_size=16)
    hq, everything = hub.connect(frozenset({"hq"})), hub.connect(None)
    hub.publish([flow(START, "lab", critical=True), flow(START + 1, "hq"), alert(START + 2, "hq")])
    assert hq.queue.qsize() == 1 and everything.queue.qsize() == 2
    item, _ = await hq.next()
    assert item.branch == "hq" and type(item).__name__ == "AlertOpened"
    hub.publish_status(AgentStatusChanged("agent-lab", "lab", "down", START))
    assert hq.queue.empty() and everything.queue.qsize() == 3
    hub.disconnect(everything)
    hub.publish([alert(START + 3, "hq")])
    assert everything.queue.qsize() == 3 and hq.queue.qsize() == 1


def test_html_fragments_escape_attacker_text() -> None:
    renderer = live_renderer("r1")
    event = flow(START, critical=True, domain=EVIL_DOMAIN)
    for html in (renderer.event_html(event), renderer.snapshot_html([event], missed=3)):
        assert "<img" not in html and "onerror=alert(1)&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;.evil" in html
        assert f'id="ev-{event.id}"' in html
    assert 'hx-swap-oob="afterbegin:#live-rows"' in renderer.event_html(event)
    snapshot = renderer.snapshot_html([event], missed=3)
    assert 'id="live-rows" hx-swap-oob="true"' in snapshot and "3 events missed" in snapshot
    status = renderer.status_html(AgentStatusChanged("<b>x</b>", "hq", "down", START))
    assert "<b>" not in status and "&lt;b&gt;x&lt;/b&gt;" in status


def test_json_messages_carry_the_event_as_data() -> None:
    renderer = live_renderer("r2")
    event = flow(START, critical=True, domain=EVIL_DOMAIN)
    message = json.loads(renderer.event_json(event))
    assert message["type"] == "event" and message["event"]["domain"] == EVIL_DOMAIN
    snapshot = json.loads(renderer.snapshot_json([event, heartbeat(START)], missed=0))
    assert snapshot["replica"] == "r2" and [e["type"] for e in snapshot["events"]] == [
        "FlowObserved",
        "AgentHeartbeat",
    ]
    status = json.loads(renderer.status_json(AgentStatusChanged("a1", "hq", "up", START)))
    assert status == {
        "type": "agent",
        "agent_id": "a1",
        "branch": "hq",
        "status": "up",
        "ts": START,
    }


def test_an_acknowledgement_row_shows_its_note_only_when_there_is_one() -> None:
    from netmon.app.live import describe
    from netmon.storage.contract.events import AlertAcknowledged, new_event_id

    def acknowledged(note: str) -> AlertAcknowledged:
        return AlertAcknowledged(
            id=new_event_id(START), ts=START, branch="hq", alert_id="a1", by="admin", note=note
        )

    assert describe(acknowledged(""))["detail"] == "by admin"
    assert describe(acknowledged("on it"))["detail"] == "by admin: on it"


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
