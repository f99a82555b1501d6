"""Auth endpoints: the OAuth2 token endpoint, login/logout pages, "me", password change.

``auth_routes()`` returns these and the admin API (netmon.app.auth.admin) for ``create_app``.
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute
from starlette.templating import Jinja2Templates

import netmon.web
from netmon.app.access import SecuredRoute
from netmon.app.auth import admin
from netmon.app.auth.context import AuthContext
from netmon.app.auth.forms import BadInput, bad_input_response, json_error, read_form, read_json
from netmon.app.auth.logins import Throttled, attempt_login
from netmon.app.auth.passwords import MAX_PASSWORD_LENGTH, PasswordPolicyError
from netmon.app.auth.principals import Principal, audit_request, client_address, principal_of
from netmon.app.auth.sessions import CSRF_FIELD, LOGIN_CSRF_COOKIE, same_token

TEMPLATES = Jinja2Templates(directory=str(Path(netmon.web.__file__).parent / "templates"))
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _auth(request: Request) -> AuthContext:
    context: AuthContext = request.app.state.auth
    return context


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


# --- Browser login / logout ---------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only local paths: "//evil.example" or "https://..." would make an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(
    request: Request,
    status: int = 200,
    error: str = "",
    username: str = "",
    next_path: str = "/",
    retry_after: str | None = None,
) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {
            "csrf_token": csrf,
            "csrf_field": CSRF_FIELD,
            "error": error,
            "username": username,
            "next": next_path,
        },
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            **({"Retry-After": retry_after} if retry_after else {}),
        },
    )
    # Double-submit token for the login form: there is no session yet to bind one to.
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=_auth(request).sessions.secure(request),
    )
    return response


async def login_page(request: Request) -> Response:
    """GET /login: the form."""
    return _login_page(request, next_path=_safe_next(request.query_params.get("next")))


async def login_submit(request: Request) -> Response:
    """POST /login: check the form's CSRF token, the password, then start a session."""
    try:
        form = await read_form(request)
    except BadInput as error:
        bad_input_response(request, error)
        return _login_page(request, error.status, "The form could not be read.")
    username, password = form.get("username", ""), form.get("password", "")
    next_path = _safe_next(form.get("next"))
    if not same_token(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get(CSRF_FIELD)):
        bad_input_response(request, BadInput("login form without a matching CSRF token"))
        return _login_page(request, 403, "The form expired; please try again.", username, next_path)
    if not username or not password or len(password) > MAX_PASSWORD_LENGTH:
        return _login_page(request, 400, "Enter your username and password.", username, next_path)
    outcome = await attempt_login(request, username, password, channel="page")
    if isinstance(outcome, Throttled):
        seconds = str(math.ceil(outcome.retry_after))
        return _login_page(
            request,
            429,
            f"Too many failed logins. Try again in {seconds} seconds.",
            username,
            next_path,
            retry_after=seconds,
        )
    if outcome is None:
        return _login_page(request, 401, "Invalid username or password.", username, next_path)
    auth = _auth(request)
    token, _ = await auth.sessions.start(outcome, client_address(request))
    response = RedirectResponse(next_path, 303)
    auth.sessions.set_cookie(response, request, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


async def _end_credential(request: Request) -> Principal:
    principal = _principal(request)
    auth = _auth(request)
    if principal.via == "session":
        await auth.sessions.end(principal.credential_id)
    else:
        await auth.users.revoke_token(principal.credential_id, principal.expires_at)
    await audit_request(request, "auth.logout", detail={"via": principal.via})
    return principal


async def logout_page(request: Request) -> Response:
    """POST /logout (form with csrf_token): end the session, back to the login page."""
    await _end_credential(request)
    response = RedirectResponse("/login", 303)
    _auth(request).sessions.clear_cookie(response, request)
    return response


async def logout_api(request: Request) -> Response:
    """POST /api/v1/auth/logout: revoke the presented token (or end the session)."""
    principal = await _end_credential(request)
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
        SecuredRoute("/login", login_page, methods=["GET"], access="public"),
        SecuredRoute("/login", login_submit, methods=["POST"], access="public"),
        SecuredRoute("/logout", logout_page, methods=["POST"], access="viewer"),
        SecuredRoute("/api/v1/auth/logout", logout_api, methods=["POST"], access="viewer"),
        SecuredRoute("/api/v1/auth/me", me, methods=["GET"], access="viewer"),
        SecuredRoute("/api/v1/auth/password", change_password, methods=["POST"], access="viewer"),
        *admin.admin_routes(),
    ]
