"""The admin JSON API: users (create, change, reset password, delete) and the audit trail."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from netmon.app.access import SecuredRoute
from netmon.app.auth.context import AuthContext
from netmon.app.auth.forms import BadInput, bad_input_response, check_text, json_error, read_json
from netmon.app.auth.passwords import MAX_PASSWORD_LENGTH, PasswordPolicyError, generate_password
from netmon.app.auth.principals import audit_request
from netmon.app.state import opened, server_state
from netmon.storage.audit import AuditQuery
from netmon.storage.names import InvalidNameError, validate_name
from netmon.storage.users import LastAdminError, Role, User, UserExistsError

MAX_TEXT = 16_384  # usernames and display names: long enough for anything real, bounded
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Branches = Annotated[list[str], msgspec.Meta(max_length=1000)]


class NewUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /api/v1/users; without ``password`` one is generated and returned once."""

    username: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    role: Role
    branches: Branches = []
    display_name: Text = ""
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD_LENGTH)] | None = None


class UserChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of PATCH /api/v1/users/{id}; absent fields stay as they are."""

    role: Role | None = None
    branches: Branches | None = None
    display_name: Text | None = None


class PasswordReset(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /api/v1/users/{id}/password; without ``password`` one is generated."""

    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD_LENGTH)] | None = None


def user_json(user: User) -> dict[str, Any]:
    """A user as the API shows it (no hash, no token generation)."""
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "branches": list(user.branches),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def _branches(values: list[str]) -> tuple[str, ...]:
    try:
        return tuple(validate_name("branch", value) for value in values)
    except InvalidNameError as error:
        raise BadInput(str(error)) from None


def _user_id(request: Request) -> int:
    """The {user_id} path parameter; ids beyond SQLite's range cannot exist (0 matches none)."""
    user_id: int = request.path_params["user_id"]
    return user_id if user_id <= 2**63 - 1 else 0


def _auth(request: Request) -> AuthContext:
    return opened(server_state(request).auth, "the identity store")


async def list_users(request: Request) -> Response:
    """GET /api/v1/users."""
    return JSONResponse({"users": [user_json(user) for user in await _auth(request).users.all()]})


async def create_user(request: Request) -> Response:
    """POST /api/v1/users."""
    auth = _auth(request)
    try:
        new = await read_json(request, NewUser)
        check_text("username", new.username)
        check_text("display_name", new.display_name)
        branches = _branches(new.branches)
        password = new.password if new.password is not None else generate_password()
        auth.passwords.check_policy(password, new.username)
    except BadInput as error:
        return bad_input_response(request, error)
    except PasswordPolicyError as error:
        return bad_input_response(request, BadInput(str(error)))
    try:
        user = await auth.users.create(
            new.username, await auth.passwords.hash(password), new.role, branches, new.display_name
        )
    except UserExistsError:
        return json_error(409, "conflict", "a user with that username already exists")
    await audit_request(
        request,
        "user.created",
        target=user.username,
        detail={"id": user.id, "role": user.role, "branches": list(user.branches)},
    )
    body = user_json(user)
    if new.password is None:
        body["password"] = password  # shown this once; only its hash is kept
    return JSONResponse(body, 201, headers={"Cache-Control": "no-store"})


async def get_user(request: Request) -> Response:
    """GET /api/v1/users/{user_id}."""
    user = await _auth(request).users.get(_user_id(request))
    if user is None:
        return json_error(404, "not_found", "no such user")
    return JSONResponse(user_json(user))


async def update_user(request: Request) -> Response:
    """PATCH /api/v1/users/{user_id}: role, branches, display name."""
    auth = _auth(request)
    try:
        change = await read_json(request, UserChange)
        if change.display_name is not None:
            check_text("display_name", change.display_name)
        branches = None if change.branches is None else _branches(change.branches)
    except BadInput as error:
        return bad_input_response(request, error)
    try:
        user = await auth.users.update(
            _user_id(request),
            role=change.role,
            branches=branches,
            display_name=change.display_name,
        )
    except LastAdminError as error:
        return json_error(409, "conflict", str(error))
    if user is None:
        return json_error(404, "not_found", "no such user")
    changed = {k: v for k, v in msgspec.structs.asdict(change).items() if v is not None}
    await audit_request(
        request, "user.updated", target=user.username, detail={"id": user.id, **changed}
    )
    return JSONResponse(user_json(user))


async def reset_password(request: Request) -> Response:
    """POST /api/v1/users/{user_id}/password: set (or generate) a password; revokes tokens."""
    auth = _auth(request)
    user = await auth.users.get(_user_id(request))
    if user is None:
        return json_error(404, "not_found", "no such user")
    try:
        reset = await read_json(request, PasswordReset)
        password = reset.password if reset.password is not None else generate_password()
        auth.passwords.check_policy(password, user.username)
    except BadInput as error:
        return bad_input_response(request, error)
    except PasswordPolicyError as error:
        return bad_input_response(request, BadInput(str(error)))
    if await auth.users.set_password(user.id, await auth.passwords.hash(password)) is None:
        return json_error(404, "not_found", "no such user")
    await audit_request(
        request, "user.password_reset", target=user.username, detail={"id": user.id}
    )
    body: dict[str, Any] = {"status": "reset"}
    if reset.password is None:
        body["password"] = password
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def delete_user(request: Request) -> Response:
    """DELETE /api/v1/users/{user_id}: the user's sessions end, their tokens stop working."""
    auth = _auth(request)
    user = await auth.users.get(_user_id(request))
    if user is None:
        return json_error(404, "not_found", "no such user")
    try:
        await auth.users.delete(user.id)
    except LastAdminError as error:
        return json_error(409, "conflict", str(error))
    await audit_request(request, "user.deleted", target=user.username, detail={"id": user.id})
    return Response(status_code=204)


def _audit_query(params: Any) -> AuditQuery:
    raw: dict[str, Any] = {}
    for name in ("actor", "action", "target", "outcome", "since", "until", "limit"):
        if name in params:
            raw[name] = params[name]
    if "after" in params:
        raw["after_seq"] = params["after"]
    try:
        # strict=False: query strings are text; "since=1700000000" becomes a float.
        return msgspec.convert(raw, AuditQuery, strict=False)
    except msgspec.ValidationError as error:
        raise BadInput(f"invalid query: {error}") from None


async def list_audit(request: Request) -> Response:
    """GET /api/v1/audit?actor=&action=&target=&outcome=&since=&until=&after=&limit=."""
    try:
        query = _audit_query(request.query_params)
    except BadInput as error:
        return bad_input_response(request, error)
    records = await _auth(request).audit.query(query)
    return JSONResponse(
        {
            "records": msgspec.to_builtins(records),
            "next_after": records[-1].seq if records else query.after_seq,
        }
    )


def admin_routes() -> list[BaseRoute]:
    """The admin API routes (all "admin")."""
    return [
        SecuredRoute("/api/v1/users", list_users, methods=["GET"], access="admin"),
        SecuredRoute("/api/v1/users", create_user, methods=["POST"], access="admin"),
        SecuredRoute("/api/v1/users/{user_id:int}", get_user, methods=["GET"], access="admin"),
        SecuredRoute("/api/v1/users/{user_id:int}", update_user, methods=["PATCH"], access="admin"),
        SecuredRoute(
            "/api/v1/users/{user_id:int}", delete_user, methods=["DELETE"], access="admin"
        ),
        SecuredRoute(
            "/api/v1/users/{user_id:int}/password", reset_password, methods=["POST"], access="admin"
        ),
        SecuredRoute("/api/v1/audit", list_audit, methods=["GET"], access="admin"),
    ]
