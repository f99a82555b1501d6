"""The Events search: page, htmx fragments, detail drawer and streamed CSV/JSON exports.

Searches run in a worker thread (the store scan is blocking file I/O), scoped to the branches the
principal may see. Bad queries get the page back with the message and a 400, and a log line.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import anyio
import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from netmon.web.principals import allowed_branches, audit
from netmon.web.query import EventQuery, QueryError, parse_query
from netmon.web.search import (
    csv_lines,
    json_chunks,
    search_all,
    search_page,
    to_row,
)
from netmon.web.state import web_state

log = logging.getLogger(__name__)


async def events_page(request: Request) -> Response:
    """GET /events?q=...&cursor=...: the search page, or only its rows for htmx."""
    text = request.query_params.get("q", "").strip()
    cursor = request.query_params.get("cursor", "")
    target = request.headers.get("HX-Target", "")
    state = web_state(request)
    context: dict[str, Any] = {"q": text, "page": None, "error": "", "available": True}
    status = 200
    try:
        query = parse_query(text, time.time())
        branches = await allowed_branches(request)
        context["page"] = await anyio.to_thread.run_sync(
            search_page, state.events, query, branches, cursor
        )
    except QueryError as error:
        log.info("events search refused: %s (q=%r)", error, text[:200])
        context["error"] = str(error)
        status = 400
    template = {"results": "_events_results.html", "more": "_events_rows.html"}.get(
        target, "events.html"
    )
    return state.renderer.page(request, template, status=status, active="events", **context)


async def event_detail(request: Request) -> Response:
    """GET /events/{id}: every field of one event, for the drawer (or as a page)."""
    event_id = request.path_params["event_id"]
    if not (event_id.isalnum() and 12 <= len(event_id) <= 64):
        raise HTTPException(404, "No such event.")
    state = web_state(request)
    branches = await allowed_branches(request)
    event = await anyio.to_thread.run_sync(state.events.find, event_id, branches)
    if event is None:
        raise HTTPException(404, "No such event (or not in a branch you may see).")
    fields = sorted(_flatten(msgspec_to_builtins(event)).items())
    template = "_event_detail.html" if request.headers.get("HX-Request") else "event.html"
    return state.renderer.page(
        request, template, active="events", event=event, row=to_row(event), fields=fields
    )


def msgspec_to_builtins(event: Any) -> dict[str, Any]:
    """An event as plain data, with its type name."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    result["type"] = type(event).__name__
    return result


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested records as ``features.duration`` style keys, values as text."""
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}{index}."))
        return flat
    text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return {prefix.rstrip("."): text}


async def events_export(request: Request) -> Response:
    """GET /events.csv or /events.json?q=...: every match, streamed, audited."""
    fmt = request.path_params["fmt"]
    text = request.query_params.get("q", "").strip()
    try:
        query: EventQuery = parse_query(text, time.time())
    except QueryError as error:
        log.info("events export refused: %s (q=%r)", error, text[:200])
        raise HTTPException(400, str(error)) from None
    branches = await allowed_branches(request)
    await audit(request, "events.export", {"format": fmt, "query": text})
    rows = search_all(web_state(request).events, query, branches)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    disposition = f'attachment; filename="netmon-events-{stamp}.{fmt}"'
    if fmt == "csv":
        body: Any = csv_lines(rows)
        media = "text/csv; charset=utf-8"
    else:
        body = json_chunks(rows)
        media = "application/json"
    return StreamingResponse(body, media_type=media, headers={"Content-Disposition": disposition})
