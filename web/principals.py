"""The dashboard's one door to identity: branch scoping and audit records.

The identity part puts the logged-in principal in ``request.state.principal``; every page and
export asks here which branches it may show, so scoping is decided in one place.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import HTTPConnection

from netmon.app.auth.principals import principal_of
from netmon.app.state import server_state

log = logging.getLogger(__name__)


async def allowed_branches(
    request: HTTPConnection, requested: list[str] | None = None
) -> list[str] | None:
    """The branches this principal may see among ``requested`` (None = every branch)."""
    principal = principal_of(request)
    if principal is None:
        return requested  # no identity middleware in this app (unit-test apps)
    allowed = principal.allowed_branches(requested)
    return None if allowed is None else list(allowed)


async def audit(
    request: HTTPConnection, action: str, details: dict[str, Any], target: str = ""
) -> None:
    """Record an audited action (exports, downloads) when the audit trail exists."""
    auth = server_state(request).auth
    principal = principal_of(request)
    who = principal.username if principal is not None else "anonymous"
    if auth is None:  # an app built without the identity store (web's test app)
        log.info("audit (no trail yet): %s by %s %s", action, who, details)
        return
    source = request.client.host if request.client else ""
    await auth.audit.record(action, actor=who, target=target, source=source, detail=details)
