"""A real Netmon server for tests: seeded SQLite under tmp_path, in-thread uvicorn on loopback.

The server is the real ``create_app`` with the real lifespan and middleware; tests talk to it
over TCP with httpx and the ``websockets`` client. Test code reads and seeds the same database
file through its own connection (WAL lets both sides work at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.fernet import Fernet
from starlette.routing import BaseRoute

from netmon.app.auth.passwords import Passwords
from netmon.app.auth.tokens import TokenService
from netmon.app.settings import Settings, load_settings
from netmon.storage.database import Database, database_path
from netmon.storage.users import Role, User, UserStore
from netmon.web.factory import create_app

JWT_SECRET = "test-only-jwt-secret-0123456789abcdef"
PASSWORD = "correct horse battery staple 42"
# Users every server starts with: name -> (role, branches).
PEOPLE: dict[str, tuple[Role, tuple[str, ...]]] = {
    "admin": ("admin", ()),
    "viewer": ("viewer", ("north",)),
    "analyst": ("analyst", ("north",)),
    "analyst_south": ("analyst", ("south",)),
}


def server_settings(data_dir: Path, **auth: str) -> Settings:
    """Settings as the environment would give them, with a cheap argon2 cost for speed."""
    environ = {
        "NETMON_STORE__DATA_DIR": str(data_dir),
        "NETMON_AUTH__JWT_SECRET": JWT_SECRET,
        "NETMON_SERVER__SECRET_KEY": Fernet.generate_key().decode(),
        "NETMON_AUTH__ARGON2_TIME_COST": "1",
        "NETMON_AUTH__ARGON2_MEMORY_KIB": "1024",
        "NETMON_AUTH__ARGON2_PARALLELISM": "1",
    }
    environ.update({f"NETMON_AUTH__{key.upper()}": value for key, value in auth.items()})
    return load_settings(environ=environ, dotenv_file=None)


def run(coroutine: Any) -> Any:
    """Run a coroutine on a fresh loop (test code is synchronous; the server has its own loop)."""
    return asyncio.run(coroutine)


async def _seed(
    settings: Settings, people: dict[str, tuple[Role, tuple[str, ...]]]
) -> dict[str, User]:
    db = await Database.open(database_path(settings.data_dir))
    try:
        store, passwords = UserStore(db), Passwords(settings.auth)
        hashed = await passwords.hash(PASSWORD)
        return {
            name: await store.create(name, hashed, role, branches)
            for name, (role, branches) in people.items()
        }
    finally:
        await db.close()


async def _user(settings: Settings, name: str) -> User | None:
    db = await Database.open(database_path(settings.data_dir))
    try:
        return await UserStore(db).get_by_username(name)
    finally:
        await db.close()


@dataclass
class LiveServer:
    """A running server and what tests need to talk to it."""

    settings: Settings
    url: str
    users: dict[str, User] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def token(self, name: str) -> str:
        """A fresh access token for a seeded user, signed like the server signs them."""
        user = run(_user(self.settings, name)) or self.users[name]
        return TokenService(JWT_SECRET, self.settings.auth).issue(user).token

    def bearer(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(name)}"}

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, follow_redirects=False, **kw)

    def login(self, name: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
        """A client holding a session cookie for ``name``, and the session's CSRF token."""
        client = self.client()
        page = client.get("/login")
        csrf = page.cookies["netmon_login_csrf"]
        answer = client.post(
            "/login", data={"username": name, "password": password, "csrf_token": csrf}
        )
        assert answer.status_code == 303, answer.text
        me = client.get("/api/v1/auth/me")
        assert me.status_code == 200, me.text
        return client, me.json()["csrf_token"]


@contextlib.contextmanager
def live_server(
    data_dir: Path,
    extra_routes: tuple[BaseRoute, ...] = (),
    people: dict[str, tuple[Role, tuple[str, ...]]] | None = None,
    **auth: str,
) -> Iterator[LiveServer]:
    """Seed users, start uvicorn in a thread on a free loopback port, stop it afterwards."""
    settings = server_settings(data_dir, **auth)
    users = run(_seed(settings, PEOPLE if people is None else people))
    app = create_app(settings)
    app.router.routes.extend(extra_routes)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(settings=settings, url=f"http://127.0.0.1:{port}", users=users)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
