"""Alerts: state folded from lifecycle events; acknowledge/resolve append events to the log."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from netmon.storage.contract.events import AlertAcknowledged, AlertResolved
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.web.alerts import fold
from tests.web.conftest import build_web_app
from tests.web.flows import XSS_DOMAIN, alert_opened, store

NOW = time.time()


@pytest.fixture
async def acting_client(data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = build_web_app(data_dir)
    with EventLog(data_dir, "web-test", durability="none") as event_log:
        app.state.server.event_log = event_log
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"accept": "text/html"}
        ) as http:
            yield http


def test_fold_follows_the_lifecycle_in_time_order() -> None:
    opened = alert_opened(NOW - 100)
    common = {"branch": "hq", "alert_id": opened.alert_id, "by": "ana"}
    ack = AlertAcknowledged(id="a" * 32, ts=NOW - 50, note="looking", **common)
    done = AlertResolved(id="b" * 32, ts=NOW - 10, **common)
    late_ack = AlertAcknowledged(id="c" * 32, ts=NOW - 5, **common)
    (view,) = fold([late_ack, done, ack, opened]).values()
    assert (view.state, view.by, view.updated) == ("resolved", "ana", NOW - 10)
    orphan = AlertAcknowledged(id="d" * 32, ts=NOW, branch="hq", alert_id="gone", by="x")
    assert fold([orphan]) == {}


async def test_acknowledge_then_resolve_appends_events(
    acting_client: httpx.AsyncClient, data_dir: Path
) -> None:
    alert = alert_opened(NOW - 60, entity=XSS_DOMAIN)
    store(data_dir, [alert])
    page = await acting_client.get("/alerts")
    assert f'id="alert-{alert.alert_id}"' in page.text
    assert "&lt;img src=x" in page.text and "<img" not in page.text
    ack = await acting_client.post(f"/alerts/{alert.alert_id}/ack", data={"note": "mine"})
    assert ack.status_code == 200 and 'data-state="acknowledged"' in ack.text
    resolved = await acting_client.post(f"/alerts/{alert.alert_id}/resolve")
    assert 'data-state="resolved"' in resolved.text
    again = await acting_client.post(f"/alerts/{alert.alert_id}/ack")
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
    page = await acting_client.get("/alerts")
    assert 'data-state="resolved"' in page.text


@pytest.mark.parametrize(
    ("path", "status"),
    [("/alerts/nope/ack", 404), ("/alerts/x/delete", 404)],
)
async def test_bad_alert_actions_are_refused(
    acting_client: httpx.AsyncClient, path: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="netmon.web.alerts"):
        response = await acting_client.post(path)
    assert response.status_code == status
    assert "alert action refused" in caplog.text


async def test_action_without_an_event_log_says_so(client: httpx.AsyncClient) -> None:
    response = await client.post("/alerts/x/ack")
    assert response.status_code == 503
