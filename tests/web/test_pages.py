"""Every page renders, with an empty state for a back-end this server does not have."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from netmon.app.access import SecuredRoute
from netmon.web.errors import exception_handlers
from netmon.web.state import build_web_state

PAGES = ["/", "/analytics", "/admin"]
EMPTY = [
    ("/alerts", "Alerts not available yet"),  # the alert projection runs with the live service
    ("/archives", "No archives yet"),
    ("/windows", "No window summaries yet"),
    ("/model", "No model evaluation yet"),
]


@pytest.mark.parametrize("path", PAGES)
async def test_page_without_its_back_end_says_not_available(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert "not available yet" in response.text
    assert 'aria-current="page"' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(("path", "title"), EMPTY)
async def test_page_with_nothing_to_show_says_so(
    client: httpx.AsyncClient, path: str, title: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200 and title in response.text


async def test_kiosk_mode_drops_the_chrome(client: httpx.AsyncClient) -> None:
    normal = await client.get("/")
    kiosk = await client.get("/?kiosk=1")
    assert 'class="topbar"' in normal.text
    assert 'class="topbar"' not in kiosk.text and 'class="kiosk"' in kiosk.text


async def test_errors_are_pages_for_browsers_and_json_for_scripts(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/no/such/page")
    assert page.status_code == 404 and "Page not found" in page.text and "<nav" in page.text
    api = await client.get("/api/v1/nothing", headers={"accept": "application/json"})
    assert api.status_code == 404 and api.json()["error"] == "Page not found"


def _failing_app(data_dir: Path) -> Starlette:
    async def boom(request: Request) -> Response:
        raise RuntimeError("secret internal detail /srv/netmon/app.py line 42")

    async def teapot(request: Request) -> Response:
        raise HTTPException(418, "short and stout")

    routes = [
        SecuredRoute("/boom", boom, access="public"),
        SecuredRoute("/teapot", teapot, access="public"),
    ]
    app = Starlette(routes=routes, exception_handlers=exception_handlers())
    app.state.web = build_web_state(data_dir)  # the error pages' renderer
    return app


async def test_an_unexpected_error_shows_a_reference_never_a_traceback(
    caplog: pytest.LogCaptureFixture, data_dir: Path
) -> None:
    transport = httpx.ASGITransport(app=_failing_app(data_dir), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/boom", headers={"accept": "text/html"})
        other = await http.get("/teapot", headers={"accept": "text/html"})
    assert response.status_code == 500
    assert "Traceback" not in response.text and "secret internal detail" not in response.text
    ref = re.search(r"<code>([0-9a-f]{8})</code>", response.text)
    assert ref is not None
    logged = [r for r in caplog.records if r.name == "netmon.web.errors"]
    assert logged and ref.group(1) in logged[0].getMessage() and logged[0].exc_info
    assert other.status_code == 418 and "short and stout" in other.text


async def test_live_cards_without_projections_are_empty(client: httpx.AsyncClient) -> None:
    response = await client.get("/live/cards", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert 'id="live-cards"' in response.text and 'class="card"' not in response.text
