"""Fuzz the login form (web/login.py ``POST /login``) on a real server (uvicorn on
loopback): arbitrary usernames, passwords, ``next`` targets, CSRF tokens, extra fields and
raw bodies. Every answer is a page (200/303/400/401/403/429), never a 500, and a redirect
after a login only ever goes to a local path."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.app.auth.live import PASSWORD, LiveServer, live_server
from tests.fuzz.budget import fuzz

TEXT = st.text(max_size=40) | st.sampled_from(
    [
        "admin",
        "viewer",
        PASSWORD,
        "",
        " ",
        "\x00",
        "é" * 50,
        "a" * 5000,
        "//evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "/dashboard?x=1",
        "javascript:alert(1)",
    ]
)
OK = {200, 303, 400, 401, 403, 413, 429}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # a high throttle: the fuzzer tries many wrong passwords from one address
    with live_server(
        tmp_path_factory.mktemp("login") / "data", throttle_free_attempts="100000"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as session:
        yield session


@fuzz
@given(
    username=TEXT,
    password=TEXT,
    next_path=st.none() | TEXT,
    csrf=st.sampled_from(["valid", "missing", "wrong"]),
    extra=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
)
def test_any_login_form_gets_a_page_never_a_500(
    client: httpx.Client,
    username: str,
    password: str,
    next_path: str | None,
    csrf: str,
    extra: dict[str, str],
) -> None:
    client.cookies.clear()
    token = client.get("/login").cookies.get("netmon_login_csrf", "")
    form = {**extra, "username": username, "password": password}
    if csrf != "missing":
        form["csrf_token"] = token if csrf == "valid" else "x" + token[1:]
    params = {"next": next_path} if next_path is not None else None
    answer = client.post("/login", data=form, params=params)
    assert answer.status_code in OK, (answer.status_code, answer.text[:300])
    if answer.status_code == 303:
        target = answer.headers["location"]
        assert target.startswith("/") and not target.startswith(("//", "/\\")), target


@fuzz
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "text/plain",
            "application/json",
        ]
    ),
)
def test_any_raw_login_body_gets_a_page_never_a_500(
    client: httpx.Client, body: bytes, content_type: str
) -> None:
    answer = client.post("/login", content=body, headers={"content-type": content_type})
    assert answer.status_code in OK, (answer.status_code, answer.text[:300])
