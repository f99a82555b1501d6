"""``/healthz`` (liveness) and ``/readyz`` (readiness) for load balancers and orchestrators.

- ``/healthz``: the process answers; restart it when this fails.
- ``/readyz``: this replica can do its job: the event store's directory is writable by its
  writer and SQLite answers a query. nginx / compose / Kubernetes should send traffic only to
  a ready replica. A failed check answers 503 with which part failed, and logs it.

Both are "public": they reveal nothing but the replica name and which check failed.
"""

from __future__ import annotations

import logging
import os

from starlette.requests import Request
from starlette.responses import JSONResponse

from netmon.app.access import SecuredRoute
from netmon.app.state import ServerState, server_state

log = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok", "replica": server_state(request).settings.server.replica})


def _store_problem(state: ServerState) -> str | None:
    if state.event_log is None:
        return "the event log is not open"
    events = state.settings.data_dir / "events"
    if not os.access(events, os.W_OK | os.X_OK):
        return f"{events} is not writable"
    return None


async def _sqlite_problem(state: ServerState) -> str | None:
    if state.auth is None:
        return "the database is not open"
    try:
        row = await state.auth.db.fetch_one("SELECT 1")
    except Exception as error:  # any driver error means "not ready", reported below
        return f"the database does not answer: {error}"
    return None if row is not None and row[0] == 1 else "the database gave no answer"


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the store and SQLite are usable; 503 names the failed checks."""
    state = server_state(request)
    checks = {"store": _store_problem(state), "sqlite": await _sqlite_problem(state)}
    failed = {name: problem for name, problem in checks.items() if problem is not None}
    replica = state.settings.server.replica
    if failed:
        log.warning("readyz: replica %s not ready: %s", replica, failed)
        return JSONResponse(
            {"status": "unavailable", "replica": replica, "failed": failed}, status_code=503
        )
    return JSONResponse({"status": "ready", "replica": replica, "checks": list(checks)})


def health_routes() -> list[SecuredRoute]:
    """The two probes."""
    return [
        SecuredRoute("/healthz", healthz, access="public", methods=["GET"]),
        SecuredRoute("/readyz", readyz, access="public", methods=["GET"]),
    ]
