"""``create_app(settings)``: the server's composition root, the Starlette app built from routes,
middleware and a lifespan.

It sits in web/ because it wires every layer together: app's services (their JSON and WebSocket
routes and lifespan resources), web's pages, the login page and the archive downloads. Shared
resources live in two typed objects, no module globals: app's ``ServerState`` (app/state.py: the
settings, and what the lifespan opens: SQLite, the event log and ingestor, the live service) at
``app.state.server``, and web's ``WebState`` (web/state.py: static files, the renderer, the event
search) at ``app.state.web``.
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
from netmon.app.ingest.wiring import ingest_routes, open_ingest
from netmon.app.live_routes import routes as live_routes
from netmon.app.live_service import open_live
from netmon.app.metrics import build_registry, metrics_routes
from netmon.app.openapi import openapi_routes
from netmon.app.settings import Settings
from netmon.app.state import ServerState
from netmon.web.api_docs import api_docs_routes
from netmon.web.archives import archive_routes
from netmon.web.login import login_routes
from netmon.web.routes import web_exception_handlers, web_routes
from netmon.web.state import build_web_state


def create_app(settings: Settings) -> Starlette:
    """Build the application for one replica."""
    server = ServerState(settings=settings)
    web = build_web_state(settings.data_dir)  # hashes the static files once

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # SQLite, migrations, the JWT key and the first admin (see app/auth/context.py).
            auth = await stack.enter_async_context(open_auth(settings))
            # The event log and the agent ingest (registry, dedup; see app/ingest/).
            ingestor = await stack.enter_async_context(open_ingest(settings))
            # Follow the shared log into the projections and the live hub (app/live_service.py),
            # whose HTML fragments come from the pages' renderer.
            live = await stack.enter_async_context(
                open_live(settings, ingestor.event_log, web.renderer)
            )
            # All at once, before the first request is served.
            server.auth, server.event_log = auth, ingestor.event_log
            server.ingestor, server.live = ingestor, live
            yield

    registry = build_registry(server)  # read at scrape time (app/metrics.py)
    routes: list[BaseRoute] = [*health_routes(), *metrics_routes(registry)]
    routes += openapi_routes()  # the document; web's /docs page shows it
    routes += api_docs_routes()
    routes += auth_routes()  # the token endpoint, the JSON auth and admin API
    routes += login_routes()  # the login and logout pages
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
    app.state.server = server
    app.state.web = web
    return app
