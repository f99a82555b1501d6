"""The live feed's routes: ``/ws/live`` pushes HTML fragments for htmx, ``/ws/live.json`` (or
``?format=json``) JSON for scripts; ``?branch=NAME`` (repeatable) narrows the feed, and the
principal's branches always cut it down. The feed itself is the replica's ``LiveService``
(app/live_service.py), opened by the lifespan.
"""

from __future__ import annotations

import contextlib

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from netmon.app.access import SecuredWebSocketRoute
from netmon.app.auth.principals import principal_of
from netmon.app.live import RESYNC, AgentStatusChanged, LiveClient, LiveRenderer
from netmon.app.live_service import LiveService
from netmon.app.projections.wall_rows import WallRow
from netmon.app.state import opened, server_state


def requested_branches(websocket: WebSocket) -> frozenset[str] | None:
    """The branches this connection may see: what it asked for, cut down to the principal's."""
    asked = websocket.query_params.getlist("branch") or None
    principal = principal_of(websocket)
    if principal is None:
        # Only apps built without the identity middleware (it refuses anonymous viewers).
        return None if asked is None else frozenset(asked)
    return principal.allowed_branches(asked)


async def live_socket(websocket: WebSocket) -> None:
    """The live feed: a snapshot on connect, then pushes; a resync whenever it fell behind."""
    service = opened(server_state(websocket).live, "the live service")
    as_json = websocket.url.path.endswith(".json") or websocket.query_params.get("format") == "json"
    branches = requested_branches(websocket)
    await websocket.accept()
    client = service.hub.connect(branches, rows=not as_json)
    try:
        await _send_snapshot(websocket, service, client, as_json, missed=0)
        async with anyio.create_task_group() as group:
            group.start_soon(_drain_incoming, websocket, group.cancel_scope)
            await _send_loop(websocket, service, client, as_json)
    except* WebSocketDisconnect:  # the client went away while we were sending (task group)
        pass
    finally:
        service.hub.disconnect(client)


async def _drain_incoming(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    scope.cancel()


def _renderer(service: LiveService) -> LiveRenderer:
    renderer = service.renderer
    assert renderer is not None, "only the projector process runs without one, and serves no socket"
    return renderer


async def _send_loop(
    websocket: WebSocket, service: LiveService, client: LiveClient, as_json: bool
) -> None:
    renderer = _renderer(service)
    while True:
        item, missed = await client.next()
        if item is RESYNC:
            await _send_snapshot(websocket, service, client, as_json, missed)
        elif isinstance(item, AgentStatusChanged):
            text = renderer.status_json(item) if as_json else renderer.status_html(item)
            await websocket.send_text(text)
        elif isinstance(item, WallRow):
            await websocket.send_text(renderer.row_html(item))
        else:  # a critical event, for a script's connection
            await websocket.send_text(renderer.event_json(item))  # type: ignore[arg-type]
        client.delivered += 1


async def _send_snapshot(
    websocket: WebSocket, service: LiveService, client: LiveClient, as_json: bool, missed: int
) -> None:
    # Taken synchronously right after the marker was dequeued: covers exactly what was dropped.
    rows = service.snapshot_rows(client.branches)
    renderer = _renderer(service)
    if as_json:
        events = service.snapshot_events(client.branches)
        if missed:
            await websocket.send_text(f'{{"type":"missed","count":{missed}}}')
        await websocket.send_text(renderer.snapshot_json(events, missed, rows))
    else:
        agent_rows = service.snapshot_agents(client.branches)
        await websocket.send_text(renderer.snapshot_html(rows, missed, agent_rows))


def routes() -> list[SecuredWebSocketRoute]:
    """The live feed's routes (viewer and up; branches scoped per principal)."""
    return [
        SecuredWebSocketRoute("/ws/live", live_socket, access="viewer"),
        SecuredWebSocketRoute("/ws/live.json", live_socket, access="viewer"),
    ]
