"""The caller of a request (``request.state.principal``) and the branch-scoping helpers.

Every handler that returns branch data calls ``allowed_branches`` (filter what is shown) or
``require_branch`` (refuse a request about one branch), so scoping has one implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from netmon.app.access import ROLE_RANK
from netmon.app.state import opened, server_state
from netmon.storage.users import Role, User

ANONYMOUS = "anonymous"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated user, with how they authenticated."""

    user_id: int
    username: str
    role: Role
    branches: tuple[str, ...]
    via: Literal["token", "session"]
    credential_id: str  # the token's jti or the session's token hash
    expires_at: float
    csrf_token: str = ""  # sessions only

    @classmethod
    def of(cls, user: User, **how: Any) -> Principal:
        """The principal for a stored user."""
        return cls(
            user_id=user.id, username=user.username, role=user.role, branches=user.branches, **how
        )

    @property
    def is_admin(self) -> bool:
        """Admins see every branch and manage users."""
        return self.role == "admin"

    def has_role(self, minimum: str) -> bool:
        """Whether the role is at least ``minimum`` ("viewer" < "analyst" < "admin")."""
        return ROLE_RANK[self.role] >= ROLE_RANK[minimum]

    def allowed_branches(self, requested: Iterable[str] | None = None) -> frozenset[str] | None:
        """The branches to show: ``requested`` (all when None) cut down to the user's own.

        Returns None only for an admin who requested no filter, meaning "every branch".
        """
        wanted = None if requested is None else frozenset(requested)
        if self.is_admin:
            return wanted
        own = frozenset(self.branches)
        return own if wanted is None else own & wanted

    def can_see(self, branch: str) -> bool:
        """Whether data of ``branch`` may be shown to this principal."""
        return self.is_admin or branch in self.branches

    def require_branch(self, branch: str) -> None:
        """Raise 403 unless the principal may see ``branch``."""
        if not self.can_see(branch):
            raise HTTPException(403, f"no access to branch {branch!r}")


def principal_of(connection: HTTPConnection) -> Principal | None:
    """The principal of a request or WebSocket (None when anonymous, and in apps built without
    the access middleware, which sets it in the request's state)."""
    principal: Principal | None = connection.scope.get("state", {}).get("principal")
    return principal


def client_address(connection: HTTPConnection) -> str:
    """The client IP (uvicorn already applied X-Forwarded-For from trusted proxies)."""
    return connection.client.host if connection.client else ""


async def audit_request(
    connection: HTTPConnection,
    action: str,
    *,
    target: str = "",
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
    actor: str | None = None,
) -> None:
    """Record an action in the audit trail, with who (the principal) and where (client IP).

    For other modules: ``await audit_request(request, "export.download", target=name)``.
    """
    principal = principal_of(connection)
    who = actor if actor is not None else (principal.username if principal else ANONYMOUS)
    auth = opened(server_state(connection).auth, "the identity store")
    await auth.audit.record(
        action,
        actor=who,
        target=target,
        source=client_address(connection),
        outcome=outcome,
        detail=detail,
    )
