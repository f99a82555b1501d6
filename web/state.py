"""web/'s own resources, typed: one ``WebState`` per app, at ``app.state.web``.

``build_web_state`` makes it when the app is built (``create_app`` in web/factory.py, or a test
app made of web's routes alone): the static files hashed once, the one Jinja renderer, the event
search over the store. The services the pages show (identity, live projections, the event log)
are app's, in its ``ServerState`` (app/state.py); web reads both, app never reads this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection

from netmon.web.assets import AssetCatalog
from netmon.web.search import EventSource, store_source
from netmon.web.templating import Renderer

TopLists = list[tuple[str, str, list[dict[str, Any]]]]


@dataclass(slots=True, kw_only=True)
class WebState:
    """What web's handlers share."""

    assets: AssetCatalog
    renderer: Renderer
    events: EventSource  # searches live segments and archives alike
    # The Analytics top lists per branch selection, with when they were made (web/analytics.py).
    top_lists: dict[tuple[str, ...], tuple[float, TopLists]] = field(default_factory=dict)


def build_web_state(data_dir: Path) -> WebState:
    """Hash the static files once, make the renderer and the event search over ``data_dir``."""
    assets = AssetCatalog()
    return WebState(assets=assets, renderer=Renderer(assets), events=store_source(data_dir))


def web_state(connection: HTTPConnection) -> WebState:
    """The WebState of the app serving ``connection``."""
    state: WebState = connection.app.state.web
    return state
