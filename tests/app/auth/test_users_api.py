"""The user admin API: literal storage of hostile text, clear errors, password reset, last admin."""

from __future__ import annotations

import logging

import pytest

from tests.app.auth.live import PASSWORD, LiveServer

SQLISH = "x'); DROP TABLE users; -- \" OR 1=1 /* %_ \\ ; SELECT * FROM sessions"
BIG = ("é" + SQLISH + "ü") * (10_240 // (len(SQLISH) + 2) + 1)
BIG_PASSWORD = ("ß" + SQLISH[::-1]) * (10_240 // (len(SQLISH) + 1) + 1)


def test_sql_metacharacters_and_10kb_strings_are_stored_and_shown_literally(
    server: LiveServer,
) -> None:
    assert len(BIG) >= 10_240
    for username, display_name, password in [
        (SQLISH, SQLISH, SQLISH[::-1]),
        (BIG, BIG, BIG_PASSWORD),
    ]:
        with server.client(headers=server.bearer("admin")) as admin:
            made = admin.post(
                "/api/v1/users",
                json={
                    "username": username,
                    "display_name": display_name,
                    "role": "analyst",
                    "branches": ["north"],
                    "password": password,
                },
            )
            assert made.status_code == 201, made.text[:300]
            user_id = made.json()["id"]
            shown = admin.get(f"/api/v1/users/{user_id}").json()
            assert (shown["username"], shown["display_name"]) == (username, display_name)
            assert any(
                u["username"] == username for u in admin.get("/api/v1/users").json()["users"]
            )
            trail = admin.get(
                "/api/v1/audit", params={"action": "user.created", "target": username}
            ).json()
            assert [r["target"] for r in trail["records"]] == [username]
        with server.client() as client:
            token = client.post(
                "/api/v1/auth/token",
                data={"grant_type": "password", "username": username, "password": password},
            )
            assert token.status_code == 200
            me = client.get(
                "/api/v1/auth/me",
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            )
            assert me.json()["username"] == username


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"username": "a", "role": "root"}, 400, "role"),
        ({"username": "", "role": "viewer"}, 400, "username"),
        ({"username": "a\x00b", "role": "viewer"}, 400, "control characters"),
        (
            {"username": "b", "role": "viewer", "display_name": "line\nbreak"},
            400,
            "control characters",
        ),
        ({"username": "c", "role": "viewer", "branches": ["../etc"]}, 400, "invalid branch name"),
        (
            {"username": "d", "role": "viewer", "branches": ["x" * 10_240]},
            400,
            "invalid branch name",
        ),
        ({"username": "e", "role": "viewer", "password": "password2024!"}, 400, "common"),
        ({"username": "f", "role": "viewer", "password": "short"}, 400, "too short"),
        ({"username": "g", "role": "viewer", "admin": True}, 400, "unknown field"),
        ({"username": "h", "role": "viewer", "display_name": "x" * 20_000}, 400, "length"),
    ],
)
def test_bad_user_input_is_refused_clearly_and_logged(
    server: LiveServer,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, object],
    status: int,
    says: str,
) -> None:
    with server.client(headers=server.bearer("admin")) as admin:
        before = admin.get("/api/v1/users").json()["users"]
        with caplog.at_level(logging.WARNING, logger="netmon.app.auth.forms"):
            answer = admin.post("/api/v1/users", json=body)
        assert answer.status_code == status
        assert says in answer.json()["detail"]
        assert admin.get("/api/v1/users").json()["users"] == before
    assert any("bad input" in record.getMessage() for record in caplog.records)


def test_malformed_and_oversized_bodies(server: LiveServer) -> None:
    with server.client(headers=server.bearer("admin")) as admin:
        bad_json = admin.post(
            "/api/v1/users", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["detail"]
        huge = admin.post(
            "/api/v1/users", content=b"x" * 300_000, headers={"Content-Type": "application/json"}
        )
        assert huge.status_code == 413


def test_admin_changes_role_and_branches_and_resets_a_password(server: LiveServer) -> None:
    with server.client(headers=server.bearer("admin")) as admin:
        made = admin.post(
            "/api/v1/users", json={"username": "mover", "role": "viewer", "password": PASSWORD}
        ).json()
        changed = admin.patch(
            f"/api/v1/users/{made['id']}", json={"role": "analyst", "branches": ["east", "west"]}
        )
        assert changed.status_code == 200
        assert (changed.json()["role"], changed.json()["branches"]) == ("analyst", ["east", "west"])
        reset = admin.post(f"/api/v1/users/{made['id']}/password", json={})
        assert reset.status_code == 200
        new_password = reset.json()["password"]
        assert (
            admin.get("/api/v1/audit", params={"action": "user.", "target": "mover"}).json()[
                "records"
            ][-1]["action"]
            == "user.password_reset"
        )
        assert admin.patch("/api/v1/users/999999", json={"role": "viewer"}).status_code == 404
        assert admin.get(f"/api/v1/users/{2**70}").status_code == 404
    with server.client() as client:
        grant = {"grant_type": "password", "username": "mover"}
        assert (
            client.post("/api/v1/auth/token", data={**grant, "password": PASSWORD}).status_code
            == 400
        )
        assert (
            client.post("/api/v1/auth/token", data={**grant, "password": new_password}).status_code
            == 200
        )


def test_the_last_admin_cannot_be_removed_or_demoted(server: LiveServer) -> None:
    admin_id = server.users["admin"].id
    with server.client(headers=server.bearer("admin")) as admin:
        admins = [u for u in admin.get("/api/v1/users").json()["users"] if u["role"] == "admin"]
        assert [u["id"] for u in admins] == [admin_id]
        assert admin.patch(f"/api/v1/users/{admin_id}", json={"role": "viewer"}).status_code == 409
        assert admin.delete(f"/api/v1/users/{admin_id}").status_code == 409
        assert admin.get(f"/api/v1/users/{admin_id}").json()["role"] == "admin"


def test_own_password_change_checks_the_current_one_and_the_policy(server: LiveServer) -> None:
    with server.client(headers=server.bearer("admin")) as admin:
        admin.post(
            "/api/v1/users",
            json={"username": "self-changer", "role": "viewer", "password": PASSWORD},
        )
    with server.client(headers=server.bearer("self-changer")) as client:
        weak = client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": "qwerty123456"},
        )
        assert weak.status_code == 400 and "common" in weak.json()["detail"]
        wrong = client.post(
            "/api/v1/auth/password",
            json={"current_password": "not it at all", "new_password": "fine new passphrase 9"},
        )
        assert wrong.status_code == 403
