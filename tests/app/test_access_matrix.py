"""Every route of the real app, for every kind of caller, against a real uvicorn server.

The routes are found by walking ``app.routes`` recursively, so a route added anywhere is tested
here the day it lands, and one without an access rule fails this test. For each route and
method we call as anonymous, viewer, analyst, admin and an analyst of another branch, and
assert allowed or refused from the access level alone:
- "public": everyone is let through;
- "agent": every user principal is refused (agents prove their own key; anonymous callers
  are left to the transport's handler, which refuses them without a key);
- "viewer" < "analyst" < "admin": anonymous refused, lower roles refused, the rest allowed,
  except that a path with a ``{branch}`` parameter (filled with "north") refuses non-admins of
  other branches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from netmon.app.access import ROLE_RANK
from netmon.app.auth.tokens import TokenService
from netmon.web.factory import create_app
from tests.app.auth.live import JWT_SECRET, LiveServer, live_server, server_settings

PRINCIPALS = ("anonymous", "viewer", "analyst", "admin", "analyst_south")
BRANCH = "north"  # the branch of viewer and analyst; analyst_south has only "south"
# Convertor class -> (its name in path formats, a sample value it matches).
SAMPLE = {
    "IntegerConvertor": ("int", "999999"),
    "FloatConvertor": ("float", "1.5"),
    "PathConvertor": ("path", "x"),
    "StringConvertor": ("str", "x"),
    "UUIDConvertor": ("uuid", "00000000-0000-0000-0000-000000000000"),
}


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """(full path format, route) for every leaf route, descending into mounts."""
    for route in routes:
        if isinstance(route, Mount) and not hasattr(route, "access"):
            yield from walk(route.routes, prefix + route.path)
        else:
            yield prefix + getattr(route, "path", "?"), route


def concrete_path(path_format: str, route: BaseRoute) -> str:
    path = path_format
    for name, convertor in getattr(route, "param_convertors", {}).items():
        kind, value = SAMPLE.get(type(convertor).__name__, ("str", "x"))
        value = BRANCH if name == "branch" else value
        path = path.replace("{" + name + ":" + kind + "}", value).replace("{" + name + "}", value)
    if isinstance(route, Mount):
        path += "/x"
    return path


def expected(access: str, principal: str, path_format: str, server: LiveServer) -> bool | None:
    """True: must be allowed; False: must be refused; None: not decided by access rules."""
    if access == "public":
        return True
    if access == "agent":
        return None if principal == "anonymous" else False
    if principal == "anonymous":
        return False
    user = server.users[principal]
    if ROLE_RANK[user.role] < ROLE_RANK[access]:
        return False
    return not ("{branch" in path_format and user.role != "admin" and BRANCH not in user.branches)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("matrix")) as running:
        yield running


def _routes() -> list[tuple[str, BaseRoute]]:
    # The same factory the server uses; built once here only to enumerate it.
    return list(walk(create_app(server_settings(Path("/nonexistent-matrix"))).routes))


def test_every_route_declares_an_access_level() -> None:
    missing = [path for path, route in _routes() if not hasattr(route, "access")]
    assert missing == [], f"routes without an access rule: {missing}"
    paths = {path for path, _ in _routes()}
    assert {"/api/v1/auth/token", "/api/v1/users", "/api/v1/audit", "/healthz"} <= paths


def _http_refused(answer: httpx.Response) -> bool:
    if answer.status_code in (401, 403):
        return True
    # Browsers asking for a page are sent to the login form instead of getting a 401.
    return answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")


def test_http_access_matrix(server: LiveServer) -> None:
    tokens = TokenService(JWT_SECRET, server.settings.auth)
    failures: list[str] = []
    checked = 0
    with server.client() as client:
        for path_format, route in _routes():
            if not isinstance(route, (Route, Mount)):
                continue
            access = route.access  # type: ignore[attr-defined]
            methods = sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"})
            for method in methods:
                for principal in PRINCIPALS:
                    want = expected(access, principal, path_format, server)
                    # One connection per call: a handler that drops its connection cannot
                    # make the next call fail in its place.
                    headers = {"Accept": "application/json", "Connection": "close"}
                    if principal != "anonymous":
                        # A fresh token per call: a logout route revokes the one it is given.
                        headers["Authorization"] = (
                            f"Bearer {tokens.issue(server.users[principal]).token}"
                        )
                    kwargs: dict[str, Any] = {"headers": headers}
                    if method in ("POST", "PUT", "PATCH"):
                        kwargs["json"] = {}
                    checked += 1
                    try:
                        answer = client.request(method, concrete_path(path_format, route), **kwargs)
                    except httpx.TransportError as error:
                        # A handler may drop an unauthenticated agent upload mid-body; that is
                        # a refusal too. For a decided case it is a failure to report.
                        if want is not None:
                            failures.append(f"{method} {path_format} as {principal}: {error!r}")
                        continue
                    refused = _http_refused(answer)
                    if answer.status_code >= 500 or (want is not None and refused == want):
                        failures.append(
                            f"{method} {path_format} ({access}) as {principal}: "
                            f"{answer.status_code} {answer.text[:120]}"
                        )
    assert failures == [], "\n".join(failures)
    assert checked >= 5 * 10


def _ws_refused(server: LiveServer, path: str, headers: dict[str, str], origin: str | None) -> bool:
    try:
        with connect(
            server.ws_url + path, origin=origin, additional_headers=headers, open_timeout=5
        ):  # type: ignore[arg-type]
            return False
    except InvalidStatus as refusal:
        assert refusal.response.status_code in (401, 403), refusal.response.status_code
        return True


def test_websocket_access_matrix(server: LiveServer) -> None:
    tokens = TokenService(JWT_SECRET, server.settings.auth)
    sessions: dict[str, str] = {}
    for principal in PRINCIPALS[1:]:
        client, _ = server.login(principal)
        sessions[principal] = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        client.close()
    failures: list[str] = []
    for path_format, route in _routes():
        if not isinstance(route, WebSocketRoute):
            continue
        access = route.access  # type: ignore[attr-defined]
        path = concrete_path(path_format, route)
        for principal in PRINCIPALS:
            want = expected(access, principal, path_format, server)
            if want is None:
                continue
            attempts: list[tuple[str, dict[str, str], str | None]] = []
            if principal == "anonymous":
                attempts.append(("no credentials", {}, server.url))
            else:
                # A browser: session cookie and its own Origin. An API client: Bearer, no Origin.
                attempts.append(("cookie", {"Cookie": sessions[principal]}, server.url))
                bearer = f"Bearer {tokens.issue(server.users[principal]).token}"
                attempts.append(("bearer", {"Authorization": bearer}, None))
            for how, headers, origin in attempts:
                if _ws_refused(server, path, headers, origin) == want:
                    failures.append(f"WS {path_format} ({access}) as {principal} via {how}")
    assert failures == [], "\n".join(failures)


def test_branch_scoping_helper_is_what_handlers_see(server: LiveServer) -> None:
    from netmon.app.auth.principals import Principal

    def principal(name: str) -> Principal:
        return Principal.of(server.users[name], via="token", credential_id="x", expires_at=0)

    assert principal("admin").allowed_branches() is None
    assert principal("admin").allowed_branches(["south"]) == {"south"}
    assert principal("analyst").allowed_branches() == {"north"}
    assert principal("analyst").allowed_branches(["north", "south"]) == {"north"}
    assert principal("analyst_south").allowed_branches(["north"]) == frozenset()
    with pytest.raises(HTTPException) as denied:
        principal("analyst_south").require_branch("north")
    assert denied.value.status_code == 403
    assert not principal("analyst_south").can_see("north")
    with server.client(headers=server.bearer("analyst_south")) as client:
        assert client.get("/api/v1/auth/me").json()["branches"] == ["south"]
