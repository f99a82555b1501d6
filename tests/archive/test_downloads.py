"""The archive API on a real server (real app, auth middleware, SQLite audit trail, uvicorn)."""

from __future__ import annotations

import http.client
import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netmon.archive.manager import ArchiveManager
from netmon.web.archives import archive_listing, archive_routes
from tests.app.auth.live import LiveServer, live_server
from tests.archive.helpers import SETTINGS, day_ago, populate

NORTH = f"{day_ago(4).isoformat()}_north.zip"
SOUTH = f"{day_ago(4).isoformat()}_south.zip"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("netmon")
    populate(data_dir, days_ago=[0, 4, 5], branches=["north", "south"], per_partition=80)
    ArchiveManager(data_dir, SETTINGS).run_once()
    # The routes are in create_app; adding them again here would only shadow them identically.
    with live_server(data_dir) as running:
        yield running


def raw_get(server: LiveServer, path: str, headers: dict[str, str]) -> int:
    """GET ``path`` byte for byte as given (httpx would normalise dot segments away)."""
    host, port = server.host.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def audit(server: LiveServer, **filters: str) -> list[dict[str, Any]]:
    with server.client() as client:
        answer = client.get(
            "/api/v1/audit",
            params={"action": "archive.download", "limit": "1000", **filters},
            headers=server.bearer("admin"),
        )
    assert answer.status_code == 200, answer.text
    records: list[dict[str, Any]] = answer.json()["records"]
    return records


def test_routes_declare_their_access() -> None:
    assert {route.path: route.access for route in archive_routes()} == {
        "/api/v1/archives": "viewer",
        "/api/v1/archives/{name:path}": "analyst",
    }


def test_listing_shows_only_the_callers_branches(server: LiveServer) -> None:
    with server.client() as client:
        mine = client.get("/api/v1/archives", headers=server.bearer("viewer")).json()
        every = client.get("/api/v1/archives", headers=server.bearer("admin")).json()
        anonymous = client.get("/api/v1/archives")
    assert [a["name"] for a in mine["archives"]] == [
        f"{day_ago(5).isoformat()}_north.zip",
        NORTH,
    ]
    assert len(every["archives"]) == 4
    entry = mine["archives"][1]
    assert entry["branch"] == "north" and entry["date"] == day_ago(4).isoformat()
    assert entry["events"] == 80 and entry["size"] > 0 and entry["first_ts"] < entry["last_ts"]
    assert anonymous.status_code == 401


def test_an_analyst_downloads_a_verified_zip_with_range_support(server: LiveServer) -> None:
    with server.client() as client:
        whole = client.get(f"/api/v1/archives/{NORTH}", headers=server.bearer("analyst"))
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "application/zip"
        assert whole.headers["accept-ranges"] == "bytes"
        tail = client.get(
            f"/api/v1/archives/{NORTH}",
            headers={**server.bearer("analyst"), "Range": "bytes=100-"},
        )
    assert tail.status_code == 206
    assert (
        tail.headers["content-range"] == f"bytes 100-{len(whole.content) - 1}/{len(whole.content)}"
    )
    assert tail.content == whole.content[100:]
    with zipfile.ZipFile(io.BytesIO(whole.content)) as archive:
        assert archive.testzip() is None and "manifest.json" in archive.namelist()
    records = audit(server, actor="analyst", outcome="ok", target=NORTH)
    assert [r["detail"]["range"] for r in records][-2:] == ["", "bytes=100-"]


def test_a_viewer_may_list_but_not_download(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.get(f"/api/v1/archives/{NORTH}", headers=server.bearer("viewer"))
    assert answer.status_code == 403


HOSTILE = [
    "/api/v1/archives/../../../etc/passwd",
    "/api/v1/archives/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/archives/%2e%2e/%2e%2e/netmon.sqlite3",
    "/api/v1/archives/%2e%2e%2fnetmon.sqlite3",
    "/api/v1/archives//etc/passwd",
    "/api/v1/archives/%2Fetc%2Fpasswd",
    f"/api/v1/archives/{NORTH[:-4]}%2F..%2F{NORTH}",
    f"/api/v1/archives/./{NORTH}",
    "/api/v1/archives/.lock",
    f"/api/v1/archives/.tmp-{NORTH}",
    f"/api/v1/archives/{NORTH}%00.txt",
    "/api/v1/archives/2026-02-30_north.zip",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_names_get_404_and_are_audited(server: LiveServer, path: str) -> None:
    before = len(audit(server, outcome="refused"))
    status = raw_get(server, path, server.bearer("analyst"))
    assert status == 404
    records = audit(server, outcome="refused")
    assert len(records) == before + 1
    assert records[-1]["actor"] == "analyst" and records[-1]["source"] == "127.0.0.1"


def test_another_branchs_archive_gets_403_and_is_audited(server: LiveServer) -> None:
    with server.client() as client:
        answer = client.get(f"/api/v1/archives/{SOUTH}", headers=server.bearer("analyst"))
        allowed = client.get(f"/api/v1/archives/{SOUTH}", headers=server.bearer("analyst_south"))
    assert answer.status_code == 403 and SOUTH.encode() not in answer.content
    assert allowed.status_code == 200
    denied = audit(server, outcome="denied", target=SOUTH)
    assert denied[-1]["actor"] == "analyst"
    assert denied[-1]["detail"]["reason"] == "no access to branch south"


def test_a_missing_archive_is_404_and_audited(server: LiveServer) -> None:
    missing = f"{day_ago(40).isoformat()}_north.zip"
    with server.client() as client:
        answer = client.get(f"/api/v1/archives/{missing}", headers=server.bearer("analyst"))
    assert answer.status_code == 404
    assert audit(server, target=missing)[-1]["outcome"] == "refused"


def test_a_damaged_archive_is_listed_with_its_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    populate(tmp_path, days_ago=[4, 5], branches=["north"])
    ArchiveManager(tmp_path, SETTINGS).run_once()
    damaged = tmp_path / "archives" / NORTH
    damaged.write_bytes(damaged.read_bytes()[:-30])  # the central directory's tail is gone
    with caplog.at_level(logging.ERROR, logger="netmon.archive"):
        entries = archive_listing(tmp_path, frozenset({"north"}))
    assert [e["name"] for e in entries] == [f"{day_ago(5).isoformat()}_north.zip", NORTH]
    assert "events" in entries[0] and "error" not in entries[0]
    assert NORTH in entries[1]["error"] and "events" not in entries[1]
    assert f"listing {NORTH}" in caplog.text
    assert archive_listing(tmp_path, frozenset({"south"})) == []
