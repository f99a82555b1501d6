"""The server's shared resources, typed: one ``ServerState`` per app, at ``app.state.server``.

``create_app`` (web/factory.py) makes it with the settings; its lifespan opens the identity store,
the event log with its ingestor and the live service, and sets them here together before the
first request is served. Everything reads it through ``server_state(connection)``: HTTP and
WebSocket handlers and the access middleware; the metrics collector holds the same object from
``create_app`` on and reads it at scrape time.

It sits in ``app.state`` rather than in Starlette's lifespan state (the mapping a lifespan yields,
copied into each request's scope) because the probes, /metrics and the access middleware answer
before the lifespan has run, and in tests that never start it, where that mapping does not exist;
and the metrics registry is made before the lifespan. The caller of one request (the principal
the access middleware authenticated) is per request: ``principal_of`` in app/auth/principals.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from netmon.app.auth.context import AuthContext
from netmon.app.ingest.ingestor import Ingestor
from netmon.app.live_service import LiveService
from netmon.app.settings import Settings
from netmon.storage.eventlog import EventLog

T = TypeVar("T")


@dataclass(slots=True, kw_only=True)
class ServerState:
    """What the handlers of one server process share."""

    settings: Settings
    # Opened by the lifespan (web/factory.py). None before it has run (a probe or a test talking
    # to an app it did not start: /readyz answers 503 and the access middleware admits only
    # public routes), and in apps built from parts that lack them (web's test app, which has
    # neither identity nor live service; the ingest-only benchmark server).
    auth: AuthContext | None = None  # SQLite: users, sessions, tokens, the audit trail
    event_log: EventLog | None = None  # this replica's writer of the shared log
    ingestor: Ingestor | None = None
    live: LiveService | None = None  # projections and the live hub
    openapi: dict[str, Any] | None = None  # the OpenAPI document, built on its first request


def server_state(connection: HTTPConnection) -> ServerState:
    """The ServerState of the app serving ``connection``."""
    state: ServerState = connection.app.state.server
    return state


def opened(resource: T | None, name: str) -> T:
    """``resource`` for a handler that cannot work without it. The access middleware refuses
    every non-public request until the lifespan has opened everything, so None means a public
    route was called on an app that was never started: an error, as for any missing resource."""
    if resource is None:
        raise RuntimeError(f"{name} is not open: the server's lifespan has not run")
    return resource
