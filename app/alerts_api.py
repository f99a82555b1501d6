"""The alert API: list, read and act on alerts, from this replica's alert projection.

- ``GET /api/v1/alerts``: filters (state, severity, rule, entity, branch, since/until on
  last seen), sort (severity, last_seen, count), cursor paging, counts (viewer and up);
- ``GET /api/v1/alerts/{alert_id}``: one alert;
- ``POST /api/v1/alerts/{alert_id}/acknowledge|resolve|escalate|assign|note`` and
  ``POST /api/v1/alerts/suppress`` (analyst and up): each appends its event to the log (the
  refusals are app/alert_actions.py's).

Reads never touch the log: every answer comes from the store's indexes, whatever the log's size.
Branches are cut down to the caller's; an alert of another branch is a 404, as an unknown one.
Bad query parameters are 400 ``bad_parameter``, an unreadable body 400 ``bad_request``, a body
that decodes but does not fit 422 ``invalid``; each with one log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from netmon.app.access import SecuredRoute
from netmon.app.alert_actions import (
    ACTIONS,
    BODY_OF,
    Action,
    ActionRefused,
    SuppressBody,
    act,
    alert_store,
    suppress,
    visible_alert,
)
from netmon.app.auth.forms import BadInput, read_body
from netmon.app.auth.principals import principal_of
from netmon.app.projections.alert_model import AlertRecord, ShownState, shown_state
from netmon.app.projections.alert_queries import AlertQuery, QueryError, StateFilter, parse_query
from netmon.app.projections.alert_store import AlertCounts, AlertStore
from netmon.app.state import server_state

log = logging.getLogger(__name__)
Body = TypeVar("Body", bound=msgspec.Struct)


# An alert as the API shows it: the record's fields but the fold's own ``facts``, and what a
# reader wants computed: the state to show now, the count, the count since acknowledged. Made
# from AlertRecord's fields, so a field added to the model is shown without being listed twice.
AlertOut: type[msgspec.Struct] = msgspec.defstruct(
    "AlertOut",
    [
        *(
            (field.name, field.type)
            for field in msgspec.structs.fields(AlertRecord)
            if field.name != "facts"
        ),
        ("shown_state", ShownState),
        ("count", int),
        ("new_since_ack", int),
    ],
    kw_only=True,
    frozen=True,
    module=__name__,
)
AlertOut.__doc__ = "An alert: its record, the state to show now, its counts."


class AlertList(msgspec.Struct, frozen=True):
    """A page of alerts, the cursor of the next page (null: the last), and counts."""

    replica: str
    ready: bool  # False while the projection still catches up with the log after a start
    alerts: list[AlertOut]  # type: ignore[valid-type]
    next_cursor: str | None
    counts: AlertCounts


class Suppressed(msgspec.Struct, frozen=True):
    """The suppression appended."""

    event_id: str
    branch: str
    rule: str
    entity: str
    until: float


def present(record: AlertRecord, now: float) -> Any:
    """The record as readers get it (an ``AlertOut``) at ``now``."""
    fields = msgspec.structs.asdict(record)
    del fields["facts"]
    return AlertOut(
        **fields,
        shown_state=shown_state(record, now),
        count=record.count,
        new_since_ack=record.new_since_ack,
    )


def query_of(request: Request, default_state: StateFilter = "any") -> AlertQuery:
    """The request's filters, with the branches cut down to the caller's (QueryError)."""
    asked = request.query_params.getlist("branch") or None
    principal = principal_of(request)
    allowed = asked if principal is None else principal.allowed_branches(asked)
    branches = None if allowed is None else tuple(sorted(allowed))
    return parse_query(request.query_params, branches, default_state=default_state)


async def list_alerts(
    store: AlertStore, query: AlertQuery, now: float
) -> tuple[list[Any], str | None, AlertCounts]:
    """A page of ``query`` and the counts of its branches (off the event loop)."""

    def read() -> tuple[list[Any], str | None, AlertCounts]:
        page = store.page(query, now)
        counts = store.counts(query.branches, now)
        return [present(record, now) for record in page.records], page.next_cursor, counts

    return await anyio.to_thread.run_sync(read)


async def alerts_endpoint(request: Request) -> Response:
    """GET /api/v1/alerts"""
    try:
        store = alert_store(request)
        query = query_of(request)
    except QueryError as error:
        return _bad_parameter(request, error)
    except ActionRefused as refused:
        return refusal(request, refused)
    alerts, next_cursor, counts = await list_alerts(store, query, time.time())
    state = server_state(request)
    ready = state.live is not None and state.live.alerts_ready
    answer = AlertList(state.settings.server.replica, ready, alerts, next_cursor, counts)
    return Response(msgspec.json.encode(answer), media_type="application/json")


async def alert_endpoint(request: Request) -> Response:
    """GET /api/v1/alerts/{alert_id}"""
    try:
        record = await visible_alert(request, request.path_params["alert_id"])
    except ActionRefused as refused:
        return refusal(request, refused)
    return _record_answer(record)


def action_endpoint(action: Action) -> Callable[[Request], Awaitable[Response]]:
    """The handler of POST /api/v1/alerts/{alert_id}/``action``."""

    async def endpoint(request: Request) -> Response:
        try:
            body = await _body(request, BODY_OF[action])
            record, _ = await act(request, request.path_params["alert_id"], action, body)
        except ActionRefused as refused:
            return refusal(request, refused)
        return _record_answer(record)

    endpoint.__name__ = endpoint.__qualname__ = f"alert_{action}"
    endpoint.__doc__ = f"POST /api/v1/alerts/{{alert_id}}/{action}"
    return endpoint


async def suppress_endpoint(request: Request) -> Response:
    """POST /api/v1/alerts/suppress"""
    try:
        body = await _body(request, SuppressBody)
        event = await suppress(request, body)
    except ActionRefused as refused:
        return refusal(request, refused)
    answer = Suppressed(event.id, event.branch, event.rule, event.entity, event.until)
    return Response(msgspec.json.encode(answer), 201, media_type="application/json")


async def _body(request: Request, kind: type[Body]) -> Body:
    """The JSON body as ``kind`` (an empty body is ``{}``): 400 unreadable, 422 unfit."""
    try:
        raw = await read_body(request)
    except BadInput as error:
        raise ActionRefused(error.status, "bad_request", str(error)) from None
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as error:
        raise ActionRefused(422, "invalid", f"invalid request body: {error}") from None
    except msgspec.DecodeError as error:
        raise ActionRefused(400, "bad_request", f"body is not valid JSON: {error}") from None


def _record_answer(record: AlertRecord) -> Response:
    return Response(
        msgspec.json.encode(present(record, time.time())), media_type="application/json"
    )


def refusal(request: Request, refused: ActionRefused) -> JSONResponse:
    """The JSON answer of a refused request, with one log line."""
    log.info(
        "%s %s refused (%d %s): %s",
        request.method,
        request.url.path,
        refused.status,
        refused.code,
        refused.detail,
    )
    return JSONResponse({"error": refused.code, "detail": refused.detail}, refused.status)


def _bad_parameter(request: Request, error: QueryError) -> JSONResponse:
    log.info("bad request %s?%s: %s", request.url.path, request.url.query[:200], error)
    return JSONResponse({"error": "bad_parameter", "detail": str(error)}, 400)


def alert_routes() -> list[SecuredRoute]:
    """The alert API's routes."""
    routes = [
        SecuredRoute("/api/v1/alerts", alerts_endpoint, access="viewer", methods=["GET"]),
        SecuredRoute(
            "/api/v1/alerts/suppress", suppress_endpoint, access="analyst", methods=["POST"]
        ),
        SecuredRoute(
            "/api/v1/alerts/{alert_id:str}", alert_endpoint, access="viewer", methods=["GET"]
        ),
    ]
    for action in ACTIONS:
        path = f"/api/v1/alerts/{{alert_id:str}}/{action}"
        routes.append(
            SecuredRoute(path, action_endpoint(action), access="analyst", methods=["POST"])
        )
    return routes
