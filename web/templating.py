"""Jinja2 for the dashboard: one environment, autoescape always on, and the filters pages share.

It renders every template of the server: the pages, the login page (web/login.py) and the live
feed's fragments (app/live.py gets a ``Renderer`` as its ``FragmentRenderer`` from
web/factory.py).

Everything a flow carries (domains, details, user names) is attacker-controlled text, so no
template marks any of it ``|safe``; escaping is the default for every extension, including
partials rendered for WebSocket pushes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from netmon.app.auth.principals import principal_of
from netmon.web.assets import AssetCatalog

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# What the pages may load: only our own origin. No inline script, so an injected <script> or
# onerror= attribute would not run even if escaping failed somewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

NAV = (
    ("live", "Live", "/"),
    ("alerts", "Alerts", "/alerts"),
    ("events", "Events", "/events"),
    ("analytics", "Analytics", "/analytics"),
    ("windows", "Windows", "/windows"),
    ("model", "Model", "/model"),
    ("archives", "Archives", "/archives"),
    ("admin", "Admin", "/admin"),
)

PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}

# What a page may set in place of the context every page gets: the login page shows the
# username typed and carries its own CSRF token (there is no session yet).
PAGE_MAY_SET = frozenset({"username", "csrf_token"})


def format_time(ts: float | None) -> str:
    """UTC time as ``2026-11-21 22:30:01``; the wall screen and exports use UTC throughout."""
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_bytes(count: int | float | None) -> str:
    """1536 -> ``1.5 KB``."""
    value = float(count or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def protocol_name(number: int | None) -> str:
    """6 -> ``TCP``; unknown numbers stay numbers."""
    return PROTOCOLS.get(number or 0, str(number or ""))


def build_environment() -> jinja2.Environment:
    """The dashboard's Jinja2 environment."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # for every template name, not only *.html
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_time
    env.filters["size"] = format_bytes
    env.filters["proto"] = protocol_name
    env.globals["NAV"] = NAV
    return env


def csrf_token(request: Request) -> str:
    """The session's CSRF token for ``hx-headers`` (empty until the user is logged in, and for
    a bearer token, which needs none)."""
    principal = principal_of(request)
    return principal.csrf_token if principal is not None else ""


class Renderer:
    """Renders pages and partials with the context every page needs."""

    def __init__(self, assets: AssetCatalog) -> None:
        self.env = build_environment()
        self.env.globals["script"] = assets.script
        self.env.globals["stylesheet"] = assets.stylesheet
        self.env.globals["asset_url"] = assets.url

    def fragment(self, name: str, **context: Any) -> str:
        """A partial as a string (for WebSocket pushes and tests)."""
        return self.env.get_template(name).render(**context)

    def page(
        self, request: Request, name: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A full page (or, for an htmx request, the same template; blocks decide)."""
        principal = principal_of(request)
        base = {
            "request": request,
            "principal": principal,
            "username": principal.username if principal is not None else "",
            "csrf_token": csrf_token(request),
            "kiosk": request.query_params.get("kiosk") == "1",
            "htmx": request.headers.get("HX-Request") == "true",
            "active": context.pop("active", ""),
        }
        clash = (base.keys() & context.keys()) - PAGE_MAY_SET
        if clash:
            raise TypeError(f"{name}: the context sets {sorted(clash)}, which every page gets")
        html = self.env.get_template(name).render({**base, **context})
        headers = {
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }
        return HTMLResponse(html, status_code=status, headers=headers)
