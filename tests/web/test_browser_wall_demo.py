"""``netmon demo`` on the live wall, in Chromium: its scanner and its password guesser show as one
grouped row each within 10 s of their attack's start, and the critical RDP/Telnet rows stay."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from netmon.app.demo.traffic import GUESSER, SCANNER
from netmon.app.projections.wall import ENTITY_ROWS, GROUP_S
from tests.polling import wait_until
from tests.ship.test_demo import Demo
from tests.web.conftest import ARTIFACTS
from tests.web.harness import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow

ROW_FIELDS = """rows => rows.map(r => ({
    id: r.id, entity: r.dataset.entity || "", severity: r.dataset.severity,
    first: parseFloat(r.dataset.first), why: r.querySelector(".why").textContent,
    what: r.querySelector(".what").textContent}))"""
MAX_ROWS = 100  # the page's default
WIDEST = """() => [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth)
    .slice(0, 5).map(e => e.tagName + "." + e.className + "#" + e.id + " " +
                     Math.round(e.getBoundingClientRect().right)).join(", ")"""


def wall(page: Page) -> list[dict]:
    rows: list[dict] = page.eval_on_selector_all("#live-rows tr", ROW_FIELDS)
    return rows


def test_the_demo_scanner_and_guesser_are_one_row_each_and_critical_rows_stay(
    tmp_path: Path,
) -> None:
    demo = Demo(tmp_path)  # a round of traffic every 3 s
    try:
        wait_until(demo.answers, 120, f"the demo's dashboard\n{demo.console()}", interval=0.2)
        password = wait_until(demo.password, 30, f"the one-time password\n{demo.console()}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1920, "height": 1080})
                page.set_default_timeout(20_000)
                page.goto(demo.url + "/")
                page.fill("#username", "admin")
                page.fill("#password", password)
                page.click("button[type=submit]")
                page.wait_for_url(lambda url: "/login" not in url)
                expect(page.locator("body")).to_have_attribute("data-ws", "connected")
                watch_the_wall(page)
                take_screenshots(page)
            finally:
                browser.close()
        assert demo.interrupt() == 0, demo.console()
    finally:
        demo.kill()


def watch_the_wall(page: Page) -> None:
    """Sample the wall until the scanner and the guesser each got a row the page did not have
    when it opened (the row's first time is their attack's start in that minute)."""
    attackers = {f"demo|{SCANNER}": "scanner", f"demo|{GUESSER}": "guesser"}
    already = {row["id"] for row in wall(page)}
    appeared: dict[str, float] = {}  # row id -> when the page first showed it
    latency: dict[str, float] = {}  # attacker -> seconds from its first packet to its row
    critical_seen: set[str] = set()
    deadline = time.monotonic() + 2 * GROUP_S + 30
    while len(latency) < len(attackers):
        assert time.monotonic() < deadline, f"new rows seen only for {latency}"
        rows, now = wall(page), time.time()
        ids = {row["id"] for row in rows}
        for row in rows:
            appeared.setdefault(row["id"], now)
            attacker = attackers.get(row["entity"])
            if attacker and row["id"] not in already and attacker not in latency:
                latency[attacker] = appeared[row["id"]] - row["first"]
            if row["severity"] == "critical" and ("RDP" in row["why"] or "Telnet" in row["why"]):
                critical_seen.add(row["id"])
        for entity in attackers:
            # one row a minute, however many flows: never more than ENTITY_ROWS on the wall
            assert sum(row["entity"] == entity for row in rows) <= ENTITY_ROWS
        gone = critical_seen - ids
        criticals_on_wall = sum(row["severity"] == "critical" for row in rows)
        assert not gone or criticals_on_wall >= MAX_ROWS, f"critical rows pushed off: {gone}"
        time.sleep(0.2)  # sampling what the user sees, not waiting for a condition
    print(f"\nfrom an attack's first packet to its row on the wall: {latency}")
    assert all(seconds <= 10 for seconds in latency.values()), latency
    assert critical_seen, "no RDP/Telnet row in the demo's traffic"

    def counted_in_one_row(entity: str) -> bool:
        """Many flows of the attacker in one row (its row may have just begun: wait for more)."""
        own = [row for row in wall(page) if row["entity"] == entity]
        return any(int(row["what"].split()[0].replace(",", "")) > 1 for row in own)

    for entity in attackers:
        wait_until(partial(counted_in_one_row, entity), 15, f"{entity}: many flows in one row")


def take_screenshots(page: Page) -> None:
    for width, height in ((1920, 1080), (1440, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        expect(page.locator("#live-rows tr").first).to_be_visible()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"live-wall-{width}.png"))  # what the screen shows
        wide = page.evaluate(WIDEST)
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"horizontal scroll at {width} px: {scroll} ({wide})"
