"""Access tokens: issued by the token endpoint, and every forged or stale token refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from netmon.app.auth.tokens import TokenService
from netmon.storage.database import Database, database_path
from netmon.storage.users import UserStore
from tests.app.auth.live import JWT_SECRET, PASSWORD, LiveServer, run, server_settings


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(server: LiveServer, name: str = "analyst", **override: object) -> dict[str, object]:
    now = int(time.time())
    user = server.users[name]
    claims: dict[str, object] = {
        "iss": server.settings.auth.issuer,
        "aud": server.settings.auth.audience,
        "sub": str(user.id),
        "iat": now,
        "exp": now + 300,
        "jti": f"t{time.monotonic_ns()}",
        "gen": 0,
    }
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256(claims: dict[str, object], secret: bytes, alg: str = "HS256") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _status(server: LiveServer, token: str) -> tuple[int, str]:
    with server.client() as client:
        answer = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    return answer.status_code, answer.headers.get("www-authenticate", "")


def test_password_grant_issues_a_working_token(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": "analyst", "password": PASSWORD},
        )
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 15 * 60
        me = client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
    assert me.status_code == 200 and me.json()["username"] == "analyst"
    assert me.json()["branches"] == ["north"]


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "analyst"}, 400, "invalid_request"),
        (
            {"grant_type": "password", "username": "analyst", "password": "wrong password!"},
            400,
            "invalid_grant",
        ),
        (
            {"grant_type": "password", "username": "nobody", "password": PASSWORD},
            400,
            "invalid_grant",
        ),
    ],
)
def test_token_endpoint_errors_follow_rfc6749(
    server: LiveServer, form: dict[str, str], status: int, error: str
) -> None:
    with server.client() as client:
        answer = client.post(
            "/api/v1/auth/token", data=form, headers={"X-Forwarded-For": "198.51.100.7"}
        )
    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert answer.json()["error_description"]


def test_token_endpoint_refuses_json_bodies(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.post("/api/v1/auth/token", json={"grant_type": "password"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_anonymous_api_call_gets_401_with_bearer_challenge(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.get("/api/v1/auth/me")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_alg_none_is_refused(server: LiveServer) -> None:
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{head}.{_b64(json.dumps(_claims(server)).encode())}."
    status, challenge = _status(server, token)
    assert status == 401 and 'error="invalid_token"' in challenge


def test_rs256_token_and_hs256_signed_with_a_public_key_are_refused(server: LiveServer) -> None:
    attacker = RSAKey.generate_key(2048)
    rs_token = jwt.encode({"alg": "RS256"}, _claims(server), attacker, algorithms=["RS256"])
    assert _status(server, rs_token)[0] == 401
    # The classic confusion: HMAC keyed with the (public) RSA key text.
    confused = _hs256(_claims(server), attacker.as_pem(private=False))
    assert _status(server, confused)[0] == 401


def test_wrong_key_is_refused(server: LiveServer) -> None:
    assert _status(server, _hs256(_claims(server), b"another-secret-0123456789abcdefgh"))[0] == 401
    # Sanity: the same construction with the right key is accepted, so the refusal is the key's.
    assert _status(server, _hs256(_claims(server), JWT_SECRET.encode()))[0] == 200


@pytest.mark.parametrize(
    "override",
    [
        {"exp": int(time.time()) - 120},
        {"aud": "someone-else"},
        {"iss": "https://evil.example"},
        {"jti": None},
        {"iat": int(time.time()) + 3600},
        {"sub": "999999"},
        {"gen": 7},
    ],
    ids=[
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "no-jti",
        "issued-in-future",
        "unknown-user",
        "old-generation",
    ],
)
def test_bad_claims_are_refused(server: LiveServer, override: dict[str, object]) -> None:
    token = _hs256(_claims(server, **override), JWT_SECRET.encode())
    assert _status(server, token)[0] == 401


def test_logout_revokes_the_token(server: LiveServer) -> None:
    token = server.token("viewer")
    with server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.get("/api/v1/auth/me").status_code == 200
        assert client.post("/api/v1/auth/logout").status_code == 204
        answer = client.get("/api/v1/auth/me")
    assert answer.status_code == 401
    assert "revoked" in answer.headers["www-authenticate"]


def test_token_of_a_deleted_user_is_refused(server: LiveServer) -> None:
    with server.client(headers=server.bearer("admin")) as admin:
        made = admin.post("/api/v1/users", json={"username": "short-lived", "role": "viewer"})
        assert made.status_code == 201
        password = made.json()["password"]
        with server.client() as client:
            token = client.post(
                "/api/v1/auth/token",
                data={"grant_type": "password", "username": "short-lived", "password": password},
            ).json()["access_token"]
            assert (
                client.get(
                    "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
                ).status_code
                == 200
            )
            assert admin.delete(f"/api/v1/users/{made.json()['id']}").status_code == 204
            assert (
                client.get(
                    "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
                ).status_code
                == 401
            )


def test_password_change_revokes_existing_tokens(server: LiveServer) -> None:
    with server.client(headers=server.bearer("admin")) as admin:
        made = admin.post(
            "/api/v1/users", json={"username": "changer", "role": "viewer", "password": PASSWORD}
        )
        assert made.status_code == 201
    old = server.token("changer")
    with server.client(headers={"Authorization": f"Bearer {old}"}) as client:
        changed = client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": "a brand new passphrase 7"},
        )
        assert changed.status_code == 200, changed.text
        assert client.get("/api/v1/auth/me").status_code == 401


def test_token_service_refuses_a_short_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="at least 32"):
        TokenService("short", server_settings(tmp_path).auth)


def test_generated_secret_is_stored_once_and_reused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netmon.app.auth.context import signing_secret

    settings = server_settings(tmp_path, jwt_secret="")

    async def twice() -> tuple[str, str]:
        db = await Database.open(database_path(settings.data_dir))
        try:
            return await signing_secret(db, settings.auth), await signing_secret(db, settings.auth)
        finally:
            await db.close()

    first, second = run(twice())
    assert first == second and len(first) >= 32
    assert run(twice())[0] == first
    assert OctKey.import_key(first.encode())
    assert UserStore  # the store module is importable next to the key table


def test_a_short_configured_secret_stops_the_start_with_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netmon.app.auth.context import open_auth
    from netmon.app.settings import SettingsError

    async def start() -> None:
        async with open_auth(server_settings(tmp_path, jwt_secret="too-short")):
            pass

    with pytest.raises(SettingsError, match=r"NETMON_AUTH__JWT_SECRET.*at least 32"):
        run(start())
