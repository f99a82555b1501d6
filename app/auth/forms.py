"""Reading request bodies with a size cap: OAuth2/login forms and JSON documents.

Bad input raises ``BadInput`` with a message for the client; the caller logs it and answers
400 (or 413). Nothing is stored before a body has been fully validated.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar
from urllib.parse import parse_qs

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
T = TypeVar("T")


class BadInput(Exception):
    """The request body cannot be used; ``status`` is 400 or 413."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadInput(f"body too large (limit {limit} bytes)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(f"body too large (limit {limit} bytes)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as a dict (the first value of each field)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise BadInput("expected Content-Type application/x-www-form-urlencoded")
    body = await read_body(request)
    try:
        fields = parse_qs(
            body.decode("ascii"),
            keep_blank_values=True,
            max_num_fields=100,
            encoding="utf-8",
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise BadInput(f"malformed form body: {error}") from None
    return {name: values[0] for name, values in fields.items()}


async def read_json(request: Request, kind: type[T]) -> T:
    """A JSON body decoded and validated into ``kind`` (a msgspec Struct)."""
    body = await read_body(request)
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise BadInput(f"invalid request body: {error}") from None
    except msgspec.DecodeError as error:
        raise BadInput(f"body is not valid JSON: {error}") from None


def check_text(field: str, value: str) -> str:
    """Refuse control characters (they break logs and terminals); everything else is literal."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise BadInput(f"{field} must not contain control characters")
    return value


def bad_input_response(request: Request, error: BadInput) -> JSONResponse:
    """The 400/413 answer for bad input, with a log line saying what was refused."""
    log.warning("%s %s: bad input: %s", request.method, request.url.path, error)
    return JSONResponse({"error": "bad_request", "detail": str(error)}, error.status)


def json_error(status: int, error: str, detail: str, **headers: Any) -> JSONResponse:
    """A JSON error document ``{"error": ..., "detail": ...}``."""
    return JSONResponse({"error": error, "detail": detail}, status, headers=headers or None)
