"""The Alerts page: alert state folded from the log's lifecycle events, and the acknowledge/resolve
actions, which append ``AlertAcknowledged`` / ``AlertResolved`` to the log like any other fact.

The state is derived, never stored beside the log: the page folds the Alert* events of the last
days (a search by type: the sidecar indexes skip segments without any). Every replica's live feed
then pushes the new event, so a second browser tab sees the change without reloading.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import anyio
import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from netmon.app.auth.principals import principal_of
from netmon.app.state import server_state
from netmon.storage.contract.events import (
    SEVERITY_RANK,
    AlertAcknowledged,
    AlertOpened,
    AlertResolved,
    new_event_id,
)
from netmon.storage.queries import Query
from netmon.web.principals import allowed_branches, audit
from netmon.web.state import web_state

log = logging.getLogger(__name__)

ALERT_DAYS = 14
MAX_NOTE = 2000
ALERT_TYPES = ("AlertOpened", "AlertAcknowledged", "AlertResolved")
State = Literal["open", "acknowledged", "resolved"]


class AlertView(msgspec.Struct, kw_only=True):
    """One alert as the page shows it."""

    alert_id: str
    branch: str
    rule: str
    entity: str
    severity: str
    title: str
    opened: float
    state: State = "open"
    by: str = ""
    note: str = ""
    updated: float = 0.0


def fold(events: Iterable[Any]) -> dict[str, AlertView]:
    """Alert views from lifecycle events in any order (sorted by time here)."""
    alerts: dict[str, AlertView] = {}
    for event in sorted(events, key=lambda e: (e.ts, e.id)):
        if isinstance(event, AlertOpened):
            alerts.setdefault(
                event.alert_id,
                AlertView(
                    alert_id=event.alert_id,
                    branch=event.branch,
                    rule=event.rule,
                    entity=event.entity,
                    severity=event.severity,
                    title=event.title,
                    opened=event.ts,
                    updated=event.ts,
                ),
            )
        elif isinstance(event, AlertAcknowledged | AlertResolved):
            view = alerts.get(event.alert_id)
            if view is None or view.state == "resolved":
                continue  # opened before the window, or already closed
            view.state = "resolved" if isinstance(event, AlertResolved) else "acknowledged"
            view.by, view.note, view.updated = event.by, event.note, event.ts
    return alerts


def load_alerts(reader: Any, now: float, branches: Sequence[str] | None) -> list[AlertView]:
    """Alerts opened in the last ALERT_DAYS days: unresolved first, then by severity and time.

    A search by event type: the store's sidecar indexes list the types each sealed segment
    holds, so the (many) segments without any alert event are never opened.
    """
    query = Query(
        types=ALERT_TYPES,
        start=now - ALERT_DAYS * 86400,
        end=now + 60,  # a clock slightly ahead elsewhere must not hide a fresh alert
        branches=None if branches is None else tuple(branches),
    )
    events = reader.search(query)
    alerts = list(fold(events).values())
    alerts.sort(key=lambda a: (a.state != "resolved", SEVERITY_RANK[a.severity], a.opened))
    alerts.reverse()
    return alerts


async def alerts_page(request: Request) -> Response:
    """GET /alerts: open, acknowledged and recently resolved alerts."""
    web = web_state(request)
    branches = await allowed_branches(request)
    reader = web.events.new_reader()
    alerts = await anyio.to_thread.run_sync(load_alerts, reader, time.time(), branches)
    return web.renderer.page(
        request,
        "alerts.html",
        active="alerts",
        available=True,
        alerts=alerts,
        can_act=_can_act(request),
        max_note=MAX_NOTE,
        keep_typed_note=True,
        # Live pushes refresh the list, where this app has a live service (not web's test app).
        live=server_state(request).live is not None,
    )


async def alert_action(request: Request) -> Response:
    """POST /alerts/{alert_id}/{action}: acknowledge or resolve, as an event in the log."""
    alert_id = request.path_params["alert_id"]
    action = request.path_params["action"]
    if action not in ("ack", "resolve"):
        log.info("alert action refused: unknown action %r on %r", action[:40], alert_id[:64])
        raise HTTPException(404, "No such action.")
    event_log = server_state(request).event_log
    if event_log is None:
        raise HTTPException(503, "The event store is not available on this server yet.")
    reader = web_state(request).events.new_reader()
    form = await request.form()
    note = str(form.get("note", ""))[:MAX_NOTE]
    branches = await allowed_branches(request)
    alerts = await anyio.to_thread.run_sync(load_alerts, reader, time.time(), branches)
    view = next((a for a in alerts if a.alert_id == alert_id), None)
    if view is None:
        log.info("alert action refused: no alert %r visible to this user", alert_id[:64])
        raise HTTPException(404, "No such alert (or not in a branch you may see).")
    if view.state == "resolved":
        log.info("alert action refused: %s is already resolved", alert_id)
        raise HTTPException(409, "This alert is already resolved.")
    principal = principal_of(request)
    by = principal.username if principal is not None else "anonymous"
    kind = AlertResolved if action == "resolve" else AlertAcknowledged
    now = time.time()
    event = kind(
        id=new_event_id(now), ts=now, branch=view.branch, alert_id=alert_id, by=by, note=note
    )
    await anyio.to_thread.run_sync(event_log.append, [event])
    await audit(request, f"alert.{type(event).__name__}", {"note": note}, target=alert_id)
    log.info("alert %s %s by %s", alert_id, action, by)
    view.state = "resolved" if action == "resolve" else "acknowledged"
    view.by, view.note, view.updated = by, note, now
    return web_state(request).renderer.page(
        request,
        "_alert_item.html",
        alert=view,
        can_act=_can_act(request),
        max_note=MAX_NOTE,
        keep_typed_note=False,  # this row's note was just sent
    )


def _can_act(request: Request) -> bool:
    """Analysts and admins act on alerts; viewers only look."""
    principal = principal_of(request)
    return principal is None or principal.has_role("analyst")
