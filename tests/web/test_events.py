"""The Events search over a real store: pages, cursors, scoping, detail, exports, bad input."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from pathlib import Path

import httpx
import pytest

from netmon.web.query import parse_query
from netmon.web.search import search_all, search_page, store_source
from tests.web.flows import SSH, XSS_DOMAIN, flow, ssh_detection, store

NOW = time.time()


def _row_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="ev-([0-9a-f]+)"', html)


@pytest.mark.parametrize("q", ["", "10.0.0.5"])  # a scan, and the indexed path (time spans)
def test_cursor_pages_cover_every_match_once_newest_first(data_dir: Path, q: str) -> None:
    events = [flow(NOW - 3 * 86400 + i * 1800.5, branch=("hq", "lab")[i % 2]) for i in range(130)]
    ties = [flow(NOW - 7200, branch="hq") for _ in range(3)]  # same ts: the id breaks the tie
    events += ties
    store(data_dir, events)
    source = store_source(data_dir)
    assert source is not None
    assert source.indexed(parse_query(q, NOW)) is bool(q)
    query = parse_query(q, NOW)
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = search_page(source, query, None, cursor, limit=50)
        seen += [row.id for row in page.rows]
        pages += 1
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    expected = [e.id for e in sorted(events, key=lambda e: (e.ts, e.id), reverse=True)]
    assert seen == expected
    assert pages == 3


def test_branch_scoping_hides_other_branches(data_dir: Path) -> None:
    store(data_dir, [flow(NOW - 10, branch="hq"), flow(NOW - 20, branch="lab")])
    source = store_source(data_dir)
    assert source is not None
    page = search_page(source, parse_query("", NOW), ["lab"])
    assert [row.branch for row in page.rows] == ["lab"]
    asked_other = search_page(source, parse_query("branch:hq", NOW), ["lab"])
    assert asked_other.rows == []


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("203.0.113.7", {"det"}),  # single IP: the store's sidecar-indexed path
        ("ip:203.0.113.0/24", {"det", "ssh"}),  # CIDR either side: a scan
        ("port:22", {"det", "ssh"}),  # single port: indexed path
        ("domain:evil", {"xss"}),
        ("severity:critical type:FlowObserved", {"ssh"}),
    ],
)
async def test_search_finds_the_right_events(
    client: httpx.AsyncClient, data_dir: Path, q: str, expected: set[str]
) -> None:
    named = {
        "det": ssh_detection(NOW - 30),
        "ssh": flow(NOW - 20, src="10.0.0.9", dst="203.0.113.8", dport=22, detections=(SSH,)),
        "xss": flow(NOW - 10, domain=XSS_DOMAIN),
        "plain": flow(NOW - 5),
    }
    store(data_dir, list(named.values()))
    response = await client.get("/events", params={"q": q})
    assert response.status_code == 200
    ids = set(_row_ids(response.text))
    assert ids == {named[name].id for name in expected}


async def test_hostile_domain_is_escaped_in_results_and_detail(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    event = flow(NOW - 10, domain=XSS_DOMAIN)
    store(data_dir, [event])
    page = await client.get("/events")
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;.evil" in page.text
    detail = await client.get(f"/events/{event.id}", headers={"HX-Request": "true"})
    assert detail.status_code == 200
    assert "<img src=x" not in detail.text and "&lt;img src=x" in detail.text


async def test_htmx_requests_get_only_the_fragment(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    store(data_dir, [flow(NOW - i, src="10.1.1.1") for i in range(60)])
    results = await client.get(
        "/events", params={"q": "10.1.1.1"}, headers={"HX-Request": "true", "HX-Target": "results"}
    )
    assert results.text.lstrip().startswith('<section id="results">')
    assert len(_row_ids(results.text)) == 50
    cursor = re.search(r'cursor=([^"&]+)', results.text)
    assert cursor is not None
    more = await client.get(
        f"/events?q=10.1.1.1&cursor={cursor.group(1)}",
        headers={"HX-Request": "true", "HX-Target": "more"},
    )
    assert "<section" not in more.text and len(_row_ids(more.text)) == 10


async def test_detail_shows_every_field(client: httpx.AsyncClient, data_dir: Path) -> None:
    event = flow(NOW - 10, detections=(SSH,), domain="a.example")
    store(data_dir, [event])
    page = await client.get(f"/events/{event.id}")
    assert page.status_code == 200
    for text in ("src2dst_bytes", "600", "detections.0.kind", "critical_port", "a.example"):
        assert text in page.text


@pytest.mark.parametrize("event_id", ["0" * 32, "zz", "../../etc", "ffffffffffffffffffff" * 4])
async def test_unknown_event_is_a_friendly_404(client: httpx.AsyncClient, event_id: str) -> None:
    response = await client.get(f"/events/{event_id}")
    assert response.status_code == 404
    assert "Traceback" not in response.text and "Page not found" in response.text


async def test_bad_query_gets_a_400_page_and_a_log_line(
    client: httpx.AsyncClient, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store(data_dir, [flow(NOW - 10)])
    with caplog.at_level(logging.INFO, logger="netmon.web.views"):
        response = await client.get("/events", params={"q": "port:99999"})
    assert response.status_code == 400
    assert 'id="query-error"' in response.text and "port:99999" in response.text
    assert any("port:99999" in r.getMessage() for r in caplog.records)
    damaged = await client.get("/events", params={"cursor": "garbage"})
    assert damaged.status_code == 400 and "cursor" in damaged.text
    assert len(list((data_dir / "events").rglob("*.jsonl"))) >= 1  # nothing stored was touched


async def test_csv_export_streams_every_match(client: httpx.AsyncClient, data_dir: Path) -> None:
    events = [flow(NOW - i * 3600, src="10.9.9.9") for i in range(120)]
    events.append(flow(NOW - 5, src="10.0.0.1", domain="=HYPERLINK(evil)"))
    store(data_dir, events)
    response = await client.get("/events.csv", params={"q": "ip:10.9.9.9"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 120
    assert {row["src_ip"] for row in rows} == {"10.9.9.9"}
    assert [row["id"] for row in rows] == [e.id for e in events[:120]]  # newest first
    hostile = await client.get("/events.csv", params={"q": "ip:10.0.0.1"})
    (row,) = csv.DictReader(io.StringIO(hostile.text))
    assert row["domain"] == "'=HYPERLINK(evil)"  # a spreadsheet shows it, never runs it


async def test_json_export_is_a_valid_array(client: httpx.AsyncClient, data_dir: Path) -> None:
    store(data_dir, [flow(NOW - i, domain=XSS_DOMAIN) for i in range(3)])
    response = await client.get("/events.json")
    data = json.loads(response.text)
    assert len(data) == 3 and data[0]["domain"] == XSS_DOMAIN


async def test_export_with_a_bad_query_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/events.csv", params={"q": "proto:nope"}, headers={"accept": "*/*"}
    )
    assert response.status_code == 400
    assert "proto:nope" in response.json()["detail"]


def test_a_huge_export_day_streams_in_storage_order(data_dir: Path) -> None:
    events = [flow(NOW - 100 + i, src="10.3.3.3") for i in range(12)]  # stored oldest first
    store(data_dir, events)
    source = store_source(data_dir)
    assert source is not None
    rows = list(search_all(source, parse_query("10.3.3.3", NOW), None, sort_limit=5))
    assert [row.id for row in rows] == [e.id for e in events]  # all of them, none twice
