"""Dashboard test fixtures: the smallest app that serves web/ over a real store under tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from app.settings import Settings, StoreSettings
from web.routes import install_web, web_exception_handlers, web_routes


def build_web_app(data_dir: Path) -> Starlette:
    """web/'s routes and error handlers alone (no auth middleware: tested by identity)."""
    app = Starlette(routes=web_routes(), exception_handlers=web_exception_handlers())
    app.state.settings = Settings(store=StoreSettings(data_dir=str(data_dir)))
    install_web(app)
    return app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
async def client(data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = build_web_app(data_dir)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"accept": "text/html"}
    ) as http:
        yield http
