"""The Live page in headless Chromium: pushes without reload, escaping, kiosk bounds, reconnects."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from storage.eventlog import EventLog
from tests.web.conftest import screenshot
from tests.web.flows import (
    SSH,
    XSS_DOMAIN,
    alert_opened,
    flow,
    ssh_detection,
    write_ssh_attempt_pcap,
)
from tests.web.harness import NETMON, NetmonServer, login, wait_until

KIOSK_ROWS = 5


@pytest.fixture(scope="module")
def writer(netmon_server: NetmonServer) -> Iterator[EventLog]:
    """Another writer of the server's store (as a second replica's ingest would be)."""
    with EventLog(netmon_server.data_dir, "other-replica", durability="none") as log:
        yield log


def open_live(page: Page, server: NetmonServer, path: str = "/") -> None:
    login(page, server, path)
    expect(page.locator("[ws-connect]")).to_have_count(1)
    expect(page.locator("body")).to_have_attribute("data-ws", "connected")


def test_a_detection_appears_live_without_reload_and_escaped(
    netmon_server: NetmonServer, context: BrowserContext, writer: EventLog, dialogs: list[str]
) -> None:
    page = context.new_page()
    open_live(page, netmon_server)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    event = ssh_detection(time.time(), src="203.0.113.77")
    hostile = ssh_detection(time.time(), src="203.0.113.78", domain=XSS_DOMAIN)
    writer.append([event])
    expect(page.locator(f"#ev-{event.id}")).to_be_visible(timeout=1000)
    expect(page.locator(f"#ev-{event.id}")).to_contain_text("203.0.113.77")
    writer.append([hostile])
    row = page.locator(f"#ev-{hostile.id}")
    expect(row).to_be_visible()
    expect(row.locator(".domain")).to_have_text(XSS_DOMAIN)
    assert page.locator("#live img").count() == 0 and page.locator("[onerror]").count() == 0
    assert page.evaluate("window.__sameDocument") is True
    assert dialogs == []
    screenshot(page, "live")


def test_an_agent_that_comes_up_after_the_page_opened_gets_its_row_live(
    netmon_server: NetmonServer, context: BrowserContext, writer: EventLog
) -> None:
    page = context.new_page()
    open_live(page, netmon_server)
    page.evaluate("window.__sameDocument = true")
    agent_id = f"late-agent-{time.time_ns()}"
    row = page.locator(f"#agent-{agent_id}")
    expect(row).to_have_count(0)
    writer.append([msgspec.structs.replace(flow(time.time()), agent_id=agent_id)])
    expect(row.locator(".status")).to_have_text("up")
    assert page.evaluate("window.__sameDocument") is True


def test_kiosk_keeps_n_rows_for_a_day_of_events_and_reconnects_after_restart(
    netmon_server: NetmonServer, context: BrowserContext, writer: EventLog
) -> None:
    page = context.new_page()
    open_live(page, netmon_server, f"/?kiosk=1&rows={KIOSK_ROWS}")
    expect(page.locator("header.topbar")).to_have_count(0)
    # A simulated day: 24 hourly bursts of detections, event times spread over the last 24 h.
    start = time.time() - 86400
    last = None
    for hour in range(24):
        burst = [
            ssh_detection(start + hour * 3600 + i * 60, src=f"198.18.{hour}.{i}") for i in range(10)
        ]
        writer.append(burst)
        last = burst[-1]
        rows = page.locator("#live-rows tr").count()
        assert rows <= KIOSK_ROWS, f"{rows} rows in the DOM after hour {hour}"
    assert last is not None
    expect(page.locator(f"#ev-{last.id}")).to_be_visible()
    expect(page.locator("#live-cards .card")).to_have_count(4)  # the headline numbers

    def critical_24h() -> int:
        return int(page.locator("#critical-24h").inner_text().replace(",", ""))

    # The headline numbers follow the pushes (no reload): the whole simulated day is counted.
    wait_until(lambda: critical_24h() >= 20 * 10, 10, "the critical count to take the day in")
    wait_until(lambda: page.locator("#live-rows tr").count() == KIOSK_ROWS, 5, "a full table")
    screenshot(page, "live-kiosk")

    netmon_server.stop()
    expect(page.locator("body")).to_have_attribute("data-ws", "disconnected")
    netmon_server.start()
    expect(page.locator("body")).to_have_attribute("data-ws", "connected", timeout=30_000)
    after = ssh_detection(time.time(), src="198.19.0.1")
    writer.append([after])
    expect(page.locator(f"#ev-{after.id}")).to_be_visible()
    assert page.locator("#live-rows tr").count() <= KIOSK_ROWS


def test_acknowledging_in_one_tab_shows_live_in_another(
    netmon_server: NetmonServer, context: BrowserContext, writer: EventLog
) -> None:
    alert = alert_opened(time.time(), entity="203.0.113.99")
    writer.append([alert])  # as the analysis worker would
    first, second = context.new_page(), context.new_page()
    open_live(first, netmon_server, "/alerts")
    open_live(second, netmon_server, "/alerts")
    second.evaluate("window.__sameDocument = true")
    row_id = f"#alert-{alert.alert_id}"
    expect(second.locator(row_id)).to_have_attribute("data-state", "open")
    with first.expect_response(lambda r: r.url.endswith("/ack")) as answer:
        first.locator(f"{row_id} button.ack").click()
    assert answer.value.status == 200
    expect(first.locator(row_id)).to_have_attribute("data-state", "acknowledged")
    expect(second.locator(row_id)).to_have_attribute("data-state", "acknowledged")
    expect(second.locator(f"{row_id} .state")).to_contain_text("by ")
    assert second.evaluate("window.__sameDocument") is True
    screenshot(second, "alerts-acknowledged")


def test_analytics_shows_projection_totals_and_draws_charts(
    netmon_server: NetmonServer, context: BrowserContext, writer: EventLog
) -> None:
    page = context.new_page()
    login(page, netmon_server, "/analytics")
    expect(page.locator("text=not available yet")).to_have_count(0)
    now = time.time()
    talker = "10.77.0.1"
    writer.append(
        [flow(now - i * 600, src=talker, branch=("hq", "lab")[i % 2]) for i in range(30)]
        + [flow(now - 5, src="10.77.0.2", domain=XSS_DOMAIN, detections=(SSH,))]
    )

    def shows_talker() -> bool:
        page.reload()
        page.wait_for_selector("#tops[data-loaded]")  # the top lists load after the page
        return page.locator("#top-src_ip", has_text=talker).count() > 0

    wait_until(shows_talker, 10, "the projections to count the new flows", interval=0.3)
    expect(page.locator("#chart-minutes")).to_have_attribute("data-drawn", re.compile(r"^\d+$"))
    expect(page.locator("#chart-hours canvas")).to_have_count(1)
    expect(page.locator("#top-domain")).to_contain_text(XSS_DOMAIN)
    assert page.locator("main img").count() == 0
    screenshot(page, "analytics")
    page.goto(netmon_server.url + "/analytics?branch=lab")
    expect(page.locator(".branches a.active")).to_have_text("lab")


def test_a_real_agent_replays_an_ssh_attempt_seen_live_then_searched(
    netmon_server: NetmonServer, context: BrowserContext, tmp_path: Path
) -> None:
    attacker = "203.0.113.50"
    live = context.new_page()
    open_live(live, netmon_server)
    live.evaluate("window.__sameDocument = true")
    enrolled = subprocess.run(
        [str(NETMON), "agents", "add", "web-agent", "--branch", "hq",
         "--server-url", netmon_server.url.replace("http", "ws")],
        env=netmon_server.env, cwd=netmon_server.workdir, capture_output=True, text=True,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    config = tmp_path / "agent.toml"
    config.write_text(
        re.sub(r'spool_dir = ".*"', f'spool_dir = "{tmp_path / "spool"}"', enrolled.stdout)
    )
    capture = tmp_path / "ssh.pcap"
    write_ssh_attempt_pcap(capture, attacker, time.time())
    agent = subprocess.run(
        [str(NETMON), "agent", "run", "--config", str(config), "--pcap", str(capture),
         "--drain-timeout", "20"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert agent.returncode == 0, agent.stderr[-2000:]
    assert "not yet acknowledged" not in agent.stderr, agent.stderr[-2000:]
    # The agent exits once the server acknowledged (stored) its batches; from then on the live
    # feed has at most 1 s to show the flow, without a reload.
    row = live.locator("#live-rows tr", has_text=attacker)
    expect(row).to_be_visible(timeout=1000)
    expect(row).to_contain_text("SSH (22/tcp)")
    assert live.evaluate("window.__sameDocument") is True
    search = context.new_page()
    search.goto(f"{netmon_server.url}/events?q={attacker}")
    found = search.locator("#rows tr.row")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("10.0.0.22:22")
    found.click()
    expect(search.locator("#drawer")).to_contain_text("web-agent")
    screenshot(search, "events-agent-ssh")
    search.goto(netmon_server.url + "/admin")
    expect(search.locator("#enrolled-web-agent")).to_contain_text("hq")
    expect(search.locator("#users")).to_contain_text("admin")
    screenshot(search, "admin")
