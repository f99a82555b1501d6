"""``create_app(settings)``: the Starlette application, built from routes, middleware and a lifespan.

Shared resources (the event log, SQLite, the live hub) are opened in the lifespan and reach the
handlers as ``request.app.state``; there are no module globals.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.access import SecuredRoute
from app.api_summary import routes as summary_routes
from app.live_routes import live_service
from app.live_routes import routes as live_routes
from app.settings import Settings
from web.routes import install_web, web_exception_handlers, web_routes


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok", "replica": request.app.state.settings.server.replica})


def create_app(settings: Settings) -> Starlette:
    """Build the application for one replica."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        # Follow the shared log into the projections and the live hub (app/live_routes.py).
        async with live_service(settings, app.state):
            yield

    routes = [SecuredRoute("/healthz", healthz, access="public")]
    routes += live_routes() + summary_routes()  # /ws/live(.json), /api/v1/summary...
    routes += web_routes()  # the dashboard: pages, fragments, exports, /static
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers=web_exception_handlers()
    )
    app.state.settings = settings
    install_web(app)
    return app
