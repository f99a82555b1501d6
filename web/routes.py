"""The dashboard's routes, each with its access level, and what ``create_app`` needs from web/."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from netmon.app.access import SecuredRoute
from netmon.web import alerts, analysis_pages, analytics, pages, views
from netmon.web.assets import AssetCatalog, serve_asset
from netmon.web.errors import exception_handlers
from netmon.web.templating import Renderer


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
    ]


def web_exception_handlers() -> Mapping[Any, Callable[..., Any]]:
    """Friendly error pages for the whole app."""
    return exception_handlers()


def install_web(app: Starlette) -> None:
    """Hash the static files once, at startup, and make the renderer."""
    app.state.assets = AssetCatalog()
    app.state.renderer = Renderer(app.state.assets)
