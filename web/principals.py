"""The dashboard's one door to identity: branch scoping and audit records.

The identity part puts the logged-in principal in ``request.state.principal``; every page and
export asks here which branches it may show, so scoping is decided in one place.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import HTTPConnection

log = logging.getLogger(__name__)


async def allowed_branches(
    request: HTTPConnection, requested: list[str] | None = None
) -> list[str] | None:
    """The branches this principal may see among ``requested`` (None = every branch)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return requested  # no identity middleware in this app (unit-test apps)
    method = getattr(principal, "allowed_branches", None)
    if method is None:
        return requested
    result = method(requested)
    if hasattr(result, "__await__"):
        result = await result
    return None if result is None else list(result)


async def audit(
    request: HTTPConnection, action: str, details: dict[str, Any], target: str = ""
) -> None:
    """Record an audited action (exports, downloads) when the audit trail exists."""
    trail = getattr(request.app.state, "audit", None)
    principal = getattr(request.state, "principal", None)
    who = getattr(principal, "username", "") or "anonymous"
    if trail is None or not hasattr(trail, "record"):
        log.info("audit (no trail yet): %s by %s %s", action, who, details)
        return
    source = request.client.host if request.client else ""
    await trail.record(action, actor=who, target=target, source=source, detail=details)
