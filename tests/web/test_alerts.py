"""The Alerts page over the alert projection: rows with their evidence, filters in the query
string, cursor pages, errors in place; acknowledge/resolve append events to the log."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from netmon.app.live_service import LiveService, open_live
from netmon.app.settings import LiveSettings, Settings, StoreSettings
from netmon.storage.contract.events import AlertAcknowledged, AlertResolved, Event
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from tests.app.alert_events import acknowledged, opened, updated
from tests.polling import wait_until_async
from tests.web.conftest import build_web_app
from tests.web.flows import XSS_DOMAIN, alert_opened, store

NOW = time.time()


class Served:
    """The web app with a running live service (its alert store) and an HTTP client."""

    def __init__(self, app: Starlette, live: LiveService, http: httpx.AsyncClient) -> None:
        self.app, self.live, self.http = app, live, http

    async def store_and_wait(self, data_dir: Path, events: list[Event]) -> None:
        """Append as another writer would, and wait until the alert store has folded it."""
        folded = self.live.alerts.folded if self.live.alerts else 0
        alert_events = sum(type(event).__name__.startswith("Alert") for event in events)
        store(data_dir, events)
        await wait_until_async(
            lambda: (
                self.live.alerts_ready
                and self.live.alerts is not None
                and self.live.alerts.folded >= folded + alert_events
            ),
            10,
            "the alert store",
        )


@contextlib.asynccontextmanager
async def serving(data_dir: Path) -> AsyncIterator[Served]:
    """The app with its live service running (not a fixture: the service's task group must be
    entered and left by the test's own task)."""
    app = build_web_app(data_dir)
    settings = Settings(
        store=StoreSettings(data_dir=str(data_dir)),
        live=LiveSettings(projector=False, poll_interval_s=0.005),
    )
    app.state.server.settings = settings
    with EventLog(data_dir, "web-test", durability="none") as event_log:
        async with open_live(settings, event_log, app.state.web.renderer) as live:
            app.state.server.event_log, app.state.server.live = event_log, live
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://t", headers={"accept": "text/html"}
            ) as http:
                yield Served(app, live, http)


async def test_acknowledge_then_resolve_appends_events(data_dir: Path) -> None:
    async with serving(data_dir) as served:
        alert = alert_opened(NOW - 60, entity=XSS_DOMAIN)
        await served.store_and_wait(data_dir, [alert])
        page = await served.http.get("/alerts")
        assert f'id="alert-{alert.alert_id}"' in page.text
        assert "&lt;img src=x" in page.text and "<img" not in page.text
        ack = await served.http.post(f"/alerts/{alert.alert_id}/ack", data={"note": "mine"})
        assert ack.status_code == 200 and 'data-state="acknowledged"' in ack.text
        resolved = await served.http.post(f"/alerts/{alert.alert_id}/resolve")
        assert 'data-state="resolved"' in resolved.text
        await wait_until_async(
            lambda: (
                (record := served.live.alerts.get(alert.alert_id)) is not None  # type: ignore[union-attr]
                and record.state == "resolved"
            ),
            10,
            "the resolution in the store",
        )
        again = await served.http.post(f"/alerts/{alert.alert_id}/ack")
        assert again.status_code == 409
        logged = [
            e
            for e in EventLogReader(data_dir).scan(None, None)
            if isinstance(e, AlertAcknowledged | AlertResolved)
        ]
        assert [(type(e).__name__, e.note) for e in logged] == [
            ("AlertAcknowledged", "mine"),
            ("AlertResolved", ""),
        ]
        queue = await served.http.get("/alerts")  # the work queue: unresolved alerts only
        assert f'id="alert-{alert.alert_id}"' not in queue.text
        everything = await served.http.get("/alerts?state=any")
        assert 'data-state="resolved"' in everything.text


async def test_a_row_shows_its_evidence_and_what_came_after_the_acknowledgement(
    data_dir: Path,
) -> None:
    async with serving(data_dir) as served:
        await served.store_and_wait(
            data_dir,
            [
                opened(NOW - 100, "scan-1", entity="198.51.100.66", count=40, targets=1, ports=40),
                acknowledged(NOW - 90, "scan-1"),
                updated(NOW - 10, "scan-1", 1, 542, ports=500),
            ],
        )
        page = (await served.http.get("/alerts")).text
        row = _row(page, "scan-1")
        assert '<td class="num count" data-label="Count">542</td>' in row
        assert "1 / 500" in row
        assert "502 new since acknowledged" in row
        assert "198.51.100.66" in row and "by ana" in row


async def test_filters_and_the_next_page_link(data_dir: Path) -> None:
    async with serving(data_dir) as served:
        events: list[Event] = [
            opened(NOW - 500 + n, f"a{n:03d}", rule="port_scan" if n % 2 else "beaconing",
                   severity="critical" if n < 5 else "low", entity=f"10.0.0.{n}")
            for n in range(60)
        ]  # fmt: skip
        await served.store_and_wait(data_dir, events)
        critical = (await served.http.get("/alerts?severity=critical")).text
        assert critical.count('class="alert-row') == 5
        beacons = (await served.http.get("/alerts?rule=beaconing&state=open")).text
        assert beacons.count('class="alert-row') == 30
        assert '<option value="beaconing" selected>' in beacons
        first = (await served.http.get("/alerts?rule=port_scan&limit=20")).text
        assert first.count('class="alert-row') == 20
        found = re.search(r'id="next-page" class="button secondary" href="([^"]+)"', first)
        assert found is not None
        href = found.group(1).replace("&amp;", "&")
        assert "rule=port_scan" in href and "cursor=" in href
        second = (await served.http.get(href)).text
        rows = set(re.findall(r'id="alert-(a\d+)"', first)) | set(
            re.findall(r'id="alert-(a\d+)"', second)
        )
        assert len(rows) == 30 and 'id="next-page"' not in second  # 30 port scans: the last page
        ids = set(re.findall(r'id="alert-(a\d+)"', second))
        assert not ids & set(re.findall(r'id="alert-(a\d+)"', first))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("severity=urgent", "severity must be one of"),
        ("state=closed", "state must be one of"),
        ("cursor=nonsense", "cursor: not a cursor"),
    ],
)
async def test_a_bad_filter_is_shown_in_place(
    data_dir: Path, query: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(data_dir) as served:
        with caplog.at_level(logging.INFO, logger="netmon.web.alerts"):
            page = await served.http.get(f"/alerts?{query}")
        assert page.status_code == 400
        assert 'id="alerts-error"' in page.text and message in page.text
        assert 'name="severity"' in page.text  # the form stays, to correct the filter
        assert "bad filter" in caplog.text


@pytest.mark.parametrize(
    ("path", "status"),
    [("/alerts/nope/ack", 404), ("/alerts/x/delete", 404)],
)
async def test_bad_alert_actions_are_refused(
    data_dir: Path, path: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(data_dir) as served:
        with caplog.at_level(logging.INFO, logger="netmon.web.alerts"):
            response = await served.http.post(path)
        assert response.status_code == status
        assert "alert action refused" in caplog.text


async def test_a_server_without_the_alert_projection_says_so(client: httpx.AsyncClient) -> None:
    page = await client.get("/alerts")
    assert page.status_code == 200 and "Alerts not available yet" in page.text
    response = await client.post("/alerts/x/ack")
    assert response.status_code == 503


def _row(page: str, alert_id: str) -> str:
    start = page.index(f'id="alert-{alert_id}"')
    return page[start : page.index("</tr>", start)]
