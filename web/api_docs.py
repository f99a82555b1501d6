"""``/docs``: Swagger UI over the OpenAPI document (which app/openapi.py builds and serves).

Swagger UI (swagger-ui-dist) is pinned through npm in web/package.json and served from /static
with an SRI hash like every asset. Public, like the document: it describes the API, not its data.
"""

from __future__ import annotations

import base64
import hashlib

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute

from netmon.app.access import SecuredRoute
from netmon.app.openapi import OPENAPI_PATH
from netmon.web.state import web_state

# Our own constant, not input: marked safe here so the template need not mark anything |safe.
DOCS_INIT = Markup(
    'window.addEventListener("DOMContentLoaded", function () {'
    f' SwaggerUIBundle({{url: "{OPENAPI_PATH}", dom_id: "#api"}}); }});'
)
# The page's one inline script is allowed by its hash; Swagger UI sets inline styles.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'sha256-"
    + base64.b64encode(hashlib.sha256(DOCS_INIT.encode()).digest()).decode()
    + "'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


async def docs_page(request: Request) -> HTMLResponse:
    """GET /docs: the Swagger UI page."""
    html = web_state(request).renderer.fragment("api_docs.html", init=DOCS_INIT)
    headers = {"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(html, headers=headers)


def api_docs_routes() -> list[BaseRoute]:
    """The docs page."""
    return [SecuredRoute("/docs", docs_page, access="public", methods=["GET"])]
