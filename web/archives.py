"""Archives in the product: ``GET /api/v1/archives`` lists them, ``GET /api/v1/archives/NAME``
streams one (HTTP Range supported, for resumed downloads); the Archives page lists them too
(web/pages.py). The archives themselves are archive/'s (layout, ZIP files, manager).

Access: listing needs "viewer" (it shows only sizes, dates and counts), downloading "analyst"
(an archive holds every raw event of its branch and date). Both are branch scoped: a non-admin
sees and fetches only archives of their own branches. Every download request is audited
("archive.download"), refused ones too, with the reason.

The name in the URL is matched by a ``path`` parameter on purpose: ``..``, absolute paths and
encoded slashes (``%2F``, ``%2e%2e``, which the server decodes before routing) reach this
handler, get a 404 and an audit record, instead of falling through to the router unaudited.
A name becomes a path only after it parsed as ``YYYY-MM-DD_BRANCH.zip``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from netmon.app.access import SecuredRoute
from netmon.app.auth.principals import audit_request, principal_of
from netmon.app.state import server_state
from netmon.archive.layout import (
    InvalidArchiveNameError,
    PartitionKey,
    archive_path,
    archived_partitions,
    parse_archive_name,
)
from netmon.archive.zipfiles import ArchiveError, Manifest, read_manifest

log = logging.getLogger("netmon.archive")  # one logger for every archive line (archive/ too)

AUDIT_ACTION = "archive.download"


def archive_routes() -> list[SecuredRoute]:
    """The archive API routes, for ``create_app``."""
    return [
        SecuredRoute("/api/v1/archives", list_archives, methods=["GET"], access="viewer"),
        SecuredRoute(
            "/api/v1/archives/{name:path}", download_archive, methods=["GET"], access="analyst"
        ),
    ]


@functools.lru_cache(maxsize=4096)
def _manifest(path: Path, mtime_ns: int, size: int) -> Manifest:
    """A manifest, cached per file version (an archive is rewritten when late data comes)."""
    return read_manifest(path)


def archive_listing(data_dir: Path, branches: frozenset[str] | None) -> list[dict[str, Any]]:
    """One entry per archive of the given branches (None = all), oldest first."""
    entries = []
    for key in archived_partitions(data_dir):
        if branches is not None and key.branch not in branches:
            continue
        path = archive_path(data_dir, key)
        try:
            stat = path.stat()
            manifest = _manifest(path, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            continue  # deleted by retention since it was listed
        except ArchiveError as error:
            log.error("listing %s: %s", path.name, error)
            entries.append(_entry(key, stat.st_size, None, str(error)))
            continue
        entries.append(_entry(key, stat.st_size, manifest, ""))
    return entries


def _entry(key: PartitionKey, size: int, manifest: Manifest | None, error: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": key.archive_name,
        "date": key.day.isoformat(),
        "branch": key.branch,
        "size": size,
        "url": f"/api/v1/archives/{key.archive_name}",
    }
    if manifest is not None:
        entry |= {
            "events": manifest.events,
            "malformed": manifest.malformed,
            "first_ts": manifest.first_ts,
            "last_ts": manifest.last_ts,
            "segments": sum(1 for m in manifest.members if m.name.endswith(".jsonl")),
            "created_at": manifest.created_at,
        }
    if error:
        entry["error"] = error
    return entry


async def list_archives(request: Request) -> JSONResponse:
    """GET /api/v1/archives[?branch=NAME]: the archives the caller may see."""
    principal = principal_of(request)
    assert principal is not None  # the access middleware admits only viewers and above
    requested = request.query_params.getlist("branch") or None
    branches = principal.allowed_branches(requested)
    data_dir = server_state(request).settings.data_dir
    entries = await anyio.to_thread.run_sync(archive_listing, data_dir, branches)
    return JSONResponse({"archives": entries})


async def download_archive(request: Request) -> Response:
    """GET /api/v1/archives/NAME: the ZIP, streamed (Range requests honoured), audited."""
    principal = principal_of(request)
    assert principal is not None
    name: str = request.path_params["name"]
    detail = {"range": request.headers.get("range", "")}
    try:
        key = parse_archive_name(name)
    except InvalidArchiveNameError:
        log.warning("archive download refused: bad name %r from %s", name[:200], principal.username)
        await audit_request(
            request, AUDIT_ACTION, target=name[:200], outcome="refused",
            detail={**detail, "reason": "not an archive name"},
        )  # fmt: skip
        return JSONResponse({"error": "not_found", "detail": "no such archive"}, status_code=404)
    if not principal.can_see(key.branch):
        log.warning("archive download refused: %s may not see %s", principal.username, key.branch)
        await audit_request(
            request, AUDIT_ACTION, target=name, outcome="denied",
            detail={**detail, "reason": f"no access to branch {key.branch}"},
        )  # fmt: skip
        return JSONResponse({"error": "forbidden", "detail": "no access to branch"}, 403)
    path = archive_path(server_state(request).settings.data_dir, key)
    if not path.is_file():
        await audit_request(
            request, AUDIT_ACTION, target=name, outcome="refused",
            detail={**detail, "reason": "no such archive"},
        )  # fmt: skip
        return JSONResponse({"error": "not_found", "detail": "no such archive"}, status_code=404)
    await audit_request(request, AUDIT_ACTION, target=name, detail=detail)
    return FileResponse(path, media_type="application/zip", filename=key.archive_name)
