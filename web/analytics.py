"""The Analytics page and the agents table: read from this replica's projections, never the log.

Totals and top lists are rendered on the server (cheap: the projections are in memory); the
time series are drawn in the browser with uPlot from ``/api/v1/summary`` (static/charts.js).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from netmon.app.live_service import LiveService
from netmon.app.projections import summary, top
from netmon.app.state import server_state
from netmon.web.principals import allowed_branches
from netmon.web.state import TopLists, web_state

TOP_K = 10
TOP_CACHE_S = 2.0
TOP_LISTS = (
    ("src_ip", "Top sources"),
    ("dst_ip", "Top destinations"),
    ("domain", "Top domains"),
    ("dst_port", "Top destination ports"),
    ("detection", "Top detections"),
)


def live_service(request: Request) -> LiveService | None:
    """The live service (projections), or None in an app built without one (web's test app)."""
    return server_state(request).live


async def visible_branches(request: Request, known: list[str]) -> list[str]:
    """The known branches this principal may see (all of them for an admin)."""
    allowed = await allowed_branches(request)
    return sorted(known if allowed is None else set(known) & set(allowed))


async def analytics_view(request: Request) -> dict[str, Any] | None:
    """Totals for the page (the top lists come as a fragment), or None without projections."""
    service = live_service(request)
    if service is None:
        return None
    state = service.runner.state
    now = service.clock()
    known = sorted(set(state.summary.branches) | set(state.top.branches))
    branches = await visible_branches(request, known)
    visible = branches
    asked = request.query_params.get("branch", "")
    if asked:
        branches = [b for b in branches if b == asked]
    totals = summary.view(state.summary, branches, now)
    return {
        "branches": branches,
        "visible": visible,
        "branch": asked,
        "last_24h": totals["last_24h"],
        "last_7d": totals["last_7d"],
        "events": state.events,
    }


async def analytics_page(request: Request) -> Response:
    """GET /analytics: totals, top lists and charts (``?branch=`` narrows)."""
    view = await analytics_view(request)
    return web_state(request).renderer.page(
        request, "analytics.html", active="analytics", available=view is not None, view=view
    )


async def analytics_top(request: Request) -> Response:
    """GET /analytics/top: the top lists, loaded by the page after it is shown.

    Merging a day of hourly top-K buckets costs up to a few hundred ms on a busy store, so it is
    kept out of the page's own response and shared between viewers for TOP_CACHE_S seconds.
    """
    view = await analytics_view(request)
    web = web_state(request)
    tops: TopLists = []
    service = live_service(request)
    if view is not None and service is not None:
        branches = tuple(view["branches"])
        tops = await anyio.to_thread.run_sync(_cached_tops, web.top_lists, service, branches)
    return web.renderer.page(request, "_analytics_top.html", tops=tops)


def _cached_tops(
    cache: dict[tuple[str, ...], tuple[float, TopLists]],
    service: LiveService,
    branches: tuple[str, ...],
) -> TopLists:
    now = time.monotonic()
    hit = cache.get(branches)
    if hit is not None and now - hit[0] < TOP_CACHE_S:
        return hit[1]
    lists = top.view(service.runner.state.top, branches, service.clock(), hours=24, k=TOP_K)
    result = [(key, title, lists[key]["by_bytes"]) for key, title in TOP_LISTS]
    if len(cache) > 64:
        cache.clear()  # many branch combinations: start over rather than grow
    cache[branches] = (now, result)
    return result


async def agent_rows(request: Request) -> list[dict[str, Any]]:
    """The agents table of the Live page (live pushes replace rows as agents come and go)."""
    service = live_service(request)
    if service is None:
        return []
    allowed = await allowed_branches(request)
    return service.snapshot_agents(None if allowed is None else frozenset(allowed))


async def live_cards(request: Request) -> Response:
    """GET /live/cards: the Live page's headline numbers (24 h), polled by the page."""
    view = await analytics_view(request)
    agents = await agent_rows(request)
    up = sum(1 for agent in agents if agent["connected"])
    return web_state(request).renderer.page(
        request, "_live_cards.html", view=view, agents_up=up, agents_total=len(agents)
    )
