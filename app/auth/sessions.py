"""Browser sessions: an opaque cookie, a session-bound CSRF token, and the origin rules.

The cookie holds a random token; the database keeps only its SHA-256, so a leaked database
copy opens no session. The cookie is HttpOnly and SameSite=Strict, and Secure when the request
came over HTTPS (or always/never, per ``auth.cookie_secure``). Each session has its own CSRF
token: pages put it in ``hx-headers`` (``X-CSRF-Token``) or a hidden ``csrf_token`` field, and
the middleware compares it on every state-changing request authenticated by the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import Response

from netmon.app.settings import AuthSettings
from netmon.storage.users import Session, User, UserStore

SESSION_COOKIE = "netmon_session"
LOGIN_CSRF_COOKIE = "netmon_login_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
TOUCH_EVERY_S = 60.0  # write last_seen at most once a minute per session


def token_hash(token: str) -> str:
    """What the database stores for a session cookie value."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens (False when one is missing)."""
    return (
        bool(expected)
        and presented is not None
        and hmac.compare_digest(expected.encode(), presented.encode())
    )


class SessionManager:
    """Creates, finds and ends sessions, and sets their cookies."""

    def __init__(self, users: UserStore, settings: AuthSettings) -> None:
        self._users = users
        self._settings = settings

    async def start(self, user: User, source: str) -> tuple[str, Session]:
        """A new session for ``user``: (cookie value, session)."""
        now = time.time()
        token = secrets.token_urlsafe(32)
        session = Session(
            token_hash=token_hash(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen=now,
            expires_at=now + self._settings.session_max_hours * 3600,
            source=source,
        )
        await self._users.create_session(session)
        return token, session

    async def find(self, token: str) -> tuple[Session, User] | None:
        """The live session for a cookie value and its user (expired/idle sessions end)."""
        if not token or len(token) > 128:
            return None
        found = await self._users.session_with_user(token_hash(token))
        if found is None:
            return None
        session, user = found
        now = time.time()
        idle_limit = self._settings.session_idle_minutes * 60
        if now >= session.expires_at or now - session.last_seen >= idle_limit:
            await self._users.delete_session(session.token_hash)
            return None
        if now - session.last_seen >= TOUCH_EVERY_S:
            await self._users.touch_session(session.token_hash, now)
        return session, user

    async def end(self, session_hash: str) -> None:
        """End a session (logout)."""
        await self._users.delete_session(session_hash)

    def secure(self, connection: HTTPConnection) -> bool:
        """Whether cookies for this request get the Secure flag."""
        mode = self._settings.cookie_secure
        if mode == "auto":
            return connection.url.scheme in ("https", "wss")
        return mode == "always"

    def set_cookie(self, response: Response, connection: HTTPConnection, token: str) -> None:
        """Attach the session cookie to a response."""
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=self._settings.session_max_hours * 3600,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure(connection),
        )

    def clear_cookie(self, response: Response, connection: HTTPConnection) -> None:
        """Remove the session cookie from the browser."""
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure(connection),
        )


def allowed_origins(settings: AuthSettings) -> frozenset[str]:
    """The configured extra origins, normalised to scheme://host[:port] in lower case."""
    return frozenset(
        origin.strip().rstrip("/").lower()
        for origin in settings.allowed_origins.split(",")
        if origin.strip()
    )


def origin_allowed(origin: str, host: str, extra: frozenset[str]) -> bool:
    """Whether a browser's Origin is this server (same host) or a configured origin."""
    origin = origin.strip().rstrip("/").lower()
    if origin in extra:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc == host.strip().lower()
