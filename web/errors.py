"""Friendly error pages: a browser never sees a traceback, a script gets a small JSON body.

One mapping for ``create_app(exception_handlers=...)``. The traceback still reaches the log
(an unexpected error is logged here with an id the page shows, so an operator can find it).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from netmon.web.state import web_state

log = logging.getLogger(__name__)

TITLES = {
    400: "That request could not be understood",
    401: "Please log in",
    403: "Not allowed",
    404: "Page not found",
    405: "Method not allowed",
    413: "Too large",
    429: "Too many requests",
}


def wants_html(request: Request) -> bool:
    """Browsers get pages; API clients, agents and htmx fragments get JSON or short text."""
    if request.url.path.startswith(("/api/", "/ws/")):
        return False
    return (
        "text/html" in request.headers.get("accept", "")
        or request.headers.get("HX-Request") == "true"
    )


def error_page(request: Request, status: int, title: str, message: str, ref: str = "") -> Response:
    """The error page (or JSON body) for one status."""
    if not wants_html(request):
        body: dict[str, Any] = {"error": title, "detail": message}
        if ref:
            body["ref"] = ref
        return JSONResponse(body, status_code=status)
    return web_state(request).renderer.page(
        request, "error.html", status=status, title=title, message=message, ref=ref, code=status
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """Any HTTPException (404, 405, 400 from a handler...)."""
    assert isinstance(exc, HTTPException)
    title = TITLES.get(exc.status_code, "Something went wrong")
    detail = exc.detail if isinstance(exc.detail, str) else title
    response = error_page(request, exc.status_code, title, detail)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected exception: log it with a reference the page shows, never the traceback."""
    ref = secrets.token_hex(4)
    log.error(
        "unhandled error ref=%s on %s %s", ref, request.method, request.url.path, exc_info=exc
    )
    message = "The server hit an unexpected error. It has been logged; quote the reference below."
    return error_page(request, 500, "Something went wrong", message, ref)


def exception_handlers() -> Mapping[Any, Callable[..., Any]]:
    """The mapping ``create_app`` passes to Starlette."""
    return {HTTPException: http_error, Exception: server_error}
