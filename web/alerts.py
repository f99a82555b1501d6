"""The Alerts page, read from this replica's alert projection, and its Acknowledge/Resolve buttons.

The page lists alerts of any age from the store (app/projections/alert_store.py), never from the
log: filters by state, severity, rule and entity in the query string (the same parameters, and
the same errors, as ``GET /api/v1/alerts``), newest-severity first, one page at a time with a
"next page" link that carries the cursor. A bad filter is shown above the list with status 400.

The buttons append ``AlertAcknowledged`` / ``AlertResolved`` through app/alert_actions.py, as the
API does. Every replica's live feed then pushes the event, and the page refreshes its list after
a push, so a second tab sees the change without reloading (its store has it by then: it is
folded in the same step as the push, see app/live_service.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from netmon.app.alert_actions import MAX_NOTE, ActionRefused, NoteBody, act, alert_store
from netmon.app.alerts_api import list_alerts, present, query_of
from netmon.app.auth.principals import principal_of
from netmon.app.projections.alert_queries import (
    STATE_FILTERS,
    AlertQuery,
    QueryError,
    StateFilter,
)
from netmon.app.state import server_state
from netmon.storage.contract.events import SEVERITY_RANK
from netmon.web.notifications import notification_banner
from netmon.web.state import web_state

log = logging.getLogger(__name__)

# The page opens on the work queue; ?state=any shows every alert.
PAGE_STATE: StateFilter = "unresolved"
FORM_ACTIONS = {"ack": "acknowledge", "resolve": "resolve"}  # the buttons' paths


async def alerts_page(request: Request) -> Response:
    """GET /alerts: one page of alerts for the filters in the query string."""
    web = web_state(request)
    context: dict[str, Any] = {
        "active": "alerts",
        "can_act": _can_act(request),
        "max_note": MAX_NOTE,
        "keep_typed_note": True,
        "states": STATE_FILTERS,
        "severities": [name for name in SEVERITY_RANK if name != "none"],
        "self_url": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        # Failing notifications, for analysts (web/notifications.py; None: nothing to say).
        "notifications": await notification_banner(request),
    }
    try:
        store = alert_store(request)
    except ActionRefused:
        return web.renderer.page(request, "alerts.html", available=False, **context)
    try:
        query = query_of(request, default_state=PAGE_STATE)
    except QueryError as error:
        log.info("alerts page: bad filter %r: %s", request.url.query[:200], error)
        filters = {
            name: request.query_params.get(name, "")
            for name in ("state", "severity", "rule", "entity")
        }
        filters["state"] = filters["state"] or PAGE_STATE  # as the list was before the error
        return web.renderer.page(
            request,
            "alerts.html",
            status=400,
            available=True,
            error=str(error),
            filters=filters,
            alerts=[],
            rules=[],
            counts=None,
            next_url="",
            live=False,
            **context,
        )
    now = time.time()
    alerts, next_cursor, counts = await list_alerts(store, query, now)
    rules = await anyio.to_thread.run_sync(store.rules, query.branches)
    return web.renderer.page(
        request,
        "alerts.html",
        available=True,
        error="",
        filters=_filters(query),
        alerts=alerts,
        rules=rules,
        counts=counts,
        next_url=_next_url(request, next_cursor),
        live=server_state(request).live is not None,
        now=now,
        **context,
    )


async def alert_action(request: Request) -> Response:
    """POST /alerts/{alert_id}/{ack|resolve}: the action as an event in the log; the new row."""
    alert_id = request.path_params["alert_id"]
    action = FORM_ACTIONS.get(request.path_params["action"])
    if action is None:
        log.info(
            "alert action refused: unknown action %r on %r",
            request.path_params["action"][:40],
            alert_id[:64],
        )
        raise HTTPException(404, "No such action.")
    form = await request.form()
    note = str(form.get("note", ""))[:MAX_NOTE]
    try:
        record, _ = await act(request, alert_id, action, NoteBody(note=note))  # type: ignore[arg-type]
    except ActionRefused as refused:
        log.info("alert action refused (%s): %s on %r", refused.code, action, alert_id[:64])
        raise HTTPException(refused.status, refused.detail) from None
    return web_state(request).renderer.page(
        request,
        "_alert_item.html",
        alert=present(record, time.time()),
        can_act=_can_act(request),
        max_note=MAX_NOTE,
        keep_typed_note=False,  # this row's note was just sent
    )


def _filters(query: AlertQuery) -> dict[str, str]:
    """The filter form's values."""
    return {
        "state": query.state,
        "severity": "" if query.min_severity == "none" else query.min_severity,
        "rule": query.rule,
        "entity": query.entity,
    }


def _next_url(request: Request, cursor: str | None) -> str:
    """This page's URL with the next page's cursor (empty on the last page)."""
    if cursor is None:
        return ""
    kept = [(name, value) for name, value in request.query_params.multi_items() if name != "cursor"]
    return f"{request.url.path}?{urlencode([*kept, ('cursor', cursor)])}"


def _can_act(request: Request) -> bool:
    """Analysts and admins act on alerts; viewers only look."""
    principal = principal_of(request)
    return principal is None or principal.has_role("analyst")
