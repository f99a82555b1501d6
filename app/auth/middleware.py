"""Enforces every route's access level, for HTTP and WebSocket, before the router runs.

For each request the middleware finds the route that will serve it (walking mounts), reads its
``access`` ("public", "agent", "viewer", "analyst", "admin"), authenticates the caller (Bearer
token first, then the session cookie) into ``request.state.principal``, and refuses:
- any matched route without an access rule (fail closed: 403 and an error log line);
- user credentials on "agent" routes (agents prove their own key in the transport handler);
- anonymous callers of user routes (401 with ``WWW-Authenticate: Bearer``; browsers asking for
  a page are sent to /login instead), and roles below the route's level (403);
- cookie-authenticated writes without the session's CSRF token or from a foreign Origin (403);
- WebSocket handshakes whose Origin is neither this server nor an allowed origin (403).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from netmon.app.auth.context import AuthContext
from netmon.app.auth.principals import Principal
from netmon.app.auth.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    origin_allowed,
    same_token,
)
from netmon.app.auth.tokens import TokenError
from netmon.app.state import server_state

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNSECURED = "unsecured"
MAX_FORM_BYTES = 256 * 1024  # a form posted with a cookie is read here to find its CSRF field
USER_LEVELS = ("viewer", "analyst", "admin")


def route_access(routes: list[BaseRoute], scope: Scope) -> str | None:
    """The access level of the route serving ``scope``; None when no route matches."""
    partial: str | None = None
    for route in routes:
        match, child_scope = route.matches(scope)
        if match == Match.NONE:
            continue
        level = getattr(route, "access", None)
        inner_routes = getattr(route, "routes", None)
        if level is None and inner_routes:
            inner = route_access(inner_routes, {**scope, **child_scope})
            if inner is not None:
                return inner
            continue
        if match == Match.FULL:
            return level or UNSECURED
        # Method mismatch: the router will answer 405, but only to callers the route admits.
        partial = partial or level or UNSECURED
    return partial


class AccessMiddleware:
    """ASGI middleware; needs the identity store (``ServerState.auth``) opened by the lifespan."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        access = route_access(scope["app"].router.routes, scope)
        connection = HTTPConnection(scope)
        auth = server_state(connection).auth
        if auth is None:
            # Lifespan not run (yet): public routes still answer, nothing else does.
            if access in (None, "public"):
                await self.app(scope, receive, send)
            else:
                await _deny(scope, receive, send, 503, "not_ready", "identity store not open")
            return
        if scope["type"] == "websocket" and not _origin_ok(auth, connection):
            log.warning(
                "websocket %s refused: foreign Origin %r",
                scope["path"],
                connection.headers.get("origin"),
            )
            await _deny(scope, receive, send, 403, "forbidden", "origin not allowed")
            return
        principal, token_error = await authenticate(auth, connection)
        scope.setdefault("state", {})["principal"] = principal
        refusal = _refusal(access, principal, token_error, scope)
        if refusal is not None:
            status, error, detail = refusal
            log.info(
                "%s %s refused (%s): %s", scope.get("method", "WS"), scope["path"], status, detail
            )
            if status == 401 and _wants_page(scope):
                target = scope["path"] + (
                    "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
                )
                await RedirectResponse("/login?next=" + quote(target, safe=""), 303)(
                    scope, receive, send
                )
                return
            await _deny(scope, receive, send, status, error, detail, token_error)
            return
        if _needs_csrf(access, principal, scope):
            assert principal is not None
            checked = await _check_csrf(auth, principal, connection, scope, receive, send)
            if checked is None:
                return
            receive = checked
        await self.app(scope, receive, send)


async def authenticate(
    auth: AuthContext, connection: HTTPConnection
) -> tuple[Principal | None, str | None]:
    """(principal, why a presented Bearer token was refused); (None, None) when anonymous."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        try:
            return await principal_from_token(auth, value.strip()), None
        except TokenError as error:
            return None, str(error)
    cookie = connection.cookies.get(SESSION_COOKIE)
    if cookie:
        found = await auth.sessions.find(cookie)
        if found is not None:
            session, user = found
            return Principal.of(
                user,
                via="session",
                credential_id=session.token_hash,
                expires_at=session.expires_at,
                csrf_token=session.csrf_token,
            ), None
    return None, None


async def principal_from_token(auth: AuthContext, token: str) -> Principal:
    """The principal of a Bearer token; raise TokenError if it is invalid or revoked."""
    claims = auth.tokens.verify(token)
    # One query for both checks: this runs on every API request.
    found = await auth.users.token_user(_user_id(claims.sub), claims.jti)
    if found is None:
        raise TokenError("user no longer exists")
    user, revoked = found
    if revoked:
        raise TokenError("token revoked")
    if claims.gen != user.token_generation:
        raise TokenError("token revoked (password changed)")
    return Principal.of(user, via="token", credential_id=claims.jti, expires_at=claims.exp)


def _user_id(subject: str) -> int:
    """The user id in ``sub``; 0 (no such user) for anything that is not a SQLite integer."""
    return int(subject) if subject.isdigit() and len(subject) < 19 else 0


def _refusal(
    access: str | None, principal: Principal | None, token_error: str | None, scope: Scope
) -> tuple[int, str, str] | None:
    if access is None or access == "public":
        return None  # unmatched paths get the router's 404
    if access == UNSECURED:
        log.error("route for %s has no access rule: refused", scope["path"])
        return 403, "forbidden", "route has no access rule"
    if access == "agent":
        if principal is not None:
            return 403, "forbidden", "agent endpoint: user credentials are not accepted"
        return None
    if principal is None:
        return 401, "unauthorized", token_error or "authentication required"
    if not principal.has_role(access):
        return 403, "forbidden", f"requires role {access}"
    return None


def _needs_csrf(access: str | None, principal: Principal | None, scope: Scope) -> bool:
    """Cookie-authenticated writes to user routes (Bearer tokens are not sent by browsers)."""
    return (
        access in USER_LEVELS
        and principal is not None
        and principal.via == "session"
        and scope["type"] == "http"
        and scope["method"] not in SAFE_METHODS
    )


def _origin_ok(auth: AuthContext, connection: HTTPConnection) -> bool:
    origin = connection.headers.get("origin")
    # No Origin: not a browser (agents, CLI), which cannot be made to send ambient cookies.
    return origin is None or origin_allowed(
        origin, connection.headers.get("host", ""), auth.origins
    )


def _wants_page(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return (
        scope["type"] == "http"
        and scope["method"] == "GET"
        and "authorization" not in headers
        and "text/html" in headers.get("accept", "")
    )


async def _check_csrf(
    auth: AuthContext,
    principal: Principal,
    connection: HTTPConnection,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> Receive | None:
    """Return the receive to continue with, or None after answering 403."""
    origin = connection.headers.get("origin")
    if origin is not None and not origin_allowed(
        origin, connection.headers.get("host", ""), auth.origins
    ):
        await _deny(scope, receive, send, 403, "forbidden", "origin not allowed")
        return None
    presented = connection.headers.get(CSRF_HEADER)
    content_type = connection.headers.get("content-type", "")
    if presented is None and content_type.startswith("application/x-www-form-urlencoded"):
        body = await _read_body(receive)
        if body is not None:
            try:
                fields = parse_qs(body.decode("latin-1"), max_num_fields=1000)
            except ValueError:  # too many fields: no token we would look for
                fields = {}
            values = fields.get(CSRF_FIELD)
            presented = values[0] if values else None
            receive = _replay(body, receive)
    if not same_token(principal.csrf_token, presented):
        log.warning("%s %s refused: missing or wrong CSRF token", scope["method"], scope["path"])
        await _deny(scope, receive, send, 403, "forbidden", "missing or invalid CSRF token")
        return None
    return receive


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    error: str,
    detail: str,
    token_error: str | None = None,
) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    headers: dict[str, Any] = {}
    if status == 401:
        challenge = 'Bearer realm="netmon"'
        if token_error:
            challenge += (
                ', error="invalid_token", error_description="' + token_error.replace('"', "'") + '"'
            )
        headers["WWW-Authenticate"] = challenge
    response: Response = JSONResponse({"error": error, "detail": detail}, status, headers=headers)
    await response(scope, receive, send)
