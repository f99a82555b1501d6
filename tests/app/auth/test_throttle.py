"""Login throttling: the 11th wrong password in a minute is refused with 429 and Retry-After."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netmon.app.auth.throttle import LoginThrottle, account_key, address_key
from netmon.storage.audit import AuditQuery, AuditTrail
from netmon.storage.database import Database, database_path
from tests.app.auth.live import PASSWORD, LiveServer, live_server, run, server_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose first delay (60 s) outlasts any slow request on a loaded machine."""
    with live_server(tmp_path_factory.mktemp("throttle"), throttle_base_delay_s="60") as running:
        yield running


def _grant(server: LiveServer, username: str, password: str, ip: str):  # type: ignore[no-untyped-def]
    with server.client(headers={"X-Forwarded-For": ip}) as client:
        return client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": password},
        )


def test_eleventh_wrong_password_for_an_account_is_throttled_from_any_ip(
    server: LiveServer,
) -> None:
    for attempt in range(10):
        answer = _grant(server, "analyst", "wrong password", f"198.51.100.{attempt + 1}")
        assert answer.status_code == 400, (attempt, answer.text)
    # Even the right password from a fresh IP is not checked while the account is blocked.
    answer = _grant(server, "analyst", PASSWORD, "198.51.100.200")
    assert answer.status_code == 429
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert answer.json()["error"] == "slow_down"

    async def lockouts() -> list[str]:
        db = await Database.open(database_path(server.settings.data_dir))
        try:
            records = await AuditTrail(db).query(AuditQuery(action="auth.lockout"))
        finally:
            await db.close()
        return [f"{r.actor}/{r.target}" for r in records]

    assert "analyst/user" in run(lockouts())


def test_eleventh_wrong_password_from_an_ip_is_throttled_for_any_account(
    server: LiveServer,
) -> None:
    for attempt in range(10):
        assert _grant(server, f"guess{attempt}", "wrong password", "203.0.113.9").status_code == 400
    answer = _grant(server, "viewer", PASSWORD, "203.0.113.9")
    assert answer.status_code == 429 and "retry-after" in answer.headers
    # Another IP is unaffected.
    assert _grant(server, "viewer", PASSWORD, "203.0.113.10").status_code == 200


def test_login_page_is_throttled_too(server: LiveServer) -> None:
    ip = {"X-Forwarded-For": "192.0.2.44"}
    with server.client(headers=ip) as client:
        csrf = client.get("/login").cookies["netmon_login_csrf"]
        for _ in range(10):
            page = client.post(
                "/login", data={"username": "admin", "password": "nope nope", "csrf_token": csrf}
            )
            assert page.status_code == 401
            csrf = page.cookies["netmon_login_csrf"]  # every rendered form carries a new token
        page = client.post(
            "/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf}
        )
    assert page.status_code == 429 and "Too many failed logins" in page.text
    assert "retry-after" in page.headers


@pytest.fixture
def throttle_db(tmp_path):  # type: ignore[no-untyped-def]
    return server_settings(tmp_path, throttle_base_delay_s="1", throttle_max_delay_s="8")


def test_delays_double_then_cap_and_reset_after_quiet(throttle_db) -> None:  # type: ignore[no-untyped-def]
    settings = throttle_db
    keys = (account_key("someone"), address_key("192.0.2.1"))

    async def scenario() -> list[float]:
        db = await Database.open(database_path(settings.data_dir))
        throttle = LoginThrottle(db, settings.auth)
        waits = []
        try:
            t = 1000.0
            await throttle.failed(("ip:192.0.2.99",), now=t)  # a key that then goes quiet
            for _ in range(9):
                assert await throttle.failed(keys, now=t) == {}
            assert await throttle.retry_after(keys, now=t) == 0
            for _ in range(6):  # failures 10..15: 1, 2, 4, 8, 8, 8 seconds
                blocked = await throttle.failed(keys, now=t)
                waits.append(blocked[keys[0]])
                assert await throttle.retry_after(keys, now=t) == blocked[keys[0]]
            t += settings.auth.throttle_reset_s + 1  # quiet long enough: the count restarts
            assert await throttle.failed(keys, now=t) == {}
            rows = await db.fetch_all("SELECT key FROM login_throttle ORDER BY key")
            assert [row[0] for row in rows] == sorted(keys)  # the quiet key was forgotten
            await throttle.succeeded(keys[0])
            assert await db.fetch_all("SELECT key FROM login_throttle") == [(keys[1],)]
        finally:
            await db.close()
        return waits

    assert run(scenario()) == [1, 2, 4, 8, 8, 8]
