"""The Alerts page in headless Chromium against a real ``netmon serve``: what a user sees of the
alert projection at 1920x1080, 1440x900 and 390 px wide."""

from __future__ import annotations

import time

from playwright.sync_api import BrowserContext, Page, expect

from netmon.storage.contract.events import Event
from tests.app.alert_events import acknowledged, opened, updated
from tests.polling import wait_until
from tests.web.conftest import ARTIFACTS, screenshot
from tests.web.flows import store
from tests.web.harness import NetmonServer, login

SIZES = {"1920": (1920, 1080), "1440": (1440, 900), "390": (390, 844)}


def seed(server: NetmonServer) -> None:
    """A port scan with a lot of evidence, acknowledged before most of it came; a password
    guesser; and 60 quieter alerts, so the list has a second page."""
    now = time.time()
    events: list[Event] = [
        opened(now - 120, "scan", entity="198.51.100.66", severity="high", count=40, ports=40),
        acknowledged(now - 100, "scan", by="admin"),
        updated(now - 5, "scan", 1, 542, severity="critical", ports=500),
        opened(now - 90, "guess", rule="password_guessing", entity="203.0.113.50",
               severity="high", count=12, ports=1),
    ]  # fmt: skip
    events += [
        opened(now - 3000 + n, f"quiet-{n:02d}", rule="beaconing", entity=f"10.9.0.{n}",
               severity="low", count=n + 1)
        for n in range(60)
    ]  # fmt: skip
    store(server.data_dir, events)


def open_alerts(page: Page, server: NetmonServer, path: str = "/alerts") -> None:
    login(page, server, path)

    def shown() -> bool:
        if page.locator("#alert-scan").count():
            return True
        page.reload()
        return False

    wait_until(shown, 15, "the seeded alerts on the Alerts page")


def no_horizontal_scroll(page: Page) -> bool:
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


def test_the_alerts_page_shows_grouped_evidence_filters_and_pages(
    netmon_server: NetmonServer, context: BrowserContext, dialogs: list[str]
) -> None:
    seed(netmon_server)
    page = context.new_page()
    open_alerts(page, netmon_server)
    scan = page.locator("#alert-scan")
    expect(scan.locator(".count")).to_have_text("542")
    expect(scan.locator(".count")).to_be_visible()
    expect(scan.locator(".spread")).to_have_text("1 / 500")
    expect(scan.locator(".new-since")).to_have_text("502 new since acknowledged")
    expect(scan.locator(".state")).to_contain_text("acknowledged")
    expect(page.locator("tr.alert-row").first).to_have_id("alert-scan")  # critical first
    assert no_horizontal_scroll(page), "the Alerts page scrolls sideways at 1440 px"
    for name, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"alerts-{name}.png"))  # what fits on the screen
    page.set_viewport_size({"width": 1440, "height": 900})

    # The filter form: only high and above, in the URL.
    page.select_option("#filter-severity", "high")
    page.click(".alert-filters button[type=submit]")
    page.wait_for_url(lambda url: "severity=high" in url)
    expect(page.locator("tr.alert-row")).to_have_count(2)

    # Paging: 50 rows, then the rest behind "Next page".
    page.goto(netmon_server.url + "/alerts?rule=beaconing")
    expect(page.locator("tr.alert-row")).to_have_count(50)
    page.click("#next-page")
    expect(page.locator("tr.alert-row")).to_have_count(10)
    assert "cursor=" in page.url and "rule=beaconing" in page.url

    # A bad filter (a hand-edited link) is said where the list would be.
    page.goto(netmon_server.url + "/alerts?severity=urgent")
    expect(page.locator("#alerts-error")).to_contain_text("severity must be one of")
    expect(page.locator("#filter-severity")).to_be_visible()
    screenshot(page, "alerts-bad-filter")
    assert dialogs == []


def test_the_phone_layout_shows_rows_as_cards(
    netmon_server: NetmonServer, context: BrowserContext
) -> None:
    seed(netmon_server)
    page = context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    open_alerts(page, netmon_server)
    scan = page.locator("#alert-scan")
    expect(scan.locator(".count")).to_be_visible()
    box = scan.bounding_box()
    assert no_horizontal_scroll(page), "the Alerts page scrolls sideways at 390 px"
    screenshot(page, "alerts-phone")
    assert box is not None and box["width"] <= 390
    expect(scan.locator("button.resolve")).to_be_visible()
