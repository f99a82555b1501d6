"""The dashboard's routes, each with its access level, and its error handlers: what
``create_app`` needs from web/ besides its ``WebState`` (web/state.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute

from netmon.app.access import SecuredRoute
from netmon.app.alerts_api import alert_routes
from netmon.web import alerts, analysis_pages, analytics, notifications, pages, views
from netmon.web.assets import IMMUTABLE
from netmon.web.errors import exception_handlers
from netmon.web.state import web_state


async def serve_asset(request: Request) -> Response:
    """GET /static/{name}: a catalogued file (web/assets.py), or 404 for anything else."""
    asset = web_state(request).assets.assets.get(request.path_params["name"])
    if asset is None:
        return PlainTextResponse("not found", status_code=404)
    headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    return FileResponse(asset.path, media_type=asset.media_type, headers=headers)


def web_routes() -> list[BaseRoute]:
    """Pages, fragments, exports and static files."""
    return [
        SecuredRoute("/static/{name:path}", serve_asset, access="public", methods=["GET"]),
        SecuredRoute("/", pages.live_page, access="viewer", methods=["GET"]),
        SecuredRoute("/live/cards", analytics.live_cards, access="viewer", methods=["GET"]),
        SecuredRoute("/alerts", alerts.alerts_page, access="viewer", methods=["GET"]),
        SecuredRoute(
            "/alerts/{alert_id:str}/{action:str}",
            alerts.alert_action,
            access="analyst",
            methods=["POST"],
        ),
        *alert_routes(),  # /api/v1/alerts...: the alert API (app/alerts_api.py)
        SecuredRoute("/events", views.events_page, access="viewer", methods=["GET"]),
        SecuredRoute("/events.{fmt:str}", views.events_export, access="analyst", methods=["GET"]),
        SecuredRoute(
            "/events/{event_id:str}", views.event_detail, access="viewer", methods=["GET"]
        ),
        SecuredRoute("/analytics", analytics.analytics_page, access="viewer", methods=["GET"]),
        SecuredRoute("/analytics/top", analytics.analytics_top, access="viewer", methods=["GET"]),
        SecuredRoute("/windows", analysis_pages.windows_page, access="viewer", methods=["GET"]),
        SecuredRoute("/model", analysis_pages.model_page, access="viewer", methods=["GET"]),
        SecuredRoute("/archives", pages.archives_page, access="viewer", methods=["GET"]),
        SecuredRoute("/admin", pages.admin_page, access="admin", methods=["GET"]),
        SecuredRoute("/api/v1/notifications", notifications.notifications_api, access="analyst"),
    ]


def web_exception_handlers() -> Mapping[Any, Callable[..., Any]]:
    """Friendly error pages for the whole app."""
    return exception_handlers()
