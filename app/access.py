"""Every route declares who may call it; a route without a declaration cannot be built.

``Access`` levels, from the most open:
- "public": anyone (health checks, the login page and token endpoint, static files);
- "agent": an enrolled agent proving possession of its own key (ingest endpoints);
- "viewer" < "analyst" < "admin": logged-in users with at least that role; non-admins are
  further limited to their branches by the handlers (branch scoping).

The access-matrix test walks the router and fails for any route that is not a ``SecuredRoute``
or ``SecuredWebSocketRoute``, so a new route without a rule cannot slip in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from starlette.routing import Route, WebSocketRoute

Access = Literal["public", "agent", "viewer", "analyst", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "analyst": 2, "admin": 3}


class SecuredRoute(Route):
    """An HTTP route with its access level."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, access: Access, **kw: Any):
        super().__init__(path, endpoint, **kw)
        self.access: Access = access


class SecuredWebSocketRoute(WebSocketRoute):
    """A WebSocket route with its access level."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, access: Access, **kw: Any):
        super().__init__(path, endpoint, **kw)
        self.access: Access = access
