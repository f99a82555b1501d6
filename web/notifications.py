"""Notification delivery, as analysts see it: ``GET /api/v1/notifications`` and the Alerts page
banner ("N notifications failing — last error: ...").

Both read the analysis worker's outbox (storage/outbox.py) read-only, from whichever replica
serves the request: counts by state and the newest rows that failed. Access: analyst or admin
(the route's level; the banner checks the same role). Delivery health is one for the whole
server, so it is not branch scoped: a failing row shows its notification id, channel, attempts
and the receiver's error, never the alert's content.
"""

from __future__ import annotations

import logging

import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from netmon.app.auth.principals import principal_of
from netmon.app.state import server_state
from netmon.storage.outbox import OutboxStatus, outbox_path, read_status

log = logging.getLogger(__name__)


async def outbox_status(request: Request) -> OutboxStatus:
    """The outbox of this server's data dir (empty when the worker never wrote one)."""
    path = outbox_path(server_state(request).settings.data_dir)
    status = await anyio.to_thread.run_sync(read_status, path)
    if status.error:
        log.error("notifications: %s", status.error)
    return status


async def notifications_api(request: Request) -> Response:
    """GET /api/v1/notifications: counts by state and the newest failing notifications."""
    status = await outbox_status(request)
    if status.error:
        body = {"error": "outbox_unavailable", "detail": status.error}
        return JSONResponse(body, status_code=503)
    return Response(msgspec.json.encode(status), media_type="application/json")


async def notification_banner(request: Request) -> OutboxStatus | None:
    """What the Alerts page banner shows: None unless the caller may see delivery health
    (analyst or admin) and some notification is failing, or the outbox cannot be read."""
    principal = principal_of(request)
    if principal is not None and not principal.has_role("analyst"):
        return None
    status = await outbox_status(request)
    return status if status.failing_total or status.error else None
