"""The pages other than Events: Live, Alerts, Analytics, Windows, Model, Archives, Admin.

Each page reads what its back-end offers and shows an empty state ("not available yet") when
that back-end is not part of this server, so the dashboard never breaks for a missing piece.
Data arrives by htmx (WebSocket fragments for Live) or JSON the page's script charts (uPlot).
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from netmon.app.auth.principals import principal_of
from netmon.app.state import server_state
from netmon.web.analytics import agent_rows
from netmon.web.archives import archive_listing
from netmon.web.principals import allowed_branches
from netmon.web.state import web_state

DEFAULT_LIVE_ROWS = 100
MAX_LIVE_ROWS = 1000


def has_route(request: Request, path: str) -> bool:
    """Whether the app serves ``path`` (a back-end that is not built has no route)."""
    return any(_paths(request.app.router.routes, path))


def _paths(routes: list[BaseRoute], path: str) -> Any:
    for route in routes:
        if getattr(route, "path", None) == path:
            yield True
        children = getattr(route, "routes", None)
        if children:
            yield from _paths(children, path)


def live_rows(request: Request) -> int:
    """How many rows the live ticker keeps (``?rows=N``, bounded so a URL can't bloat it)."""
    text = request.query_params.get("rows", "")
    rows = int(text) if text.isdigit() else DEFAULT_LIVE_ROWS
    return max(1, min(rows, MAX_LIVE_ROWS))


async def live_page(request: Request) -> Response:
    """GET /: the live ticker (``?kiosk=1`` for a wall screen: no chrome, large type)."""
    return web_state(request).renderer.page(
        request,
        "live.html",
        active="live",
        agents=await agent_rows(request),
        live_available=has_route(request, "/ws/live"),
        max_rows=live_rows(request),
        branch=request.query_params.get("branch", ""),
    )


async def archives_page(request: Request) -> Response:
    """GET /archives: sealed ZIPs per date and branch, with downloads for analysts."""
    allowed = await allowed_branches(request)
    branches = None if allowed is None else frozenset(allowed)
    data_dir = server_state(request).settings.data_dir
    entries = await anyio.to_thread.run_sync(archive_listing, data_dir, branches)
    entries.reverse()  # newest first
    principal = principal_of(request)
    return web_state(request).renderer.page(
        request,
        "archives.html",
        active="archives",
        available=True,
        archives=entries,
        can_download=principal is None or principal.has_role("analyst"),
    )


async def admin_view(request: Request) -> dict[str, Any]:
    """Users (identity's store) and enrolled agents (the ingest registry), when present."""
    view: dict[str, Any] = {"users": None, "agents": None}
    state = server_state(request)
    if state.auth is not None:
        view["users"] = await state.auth.users.all()
    ingestor = state.ingestor
    if ingestor is not None:
        view["agents"] = await anyio.to_thread.run_sync(ingestor.registry.agents)
    return view


async def admin_page(request: Request) -> Response:
    """GET /admin: users and agents (admins only; changes go through the CLI and JSON API)."""
    view = await admin_view(request)
    return web_state(request).renderer.page(
        request,
        "admin.html",
        active="admin",
        available=view["users"] is not None or view["agents"] is not None,
        **view,
    )
