"""The browser's login and logout pages: GET/POST /login, POST /logout.

The form is rendered by the dashboard's one Jinja environment (web/templating.py), so it goes out
with the same security headers as every other page (Content-Security-Policy included). Checking a
password and starting a session are the auth service's (netmon.app.auth); the OAuth2 token
endpoint and the JSON auth API stay there too.
"""

from __future__ import annotations

import math
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from netmon.app.access import SecuredRoute
from netmon.app.auth.context import AuthContext
from netmon.app.auth.forms import BadInput, bad_input_response, read_form
from netmon.app.auth.logins import Throttled, attempt_login
from netmon.app.auth.passwords import MAX_PASSWORD_LENGTH
from netmon.app.auth.principals import client_address
from netmon.app.auth.routes import end_credential
from netmon.app.auth.sessions import CSRF_FIELD, LOGIN_CSRF_COOKIE, same_token
from netmon.app.state import opened, server_state
from netmon.web.state import web_state


def _auth(request: Request) -> AuthContext:
    return opened(server_state(request).auth, "the identity store")


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
    response = web_state(request).renderer.page(
        request,
        "login.html",
        status=status,
        csrf_token=csrf,
        csrf_field=CSRF_FIELD,
        error=error,
        username=username,
        next=next_path,
    )
    if retry_after:
        response.headers["Retry-After"] = retry_after
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


async def logout_page(request: Request) -> Response:
    """POST /logout (form with csrf_token): end the session, back to the login page."""
    await end_credential(request)
    response = RedirectResponse("/login", 303)
    _auth(request).sessions.clear_cookie(response, request)
    return response


def login_routes() -> list[BaseRoute]:
    """The login and logout pages, each with its access level."""
    return [
        SecuredRoute("/login", login_page, methods=["GET"], access="public"),
        SecuredRoute("/login", login_submit, methods=["POST"], access="public"),
        SecuredRoute("/logout", logout_page, methods=["POST"], access="viewer"),
    ]
