"""Notification delivery in the dashboard: ``GET /api/v1/notifications`` over the worker's real
outbox, and the Alerts page banner in Chromium when a channel keeps failing."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from netmon.app.analysis.channels import WebhookChannel
from netmon.app.analysis.notify import Notifier, RetryPolicy
from netmon.storage.outbox import Outbox, outbox_path
from tests.analysis.receivers import SECRET, RawReceiver
from tests.web.conftest import screenshot
from tests.web.flows import alert_opened
from tests.web.harness import NetmonServer, login

HOSTILE = "<img src=x onerror=alert(1)>" + "x" * 150  # and one long word: it must wrap
T0 = 1_800_000_000.0


def failing_outbox(data_dir: Path) -> None:
    """Two alerts notified through a webhook that answers 500 (with a hostile body): both
    notifications end failed in the data dir's outbox, as the worker would leave them."""

    def answer_500(receiver: RawReceiver, connection: socket.socket, number: int) -> None:
        body = HOSTILE.encode()
        head = f"HTTP/1.1 500 Oops\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        connection.sendall(head + body)

    with RawReceiver(answer_500) as receiver:
        notifier = Notifier(
            [WebhookChannel(receiver.url, SECRET, timeout=5)],
            Outbox(outbox_path(data_dir)),
            policy=RetryPolicy(retries=0),
            min_severity="low",
        )

        async def scenario() -> None:
            notifier.start()
            for number in range(2):
                notifier.notify(alert_opened(time.time() - number, entity=f"10.0.0.{number}"))
            await notifier.drain(30)
            await notifier.close()

        # In a thread of its own: sync Playwright keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, scenario()).result(60)


async def test_the_api_counts_by_state_and_lists_failing_rows(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    outbox = Outbox(outbox_path(data_dir))
    outbox.add("a:opened", ["webhook", "syslog"], b"{}", T0)
    row = outbox.claim("webhook", T0, lease_s=40)
    assert row is not None
    outbox.attempt_failed(row, "HTTP 503: busy", T0 + 2)
    outbox.close()
    answer = await client.get("/api/v1/notifications")
    assert answer.status_code == 200
    body = answer.json()
    assert body["counts"] == {"pending": 1, "retrying": 1, "delivered": 0, "failed": 0}
    assert body["failing"] == [
        {
            "id": "a:opened",
            "channel": "webhook",
            "status": "retrying",
            "attempts": 1,
            "last_error": "HTTP 503: busy",
            "last_attempt_at": T0,
            "next_attempt_at": T0 + 2,
        }
    ]


async def test_no_outbox_yet_is_all_zeros(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/notifications")).json()
    assert body["counts"] == {"pending": 0, "retrying": 0, "delivered": 0, "failed": 0}
    assert body["failing"] == []


async def test_a_damaged_outbox_is_a_coded_503_and_one_log_line(
    client: httpx.AsyncClient, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = outbox_path(data_dir)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage" * 1000)
    with caplog.at_level(logging.ERROR, logger="netmon.web.notifications"):
        answer = await client.get("/api/v1/notifications")
    assert answer.status_code == 503 and answer.json()["error"] == "outbox_unavailable"
    assert "not a database" in answer.json()["detail"]
    [record] = caplog.records
    assert record.exc_info is None and "not a database" in record.getMessage()


def test_a_failing_channel_shows_in_the_api_and_as_a_banner_on_the_alerts_page(
    netmon_server: NetmonServer, context: BrowserContext, dialogs: list[str]
) -> None:
    failing_outbox(netmon_server.data_dir)
    page = context.new_page()
    login(page, netmon_server, "/alerts")
    api = page.request.get(netmon_server.url + "/api/v1/notifications")
    assert api.status == 200
    body = api.json()
    assert body["counts"]["failed"] == 2 and len(body["failing"]) == 2
    assert body["failing"][0]["last_error"] == f"HTTP 500: {HOSTILE}"

    page.goto(netmon_server.url + "/alerts")
    banner = page.locator("#notifications-banner")
    expect(banner).to_contain_text("2 notifications failing")
    expect(banner).to_contain_text(f"last error: HTTP 500: {HOSTILE}")  # as text, not markup
    expect(banner).to_contain_text("webhook, 1 attempt, given up")
    assert banner.locator("img").count() == 0 and dialogs == []
    for name, size in {
        "1920": {"width": 1920, "height": 1080},
        "1440": {"width": 1440, "height": 900},
        "390": {"width": 390, "height": 844},
    }.items():
        page.set_viewport_size(size)
        box = banner.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= size["width"]
        assert banner.evaluate("b => b.scrollWidth <= b.clientWidth"), "text overflows"
        screenshot(page, f"alerts-notifications-banner-{name}")


def test_viewers_get_neither_the_api_nor_the_banner(netmon_server: NetmonServer) -> None:
    failing_outbox(netmon_server.data_dir)
    password = netmon_server.admin_password()
    assert password is not None

    def token(username: str, secret: str) -> dict[str, str]:
        answer = httpx.post(
            f"{netmon_server.url}/api/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": secret},
        )
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    created = httpx.post(
        f"{netmon_server.url}/api/v1/users",
        json={"username": "watcher", "role": "viewer", "branches": ["hq"]},
        headers=token("admin", password),
    )
    created.raise_for_status()
    viewer = token("watcher", created.json()["password"])
    with httpx.Client(base_url=netmon_server.url, headers=viewer) as http:
        assert http.get("/api/v1/notifications").status_code == 403
        page = http.get("/alerts")
        assert page.status_code == 200 and "notifications-banner" not in page.text
