"""JSON endpoints over this replica's projections (never the log): summary, top lists, agents.

Every replica answers the same once its projections are caught up (``events`` in each answer
says how many events the projections hold). Branches are cut down to the caller's own; a bad
parameter is a 400 with a message naming it, and a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from netmon.app.access import SecuredRoute
from netmon.app.auth.principals import principal_of
from netmon.app.live_service import LiveService
from netmon.app.projections import agents, summary, top
from netmon.app.state import opened, server_state

log = logging.getLogger(__name__)

MAX_TOP_K = 100


class BadParameter(Exception):
    """A query parameter out of range or of the wrong type."""


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadParameter(f"{name} must be between {low} and {high}, got {value}")
    return value


def _branches(request: Request, known: Iterable[str]) -> list[str]:
    """The requested branches (all known when none) cut down to the principal's."""
    asked = request.query_params.getlist("branch") or None
    principal = principal_of(request)
    allowed = asked if principal is None else principal.allowed_branches(asked)
    names = set(known) if allowed is None else set(allowed)
    return sorted(names)


def _live(request: Request) -> LiveService:
    return opened(server_state(request).live, "the live service")


def _answer(
    request: Request, service: LiveService, body: dict[str, Any], events: int | None = None
) -> JSONResponse:
    """``events``: how many events of the log the answer reflects."""
    counted = service.runner.state.events if events is None else events
    meta = {"replica": server_state(request).settings.server.replica, "events": counted}
    return JSONResponse({**meta, **body})


def _bad(request: Request, error: BadParameter) -> JSONResponse:
    log.warning("bad request %s?%s: %s", request.url.path, request.url.query, error)
    return JSONResponse({"error": "bad_parameter", "detail": str(error)}, status_code=400)


async def summary_endpoint(request: Request) -> JSONResponse:
    """GET /api/v1/summary?branch=B: 24 h per minute and 7 days per hour."""
    service = _live(request)
    state = service.runner.state
    branches = _branches(request, state.summary.branches)
    body = summary.view(state.summary, branches, service.clock())
    return _answer(request, service, {"branches": branches, **body})


async def top_endpoint(request: Request) -> JSONResponse:
    """GET /api/v1/summary/top?hours=24&k=10&branch=B: top IPs, domains, ports, detections."""
    service = _live(request)
    try:
        hours = _int_param(request, "hours", 24, 1, 24 * 7)
        k = _int_param(request, "k", 10, 1, MAX_TOP_K)
    except BadParameter as error:
        return _bad(request, error)
    state = service.runner.state
    branches = _branches(request, state.top.branches)
    body = top.view(state.top, branches, service.clock(), hours=hours, k=k)
    return _answer(request, service, {"branches": branches, **body}, service.top_events)


async def agents_endpoint(request: Request) -> JSONResponse:
    """GET /api/v1/summary/agents?branch=B: last seen, rate, backlog, lag, connected."""
    service = _live(request)
    state = service.runner.state
    known = {agent.branch for agent in state.agents.agents.values()}
    branches = set(_branches(request, known))
    rows = agents.view(state.agents, branches, service.clock(), service.agent_timeout_s)
    return _answer(request, service, {"agents": rows})


def routes() -> list[SecuredRoute]:
    """The projection endpoints (viewer and up)."""
    return [
        SecuredRoute("/api/v1/summary", summary_endpoint, access="viewer"),
        SecuredRoute("/api/v1/summary/top", top_endpoint, access="viewer"),
        SecuredRoute("/api/v1/summary/agents", agents_endpoint, access="viewer"),
    ]
