"""Acting on alerts: which alert a user may act on, the event an action becomes, its append.

An action is a fact like any other: it is appended to the log by this replica's writer, audited,
and reaches every replica's alert projection through the shared log. Shared by the JSON API
(app/alerts_api.py) and the Alerts page's buttons (web/alerts.py), so both refuse the same
things with the same codes:

- 404 ``unknown_alert``: no such alert, or one of a branch the caller may not see;
- 409 ``alert_resolved``: resolved alerts take notes only; 409 ``not_open``: acknowledged once;
- 422 ``invalid``: a body field out of its type or range (a severity that is none, say);
  ``severity_lower``, ``reason_missing``, ``until_past``, ``branch_required``, ``unknown_user``;
- 503 ``not_available``: a server without the alert projection or the event log.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal, TypedDict

import anyio
import msgspec
from starlette.requests import HTTPConnection

from netmon.app.auth.principals import audit_request, principal_of
from netmon.app.projections.alert_model import AlertEvent, AlertRecord, fold
from netmon.app.projections.alert_store import AlertStore
from netmon.app.state import server_state
from netmon.storage.contract.events import (
    SEVERITY_RANK,
    AlertAcknowledged,
    AlertAssigned,
    AlertEscalated,
    AlertNoteAdded,
    AlertResolved,
    AlertSuppressed,
    Severity,
    new_event_id,
)
from netmon.storage.names import InvalidNameError, validate_name

log = logging.getLogger(__name__)

MAX_NOTE = 2000
MAX_NAME = 256
Action = Literal["acknowledge", "resolve", "escalate", "assign", "note"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "resolve", "escalate", "assign", "note")
Note = Annotated[str, msgspec.Meta(max_length=MAX_NOTE)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]


class NoteBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of acknowledge and resolve (the note is optional) and of note (required)."""

    note: Note = ""


class EscalateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of escalate: the new severity (not below the alert's) and why."""

    severity: Severity
    note: Note = ""


class AssignBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of assign: a user name ("" unassigns)."""

    assignee: Name = ""


class SuppressBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of suppress: no alerts for (rule, entity or "*") in ``branch`` until ``until``.

    ``branch`` may be left out by a user of exactly one branch."""

    rule: Name
    entity: Name
    until: float
    reason: Note
    branch: Name = ""


ActionBody = NoteBody | EscalateBody | AssignBody
BODY_OF: dict[str, type[ActionBody]] = {
    "acknowledge": NoteBody,
    "resolve": NoteBody,
    "escalate": EscalateBody,
    "assign": AssignBody,
    "note": NoteBody,
}


class _Common(TypedDict):
    """The fields every action's event shares."""

    id: str
    ts: float
    branch: str
    alert_id: str
    by: str


class ActionRefused(Exception):
    """An action that is not carried out: the HTTP status, a stable code, a message."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def alert_store(connection: HTTPConnection) -> AlertStore:
    """This replica's alert projection (503 on a server built without one)."""
    live = server_state(connection).live
    if live is None or live.alerts is None:
        raise ActionRefused(503, "not_available", "The alert projection is not running here.")
    return live.alerts


def actor(connection: HTTPConnection) -> str:
    """Who acts: the principal's user name ("anonymous" in apps without identity)."""
    principal = principal_of(connection)
    return principal.username if principal is not None else "anonymous"


async def visible_alert(connection: HTTPConnection, alert_id: str) -> AlertRecord:
    """The alert, if it exists in a branch the caller may see; else 404 (either way)."""
    store = alert_store(connection)
    record = await anyio.to_thread.run_sync(store.get, alert_id)
    principal = principal_of(connection)
    if record is None or (principal is not None and not principal.can_see(record.branch)):
        raise ActionRefused(404, "unknown_alert", "No such alert (or not in a branch you may see).")
    return record


async def act(
    connection: HTTPConnection, alert_id: str, action: Action, body: ActionBody
) -> tuple[AlertRecord, AlertEvent]:
    """Carry out an action: check it, append its event, audit it; the alert as it now is."""
    record = await visible_alert(connection, alert_id)
    now = time.time()
    event = await _event_for(connection, record, action, body, now)
    await append(connection, event)
    await audit_action(connection, event, target=alert_id)
    log.info("alert %s: %s by %s", alert_id, action, actor(connection))
    return fold(record, event) or record, event


async def suppress(connection: HTTPConnection, body: SuppressBody) -> AlertSuppressed:
    """Suppress (rule, entity) in a branch until a time; the event appended and audited."""
    now = time.time()
    branch = _suppression_branch(connection, body.branch)
    if not body.reason.strip():
        raise ActionRefused(422, "reason_missing", "A suppression needs a reason (it is audited).")
    if not body.rule or not body.entity:
        raise ActionRefused(422, "invalid", "A suppression names a rule and an entity ('*').")
    if not body.until > now:
        raise ActionRefused(422, "until_past", "A suppression must end in the future.")
    event = AlertSuppressed(
        id=new_event_id(now),
        ts=now,
        branch=branch,
        rule=body.rule,
        entity=body.entity,
        until=body.until,
        by=actor(connection),
        reason=body.reason.strip(),
    )
    await append(connection, event)
    await audit_action(connection, event, target=f"{branch}/{body.rule}/{body.entity}")
    log.info("alerts %s/%s suppressed in %s by %s", body.rule, body.entity, branch, event.by)
    return event


async def append(connection: HTTPConnection, event: AlertEvent) -> None:
    """Append one event through this replica's writer (durable when this returns), and wait
    until this replica's alert store has it: a read right after an action sees the action."""
    state = server_state(connection)
    if state.event_log is None:
        raise ActionRefused(503, "not_available", "The event store is not available here yet.")
    if state.live is None:
        await anyio.to_thread.run_sync(state.event_log.append, [event])
        return
    async with state.live.alert_folded(event.id):
        await anyio.to_thread.run_sync(state.event_log.append, [event])


async def audit_action(connection: HTTPConnection, event: AlertEvent, target: str) -> None:
    """Record the action in the audit trail (a log line in apps without identity)."""
    detail = {
        key: value
        for key in ("note", "severity", "assignee", "until", "reason")
        if (value := getattr(event, key, None)) not in (None, "")
    }
    if server_state(connection).auth is None:
        log.info("audit (no trail here): alert.%s %s %s", type(event).__name__, target, detail)
        return
    await audit_request(connection, f"alert.{type(event).__name__}", target=target, detail=detail)


async def _event_for(
    connection: HTTPConnection, record: AlertRecord, action: Action, body: ActionBody, now: float
) -> AlertEvent:
    """The event ``action`` appends, or ActionRefused when it would change nothing."""
    common = _Common(
        id=new_event_id(now),
        ts=now,
        branch=record.branch,
        alert_id=record.alert_id,
        by=actor(connection),
    )
    if action == "note" and isinstance(body, NoteBody):
        if not body.note.strip():
            raise ActionRefused(422, "invalid", "A note needs some text.")
        return AlertNoteAdded(note=body.note, **common)
    if record.state == "resolved":
        raise ActionRefused(409, "alert_resolved", "This alert is already resolved.")
    if action == "acknowledge" and isinstance(body, NoteBody):
        if record.state != "open":
            raise ActionRefused(
                409, "not_open", f"Already acknowledged by {record.acknowledged_by}."
            )
        return AlertAcknowledged(note=body.note, **common)
    if action == "resolve" and isinstance(body, NoteBody):
        return AlertResolved(note=body.note, **common)
    if action == "escalate" and isinstance(body, EscalateBody):
        if SEVERITY_RANK[body.severity] < max(SEVERITY_RANK[record.severity], 1):
            raise ActionRefused(
                422, "severity_lower", f"The alert is {record.severity}; escalate to that or above."
            )
        return AlertEscalated(severity=body.severity, note=body.note, **common)
    if action == "assign" and isinstance(body, AssignBody):
        await _check_user(connection, body.assignee)
        return AlertAssigned(assignee=body.assignee, **common)
    raise ActionRefused(422, "invalid", f"{action} does not take this body.")


async def _check_user(connection: HTTPConnection, username: str) -> None:
    """An assignee must be a user (where this server has users)."""
    auth = server_state(connection).auth
    if username and auth is not None and await auth.users.get_by_username(username) is None:
        raise ActionRefused(422, "unknown_user", f"No user named {username[:64]!r}.")


def _suppression_branch(connection: HTTPConnection, asked: str) -> str:
    """The branch a suppression is for: asked, or the caller's only one; 404 if not theirs."""
    principal = principal_of(connection)
    if not asked:
        own = () if principal is None or principal.is_admin else principal.branches
        if len(own) != 1:
            raise ActionRefused(422, "branch_required", "Say which branch to suppress in.")
        return own[0]
    try:
        validate_name("branch", asked)
    except InvalidNameError as error:
        raise ActionRefused(422, "invalid", str(error)) from None
    if principal is not None and not principal.can_see(asked):
        raise ActionRefused(404, "unknown_branch", "No such branch (or not one you may see).")
    return asked
