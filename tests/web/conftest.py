"""Dashboard test fixtures: the smallest app that serves web/ over a real store under tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from starlette.applications import Starlette

from netmon.app.settings import Settings, StoreSettings
from netmon.app.state import ServerState
from netmon.web.routes import web_exception_handlers, web_routes
from netmon.web.state import build_web_state
from tests.web.harness import CHROMIUM, CHROMIUM_ARGS, NetmonServer


def build_web_app(data_dir: Path) -> Starlette:
    """web/'s routes and error handlers alone (no auth middleware: tested by identity; no
    lifespan: no identity store, event log or live service unless a test sets one)."""
    app = Starlette(routes=web_routes(), exception_handlers=web_exception_handlers())
    app.state.server = ServerState(settings=Settings(store=StoreSettings(data_dir=str(data_dir))))
    app.state.web = build_web_state(data_dir)
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


# --- Browser tests: a real server subprocess and Debian's Chromium --------------------------

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"


@pytest.fixture(scope="session")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model as `netmon model build-default --no-real-tools` builds it.

    Built once per session, and only when a test runs the analysis worker. Crafted traffic only:
    the alerts these tests need come from critical detections, not from the classifier, and the
    crafted corpus trains in ~5 s where the full one takes 15-35 s on the shared machine.
    """
    # Imported here: scikit-learn would otherwise load at collection for every web test.
    from netmon.app.analysis.corpus.build import build_default_model

    path = tmp_path_factory.mktemp("model") / "model.joblib"
    build_default_model(path, real_tools=False, progress=False)
    return path


@pytest.fixture(scope="module")
def netmon_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetmonServer]:
    server = NetmonServer(tmp_path_factory.mktemp("netmon-web"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Module scope, not session: sync Playwright keeps an event loop running in this thread, which
# the asyncio tests of other modules could not start under.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs the chromium package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


@pytest.fixture
def dialogs(context: BrowserContext) -> list[str]:
    """Every JavaScript dialog any page of the context opened (an XSS would open one)."""
    opened: list[str] = []

    def on_page(page: Page) -> None:
        page.on("dialog", lambda dialog: (opened.append(dialog.message), dialog.dismiss()))

    context.on("page", on_page)
    return opened


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/web/ (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
