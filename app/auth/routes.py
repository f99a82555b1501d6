"""Auth endpoints: the OAuth2 token endpoint, API logout, "me", password change.

``auth_routes()`` returns these and the admin API (netmon.app.auth.admin) for ``create_app``.
The browser's login and logout pages are HTML views: web/login.py.
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from netmon.app.access import SecuredRoute
from netmon.app.auth import admin
from netmon.app.auth.context import AuthContext
from netmon.app.auth.forms import BadInput, bad_input_response, json_error, read_form, read_json
from netmon.app.auth.logins import Throttled, attempt_login
from netmon.app.auth.passwords import MAX_PASSWORD_LENGTH, PasswordPolicyError
from netmon.app.auth.principals import Principal, audit_request, client_address, principal_of
from netmon.app.state import opened, server_state

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _auth(request: Request) -> AuthContext:
    return opened(server_state(request).auth, "the identity store")


def _principal(request: Request) -> Principal:
    principal = principal_of(request)
    assert principal is not None, "the middleware admits only authenticated callers here"
    return principal


# --- OAuth2 password grant (RFC 6749 section 4.3) -----------------------------------------------


def oauth_error(status: int, error: str, description: str, **headers: str) -> JSONResponse:
    """An RFC 6749 section 5.2 error body."""
    return JSONResponse(
        {"error": error, "error_description": description}, status, headers={**NO_STORE, **headers}
    )


async def token_endpoint(request: Request) -> Response:
    """POST grant_type=password&username=..&password=.. -> a Bearer access token."""
    try:
        form = await read_form(request)
    except BadInput as error:
        bad_input_response(request, error)
        return oauth_error(error.status, "invalid_request", str(error))
    grant_type = form.get("grant_type", "")
    if not grant_type:
        return oauth_error(400, "invalid_request", "grant_type is required")
    if grant_type != "password":
        return oauth_error(400, "unsupported_grant_type", "only grant_type=password is supported")
    username, password = form.get("username", ""), form.get("password", "")
    if not username or not password:
        return oauth_error(400, "invalid_request", "username and password are required")
    outcome = await attempt_login(request, username, password, channel="token")
    if isinstance(outcome, Throttled):
        seconds = str(math.ceil(outcome.retry_after))
        return oauth_error(
            429,
            "slow_down",
            f"too many failed logins; retry after {seconds} s",
            **{"Retry-After": seconds},
        )
    if outcome is None:
        return oauth_error(400, "invalid_grant", "invalid username or password")
    issued = _auth(request).tokens.issue(outcome)
    return JSONResponse(
        {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in},
        headers=NO_STORE,
    )


# --- Logout ------------------------------------------------------------------------------------


async def end_credential(request: Request) -> Principal:
    """End the caller's session or revoke their token, audited (both logouts use this)."""
    principal = _principal(request)
    auth = _auth(request)
    if principal.via == "session":
        await auth.sessions.end(principal.credential_id)
    else:
        await auth.users.revoke_token(principal.credential_id, principal.expires_at)
    await audit_request(request, "auth.logout", detail={"via": principal.via})
    return principal


async def logout_api(request: Request) -> Response:
    """POST /api/v1/auth/logout: revoke the presented token (or end the session)."""
    principal = await end_credential(request)
    response = Response(status_code=204)
    if principal.via == "session":
        _auth(request).sessions.clear_cookie(response, request)
    return response


# --- The caller and their own password --------------------------------------------------------


async def me(request: Request) -> Response:
    """GET /api/v1/auth/me: who the caller is, their branches, and the session's CSRF token."""
    principal = _principal(request)
    body = {
        "id": principal.user_id,
        "username": principal.username,
        "role": principal.role,
        "branches": list(principal.branches),
        "via": principal.via,
        "expires_at": principal.expires_at,
    }
    if principal.via == "session":
        body["csrf_token"] = principal.csrf_token
    return JSONResponse(body, headers=NO_STORE)


class PasswordChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /api/v1/auth/password."""

    current_password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD_LENGTH)]
    new_password: str


async def change_password(request: Request) -> Response:
    """Change one's own password; every token and session of the user is revoked."""
    principal = _principal(request)
    auth = _auth(request)
    try:
        change = await read_json(request, PasswordChange)
        auth.passwords.check_policy(change.new_password, principal.username)
    except BadInput as error:
        return bad_input_response(request, error)
    except PasswordPolicyError as error:
        return bad_input_response(request, BadInput(str(error)))
    outcome = await attempt_login(
        request, principal.username, change.current_password, "password-change"
    )
    if isinstance(outcome, Throttled):
        seconds = str(math.ceil(outcome.retry_after))
        return json_error(429, "throttled", "too many failed attempts", **{"Retry-After": seconds})
    if outcome is None:
        return json_error(403, "forbidden", "current password is wrong")
    user = await auth.users.set_password(
        principal.user_id, await auth.passwords.hash(change.new_password)
    )
    if user is None:
        return json_error(404, "not_found", "user no longer exists")
    await audit_request(request, "user.password_changed", target=user.username)
    body = {"status": "changed"}
    token = None
    if principal.via == "session":
        # The change ended every session, this one too; give the browser a fresh one.
        token, session = await auth.sessions.start(user, client_address(request))
        body["csrf_token"] = session.csrf_token
    response = JSONResponse(body, headers=NO_STORE)
    if token is not None:
        auth.sessions.set_cookie(response, request, token)
    return response


def auth_routes() -> list[BaseRoute]:
    """Every route of the auth package, each with its access level."""
    return [
        SecuredRoute("/api/v1/auth/token", token_endpoint, methods=["POST"], access="public"),
        SecuredRoute("/api/v1/auth/logout", logout_api, methods=["POST"], access="viewer"),
        SecuredRoute("/api/v1/auth/me", me, methods=["GET"], access="viewer"),
        SecuredRoute("/api/v1/auth/password", change_password, methods=["POST"], access="viewer"),
        *admin.admin_routes(),
    ]
