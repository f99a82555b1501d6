"""Browser sessions: the login page, cookie flags, CSRF on writes, Origin on WebSockets."""

from __future__ import annotations

from contextlib import closing

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.app.auth.live import PASSWORD, LiveServer


def _login_form(server: LiveServer, **headers: str):  # type: ignore[no-untyped-def]
    client = server.client(headers=headers)
    page = client.get("/login")
    assert page.status_code == 200 and 'name="csrf_token"' in page.text
    return client, page.cookies["netmon_login_csrf"]


def test_login_sets_a_strict_httponly_cookie_and_redirects_to_next(server: LiveServer) -> None:
    client, csrf = _login_form(server)
    with closing(client):
        answer = client.post(
            "/login",
            data={
                "username": "viewer",
                "password": PASSWORD,
                "csrf_token": csrf,
                "next": "/alerts?x=1",
            },
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/alerts?x=1"
        cookie = answer.headers["set-cookie"].lower()
        assert "netmon_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert "secure" not in cookie  # plain http on loopback
        assert client.get("/api/v1/auth/me").json()["username"] == "viewer"


def test_cookie_is_secure_behind_https_proxy(server: LiveServer) -> None:
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1, as it would from the nginx in front.
    https = {"X-Forwarded-Proto": "https"}
    client, csrf = _login_form(server, **https)
    client.close()
    # The login CSRF cookie is Secure too, so an http client would not send it back by itself.
    with server.client(headers={**https, "Cookie": f"netmon_login_csrf={csrf}"}) as fresh:
        answer = fresh.post(
            "/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": csrf}
        )
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_next_cannot_leave_the_site(server: LiveServer, target: str) -> None:
    client, csrf = _login_form(server)
    with closing(client):
        answer = client.post(
            "/login",
            data={"username": "viewer", "password": PASSWORD, "csrf_token": csrf, "next": target},
        )
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_login_form_without_its_csrf_token_is_refused(server: LiveServer) -> None:
    client, _ = _login_form(server)
    with closing(client):
        answer = client.post(
            "/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": "forged"}
        )
    assert answer.status_code == 403
    assert "netmon_session" not in answer.headers.get("set-cookie", "")


def test_wrong_password_shows_the_form_again_with_the_name_escaped(server: LiveServer) -> None:
    name = "<script>alert('x')</script>\"; DROP TABLE users; --"
    client, csrf = _login_form(server, **{"X-Forwarded-For": "198.51.100.20"})
    with closing(client):
        answer = client.post(
            "/login", data={"username": name, "password": "not the password", "csrf_token": csrf}
        )
    assert answer.status_code == 401
    assert "Invalid username or password" in answer.text
    assert "<script>alert" not in answer.text and "&lt;script&gt;alert(" in answer.text


def test_browser_without_session_is_sent_to_login(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.get("/api/v1/users?x=1", headers={"Accept": "text/html"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fapi%2Fv1%2Fusers%3Fx%3D1"


def test_state_changing_request_without_csrf_token_is_403(server: LiveServer) -> None:
    client, csrf = server.login("admin")
    with closing(client):
        body = {"username": "csrf-victim", "role": "viewer"}
        assert client.post("/api/v1/users", json=body).status_code == 403
        assert (
            client.post("/api/v1/users", json=body, headers={"X-CSRF-Token": "wrong"}).status_code
            == 403
        )
        assert client.get("/api/v1/users").json()["users"][-1]["username"] != "csrf-victim"
        made = client.post("/api/v1/users", json=body, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201


def test_cookie_write_from_a_foreign_origin_is_403_even_with_the_token(server: LiveServer) -> None:
    client, csrf = server.login("admin")
    with closing(client):
        answer = client.post(
            "/api/v1/users",
            json={"username": "x-origin", "role": "viewer"},
            headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        )
    assert answer.status_code == 403


def test_logout_form_needs_the_csrf_field_and_ends_the_session(server: LiveServer) -> None:
    client, csrf = server.login("viewer")
    with closing(client):
        assert client.post("/logout", data={"csrf_token": "nope"}).status_code == 403
        assert client.get("/api/v1/auth/me").status_code == 200
        answer = client.post("/logout", data={"csrf_token": csrf})
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
        assert client.get("/api/v1/auth/me").status_code == 401


def test_bearer_requests_need_no_csrf_token(server: LiveServer) -> None:
    with server.client(headers=server.bearer("admin")) as client:
        assert (
            client.post(
                "/api/v1/users", json={"username": "api-made", "role": "viewer"}
            ).status_code
            == 201
        )


def _cookie_header(client) -> str:  # type: ignore[no-untyped-def]
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def test_websocket_with_same_origin_and_session_is_accepted(server: LiveServer) -> None:
    client, _ = server.login("viewer")
    with (
        closing(client),
        connect(
            server.ws_url + "/ws/test-echo",
            origin=server.url,
            additional_headers={"Cookie": _cookie_header(client)},
            open_timeout=5,
        ) as socket,
    ):
        assert socket.recv(timeout=5) == "viewer"


def test_websocket_with_foreign_origin_is_refused(server: LiveServer) -> None:
    client, _ = server.login("viewer")
    with closing(client), pytest.raises(InvalidStatus) as refused:
        connect(
            server.ws_url + "/ws/test-echo",
            origin="https://evil.example",
            additional_headers={"Cookie": _cookie_header(client)},
            open_timeout=5,
        )
    assert refused.value.response.status_code == 403


def test_websocket_without_credentials_is_refused(server: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws_url + "/ws/test-echo", origin=server.url, open_timeout=5)
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"username": "viewer"}', "application/json", 400),
        (b"username=%ff%fe&password=x", "application/x-www-form-urlencoded", 400),
        (b"username=" + b"a" * 300_000, "application/x-www-form-urlencoded", 413),
    ],
    ids=["json", "bad-utf8", "oversized"],
)
def test_unreadable_login_forms_get_a_clear_answer_and_a_log_line(
    server: LiveServer,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    content_type: str,
    status: int,
) -> None:
    with server.client() as client, caplog.at_level("WARNING", logger="netmon.app.auth.forms"):
        answer = client.post("/login", content=content, headers={"Content-Type": content_type})
    assert answer.status_code == status
    assert "The form could not be read." in answer.text
    assert any("bad input" in record.getMessage() for record in caplog.records)


def test_login_redirect_keeps_an_odd_query_string_without_failing(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.get("/api/v1/users?q=%FF%00&x=a b", headers={"Accept": "text/html"})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")


def test_cookie_form_posts_carry_the_token_in_the_body_and_odd_bodies_are_refused(
    server: LiveServer,
) -> None:
    client, csrf = server.login("viewer")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with closing(client):
        many = "&".join(f"f{n}=1" for n in range(1500)) + f"&csrf_token={csrf}"
        assert client.post("/api/v1/auth/logout", content=many, headers=form).status_code == 403
        huge = "x=" + "a" * 300_000 + f"&csrf_token={csrf}"
        assert client.post("/api/v1/auth/logout", content=huge, headers=form).status_code == 403
        assert client.get("/api/v1/auth/me").status_code == 200  # still logged in
        answer = client.post("/api/v1/auth/logout", content=f"csrf_token={csrf}", headers=form)
        assert answer.status_code == 204
        assert client.get("/api/v1/auth/me").status_code == 401
