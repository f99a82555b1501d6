"""``create_app(settings)``: the Starlette app, built from routes, middleware and a lifespan.

Shared resources (the event log, SQLite, the live hub) are opened in the lifespan and reach the
handlers as ``request.app.state``; there are no module globals.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from netmon.app.api_summary import routes as summary_routes
from netmon.app.auth.context import open_auth
from netmon.app.auth.middleware import AccessMiddleware
from netmon.app.auth.routes import auth_routes
from netmon.app.health import health_routes
from netmon.app.ingest import ingest_routes, open_ingest
from netmon.app.live_routes import live_service
from netmon.app.live_routes import routes as live_routes
from netmon.app.metrics import build_registry, metrics_routes
from netmon.app.openapi import openapi_routes
from netmon.app.settings import Settings
from netmon.archive.downloads import archive_routes
from netmon.web.routes import install_web, web_exception_handlers, web_routes


def create_app(settings: Settings) -> Starlette:
    """Build the application for one replica."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        async with contextlib.AsyncExitStack() as stack:
            # SQLite, migrations, the JWT key and the first admin (see app/auth/context.py).
            auth = await stack.enter_async_context(open_auth(settings))
            app.state.auth, app.state.db, app.state.audit = auth, auth.db, auth.audit
            # The event log and the agent ingest (registry, dedup; see app/ingest.py).
            await stack.enter_async_context(open_ingest(app, settings))
            # Follow the shared log into the projections and the live hub (app/live_routes.py).
            await stack.enter_async_context(live_service(settings, app.state))
            yield

    routes: list[BaseRoute] = [*health_routes(), *metrics_routes(), *openapi_routes()]
    routes += auth_routes()
    routes += ingest_routes()  # /ws/agent and the offline-archive upload
    routes += live_routes()  # /ws/live(.json)
    routes += summary_routes()  # /api/v1/summary...
    routes += archive_routes()  # /api/v1/archives: list, download
    routes += web_routes()  # the dashboard: pages, fragments, exports, /static
    middleware = [Middleware(AccessMiddleware)]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=web_exception_handlers(),
    )
    app.state.settings = settings
    app.state.metrics = build_registry(app.state)  # read at scrape time (app/metrics.py)
    install_web(app)
    return app
