"""The OpenAPI 3.1 document (``/api/v1/openapi.json``); web/api_docs.py shows it at ``/docs``.

Paths come from the router itself: every HTTP route of the JSON API (``/api/...``), the health
probes, ``/metrics`` and the event exports is walked, and each (path, method) must have an entry
in ``OPERATIONS`` — a route added without one makes ``build_document`` raise, and the test that
walks the router fails. Body and answer schemas are msgspec Structs turned into JSON Schema by
``msgspec.json.schema_components`` (request bodies are the very Structs the handlers decode).

Access: both the document and /docs are "public". They describe the API, not its data, and
every operation lists the role it needs (``x-netmon-access``), which is what a client author
wants to read before having an account.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from netmon.app.access import SecuredRoute
from netmon.app.alert_actions import AssignBody, EscalateBody, NoteBody, SuppressBody
from netmon.app.alerts_api import AlertList, AlertOut, Suppressed
from netmon.app.auth.admin import NewUser, PasswordReset, UserChange
from netmon.app.auth.routes import PasswordChange
from netmon.app.state import server_state
from netmon.storage.contract.versions import netmon_version
from netmon.storage.outbox import OutboxStatus

OPENAPI_PATH = "/api/v1/openapi.json"
PROBES = ("/healthz", "/readyz", "/metrics")
ACCESS_TEXT = {
    "public": "no login",
    "agent": "an enrolled agent (its key; see docs/transport.md)",
    "viewer": "a logged-in user (viewer or above; non-admins see their branches only)",
    "analyst": "an analyst or admin",
    "admin": "an admin",
}


# --- Answer shapes (request bodies are the handlers' own Structs, imported above) ---------


class ApiError(msgspec.Struct):
    """Every JSON error: a stable code and a human-readable detail."""

    error: str
    detail: str = ""


class TokenAnswer(msgspec.Struct):
    """RFC 6749 access token answer."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int


class TokenRequest(msgspec.Struct):
    """RFC 6749 section 4.3 password grant (form encoded)."""

    grant_type: Literal["password"]
    username: str
    password: str


class Me(msgspec.Struct):
    """The caller."""

    id: int
    username: str
    role: Literal["viewer", "analyst", "admin"]
    branches: list[str]
    via: Literal["token", "session"]
    expires_at: float
    csrf_token: str | None = None


class UserOut(msgspec.Struct):
    """A user as the API shows it (never a hash)."""

    id: int
    username: str
    display_name: str
    role: Literal["viewer", "analyst", "admin"]
    branches: list[str]
    created_at: float
    updated_at: float


class UserList(msgspec.Struct):
    users: list[UserOut]


class UserCreated(UserOut):
    """The new user; ``password`` only when the server generated it (shown once)."""

    password: str | None = None


class PasswordResetAnswer(msgspec.Struct):
    """``password`` only when the server generated it (shown once)."""

    status: Literal["reset"]
    password: str | None = None


class PasswordChanged(msgspec.Struct):
    status: str
    csrf_token: str | None = None


class AuditList(msgspec.Struct):
    """Audit records in sequence order, and the ``after`` cursor of the next page."""

    records: list[dict[str, Any]]
    next_after: int | None


class ProjectionAnswer(msgspec.Struct):
    """Summary and top answers: the replica, the events it has applied, the branches, the
    figures (per-minute and per-hour series, or top lists; see docs/replicas.md)."""

    replica: str
    events: int
    branches: list[str]


class AgentsAnswer(msgspec.Struct):
    """Every agent the caller may see: last seen, events/s, spool backlog, lag, connected."""

    replica: str
    events: int
    agents: list[dict[str, Any]]


class ArchiveList(msgspec.Struct):
    archives: list[dict[str, Any]]


class ArchiveImport(msgspec.Struct):
    """What an offline-archive upload stored."""

    batches: int
    stored_batches: int
    duplicate_batches: int


class Health(msgspec.Struct):
    status: Literal["ok"]
    replica: str


class Ready(msgspec.Struct):
    status: Literal["ready", "unavailable"]
    replica: str
    checks: list[str] = []
    failed: dict[str, str] = {}


# --- Operations ----------------------------------------------------------------------------

Body = tuple[str, type] | None  # (media type, Struct)


class Op(msgspec.Struct, frozen=True):
    """What the router cannot tell: a summary, the body, the answer, query parameters."""

    summary: str
    answer: type | None = None  # JSON Struct of the 2xx answer
    body: Body = None
    media: str = "application/json"  # of the 2xx answer
    status: int = 200
    query: tuple[tuple[str, str], ...] = ()  # (name, description)
    errors: tuple[tuple[int, str], ...] = ()  # (status, when) beyond 400/401/403


BRANCH = ("branch", "restrict to this branch (repeatable); non-admins get their own at most")
ALERT_ACTION_ERRORS = (
    (404, "no such alert in the caller's branches"),
    (409, "alert_resolved (only notes are taken) or not_open (acknowledged already)"),
    (422, "a body field out of range: severity_lower, unknown_user, invalid"),
)
OPERATIONS: dict[tuple[str, str], Op] = {
    ("/healthz", "GET"): Op("Liveness: the process answers", Health),
    ("/readyz", "GET"): Op("Readiness: the event store and SQLite are usable (else 503)", Ready),
    ("/metrics", "GET"): Op(
        "Prometheus metrics (bearer server.metrics_token, or loopback when unset)",
        media="text/plain",
    ),
    ("/api/v1/openapi.json", "GET"): Op("This document", media="application/json"),
    ("/api/v1/auth/token", "POST"): Op(
        "OAuth2 password grant: a Bearer access token",
        TokenAnswer,
        body=("application/x-www-form-urlencoded", TokenRequest),
    ),
    ("/api/v1/auth/logout", "POST"): Op("Revoke the presented token or session", status=204),
    ("/api/v1/auth/me", "GET"): Op("Who the caller is", Me),
    ("/api/v1/auth/password", "POST"): Op(
        "Change one's own password (revokes tokens and sessions)",
        PasswordChanged,
        body=("application/json", PasswordChange),
    ),
    ("/api/v1/users", "GET"): Op("List users", UserList),
    ("/api/v1/users", "POST"): Op(
        "Create a user", UserCreated, body=("application/json", NewUser), status=201
    ),
    ("/api/v1/users/{user_id}", "GET"): Op("One user", UserOut),
    ("/api/v1/users/{user_id}", "PATCH"): Op(
        "Change role, branches or display name", UserOut, body=("application/json", UserChange)
    ),
    ("/api/v1/users/{user_id}", "DELETE"): Op("Delete a user", status=204),
    ("/api/v1/users/{user_id}/password", "POST"): Op(
        "Reset a user's password (generated when absent, shown once)",
        PasswordResetAnswer,
        body=("application/json", PasswordReset),
    ),
    ("/api/v1/audit", "GET"): Op(
        "The audit trail, in sequence order",
        AuditList,
        query=(
            ("actor", "only records of this actor"),
            ("action", "only this action, e.g. user.created"),
            ("target", "only records about this target"),
            ("outcome", "only this outcome"),
            ("since", "UNIX time, inclusive"),
            ("until", "UNIX time, exclusive"),
            ("after", "next_after of the previous page"),
            ("limit", "records per page"),
        ),
    ),
    ("/api/v1/ingest/archive", "POST"): Op(
        "Upload an agent's offline archive (hourly ZIP of sealed batches)",
        ArchiveImport,
        body=("application/zip", bytes),
    ),
    ("/api/v1/summary", "GET"): Op(
        "Totals per branch (projections)", ProjectionAnswer, query=(BRANCH,)
    ),
    ("/api/v1/summary/top", "GET"): Op(
        "Top talkers, ports, domains over the last hours",
        ProjectionAnswer,
        query=(BRANCH, ("hours", "1-168, default 24"), ("k", "entries per list")),
    ),
    ("/api/v1/summary/agents", "GET"): Op(
        "Agents: last seen, connected, spool backlog", AgentsAnswer, query=(BRANCH,)
    ),
    ("/api/v1/alerts", "GET"): Op(
        "Alerts of any age from the alert projection: filters, sort, cursor pages, counts",
        AlertList,
        query=(
            ("state", "open, acknowledged, suppressed, resolved, unresolved or any (default)"),
            ("severity", "the lowest severity shown: low, medium, high or critical"),
            ("rule", "only this rule"),
            ("entity", "only this entity (an IP, branch:NAME, ...)"),
            BRANCH,
            ("since", "last seen at or after (UNIX seconds)"),
            ("until", "last seen before (UNIX seconds)"),
            ("sort", "severity (default), last_seen or count; highest first"),
            ("cursor", "next_cursor of the previous page"),
            ("limit", "alerts per page, 1-500 (default 50)"),
        ),
    ),
    ("/api/v1/alerts/{alert_id}", "GET"): Op(
        "One alert", AlertOut, errors=((404, "no such alert in the caller's branches"),)
    ),
    ("/api/v1/alerts/{alert_id}/acknowledge", "POST"): Op(
        "Acknowledge an open alert (appends AlertAcknowledged)",
        AlertOut,
        body=("application/json", NoteBody),
        errors=ALERT_ACTION_ERRORS,
    ),
    ("/api/v1/alerts/{alert_id}/resolve", "POST"): Op(
        "Resolve an alert (appends AlertResolved)",
        AlertOut,
        body=("application/json", NoteBody),
        errors=ALERT_ACTION_ERRORS,
    ),
    ("/api/v1/alerts/{alert_id}/escalate", "POST"): Op(
        "Raise an alert's severity (appends AlertEscalated)",
        AlertOut,
        body=("application/json", EscalateBody),
        errors=ALERT_ACTION_ERRORS,
    ),
    ("/api/v1/alerts/{alert_id}/assign", "POST"): Op(
        "Give an alert to a user, or to nobody (appends AlertAssigned)",
        AlertOut,
        body=("application/json", AssignBody),
        errors=ALERT_ACTION_ERRORS,
    ),
    ("/api/v1/alerts/{alert_id}/note", "POST"): Op(
        "Write a note on an alert, resolved ones too (appends AlertNoteAdded)",
        AlertOut,
        body=("application/json", NoteBody),
        errors=ALERT_ACTION_ERRORS[:1] + ALERT_ACTION_ERRORS[2:],
    ),
    ("/api/v1/alerts/suppress", "POST"): Op(
        "No alerts for a rule and entity ('*': all) in a branch until a time (AlertSuppressed)",
        Suppressed,
        body=("application/json", SuppressBody),
        status=201,
        errors=(
            (404, "a branch the caller may not see"),
            (422, "reason_missing, until_past, branch_required or a field out of range"),
        ),
    ),
    ("/api/v1/archives", "GET"): Op("Archives the caller may see", ArchiveList, query=(BRANCH,)),
    ("/api/v1/notifications", "GET"): Op(
        "Notification delivery: counts by state, the newest failing ones", OutboxStatus
    ),
    ("/api/v1/archives/{name}", "GET"): Op(
        "Download one archive (audited)", media="application/zip"
    ),
    ("/events.{fmt}", "GET"): Op(
        "Export the events matching a search (fmt: csv, json or ndjson)",
        media="application/x-ndjson",
        query=(("q", "search expression (docs/dashboard.md)"), BRANCH),
    ),
}


def documented_routes(routes: list[BaseRoute]) -> list[tuple[str, str, SecuredRoute]]:
    """(OpenAPI path, method, route) of every HTTP route the document must cover."""
    found: list[tuple[str, str, SecuredRoute]] = []
    for route in routes:
        # Every route is a SecuredRoute (the access-matrix test enforces it).
        if not isinstance(route, SecuredRoute):
            continue
        path = openapi_path(route.path)
        if not (path.startswith("/api/") or path in PROBES or path.startswith("/events.")):
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found.append((path, method, route))
    return found


def openapi_path(path: str) -> str:
    """Starlette's ``{id:int}`` becomes OpenAPI's ``{id}``."""
    return re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", path)


def build_document(routes: list[BaseRoute], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``; KeyError names an undocumented route."""
    structs = {op.answer for op in OPERATIONS.values() if op.answer is not None}
    structs |= {op.body[1] for op in OPERATIONS.values() if op.body and op.body[1] is not bytes}
    structs.add(ApiError)
    ordered = sorted(structs, key=lambda s: s.__name__)
    refs, components = msgspec.json.schema_components(
        ordered, ref_template="#/components/schemas/{name}"
    )
    ref_of = dict(zip(ordered, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for path, method, route in documented_routes(routes):
        op = OPERATIONS.get((path, method))
        if op is None:
            raise KeyError(f"{method} {path} has no entry in app/openapi.py OPERATIONS")
        paths.setdefault(path, {})[method.lower()] = _operation(path, method, route, op, ref_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Netmon API",
            "version": version,
            "description": "Self-hosted network security monitor. Authenticate with a Bearer "
            "token from /api/v1/auth/token or a browser session; see docs/security.md.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "session": {"type": "apiKey", "in": "cookie", "name": "netmon_session"},
            },
        },
    }


def _operation(
    path: str, method: str, route: SecuredRoute, op: Op, ref_of: dict[type, Any]
) -> dict[str, Any]:
    access = route.access
    operation: dict[str, Any] = {
        "summary": op.summary,
        "tags": [_tag(path)],
        "description": f"Access: {ACCESS_TEXT[access]}.",
        "operationId": f"{method.lower()}_{route.name}",
        "x-netmon-access": access,
        "responses": {str(op.status): _answer(op, ref_of)},
    }
    if access in ("viewer", "analyst", "admin"):
        operation["security"] = [{"bearer": []}, {"session": []}]
        operation["responses"]["401"] = _error("not logged in", ref_of)
        operation["responses"]["403"] = _error(f"needs {access} or the branch", ref_of)
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "description": text,
         "schema": {"type": "string"}}
        for name, text in op.query
    ]  # fmt: skip
    if parameters:
        operation["parameters"] = parameters
        operation["responses"]["400"] = _error("a bad parameter", ref_of)
    for status, when in op.errors:
        operation["responses"][str(status)] = _error(when, ref_of)
    if op.body is not None:
        media, struct = op.body
        schema = {"type": "string", "format": "binary"} if struct is bytes else ref_of[struct]
        operation["requestBody"] = {"required": True, "content": {media: {"schema": schema}}}
        operation["responses"].setdefault("400", _error("an unreadable body", ref_of))
    return operation


def _tag(path: str) -> str:
    """Group operations by area: /api/v1/users/{id} -> "users", /healthz -> "operations"."""
    if not path.startswith("/api/v1/"):
        return "events" if path.startswith("/events") else "operations"
    return path.split("/")[3].removesuffix(".json").replace("openapi", "operations")


def _answer(op: Op, ref_of: dict[type, Any]) -> dict[str, Any]:
    if op.status == 204:
        return {"description": "done, no content"}
    schema: dict[str, Any] = ref_of[op.answer] if op.answer else {}
    if not schema and op.media.startswith("application/zip"):
        schema = {"type": "string", "format": "binary"}
    elif not schema and op.media.startswith("text/"):
        schema = {"type": "string"}
    return {"description": "success", "content": {op.media: {"schema": schema}}}


def _error(text: str, ref_of: dict[type, Any]) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": ref_of[ApiError]}}}


async def openapi_document(request: Request) -> JSONResponse:
    """GET /api/v1/openapi.json: built once per app from its router."""
    state = server_state(request)
    if state.openapi is None:
        state.openapi = build_document(request.app.routes, netmon_version())
    return JSONResponse(state.openapi)


def openapi_routes() -> list[SecuredRoute]:
    """The document (public; see the module docstring). Its page, /docs, is web's
    (web/api_docs.py)."""
    return [SecuredRoute(OPENAPI_PATH, openapi_document, access="public", methods=["GET"])]
