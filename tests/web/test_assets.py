"""Static files: only catalogued names, hashes that match the bytes served, no CDN."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path

import httpx
import pytest

from netmon.web.assets import STATIC_DIR, VENDOR_FILES, AssetCatalog


async def test_every_page_asset_is_served_with_a_matching_integrity_hash(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/events")
    tags = re.findall(r'(?:src|href)="(/static/[^"]+)" integrity="(sha384-[^"]+)"', page.text)
    names = {url.split("?")[0].removeprefix("/static/") for url, _ in tags}
    assert {"htmx.js", "htmx-ws.js", "netmon.js", "netmon.css"} <= names
    for url, integrity in tags:
        response = await client.get(url)
        assert response.status_code == 200
        digest = base64.b64encode(hashlib.sha384(response.content).digest()).decode()
        assert integrity == f"sha384-{digest}"
        assert "immutable" in response.headers["cache-control"]
    assert "https://" not in page.text  # everything local: no CDN


async def test_vendored_htmx_is_the_pinned_2_0_release(client: httpx.AsyncClient) -> None:
    body = (await client.get("/static/htmx.js")).text
    assert re.search(r'version:\s*"2\.0\.\d+"', body)


@pytest.mark.parametrize(
    "path",
    [
        "/static/../assets.py",
        "/static/..%2fassets.py",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/htmx.org/dist/htmx.js",
        "/static//etc/passwd",
        "/static/nope.js",
    ],
)
async def test_only_catalogued_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert "import" not in response.text


def test_missing_front_end_files_are_reported_and_pages_still_render(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="netmon.web.assets"):
        catalog = AssetCatalog(STATIC_DIR, tmp_path / "no-node-modules")
    assert sorted(catalog.missing) == sorted(VENDOR_FILES)
    assert "npm ci" in caplog.text
    assert str(catalog.script("htmx.js")) == ""
    assert "integrity" in str(catalog.script("netmon.js"))
