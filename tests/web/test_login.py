"""The login page is a dashboard page: same renderer, same security headers (web/login.py).

The login flow itself (cookies, CSRF, redirects, throttling) is tested in
tests/app/auth/test_sessions.py and test_throttle.py, against the same real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import pytest

from tests.app.auth.live import PASSWORD, LiveServer, live_server

HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy", "cache-control")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("netmon")) as running:
        yield running


def test_the_login_page_has_the_content_security_policy_of_a_dashboard_page(
    server: LiveServer,
) -> None:
    client, _ = server.login("viewer")
    with closing(client):
        dashboard = client.get("/alerts")
    with server.client() as anonymous:
        login = anonymous.get("/login")
    assert dashboard.status_code == 200 and login.status_code == 200
    assert login.headers["content-security-policy"]  # set, and the same as every page's
    for name in HEADERS:
        assert login.headers[name] == dashboard.headers[name], name


def test_a_refused_login_keeps_the_headers_and_the_form(server: LiveServer) -> None:
    with server.client() as client:
        page = client.get("/login")
        answer = client.post(
            "/login",
            data={
                "username": "viewer",
                "password": PASSWORD + "x",
                "csrf_token": page.cookies["netmon_login_csrf"],
            },
        )
    assert answer.status_code == 401 and 'id="login-error"' in answer.text
    for name in HEADERS:
        assert answer.headers[name] == page.headers[name], name


def test_the_login_page_loads_only_what_its_policy_allows(server: LiveServer) -> None:
    """No inline script or style the policy would block: the stylesheet is our own, with SRI."""
    with server.client() as client:
        page = client.get("/login")
    assert "<script" not in page.text and "style=" not in page.text
    assert '<link rel="stylesheet" href="/static/netmon.css?v=' in page.text
