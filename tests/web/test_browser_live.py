"""The Live page in headless Chromium: grouped rows pushed without reload, escaping, a flood that
hides no critical row, kiosk bounds, reconnects, and the real chain from an agent's SSH attempt
to an alert acknowledged live in another tab."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from netmon.storage.contract.events import (
    AlertAcknowledged,
    AlertOpened,
    Detection,
    FlowObserved,
)
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from tests.polling import wait_until
from tests.web.conftest import screenshot
from tests.web.flows import (
    SSH,
    XSS_DOMAIN,
    flow,
    ssh_detection,
    write_ssh_attempt_pcap,
)
from tests.web.harness import NETMON, NetmonServer, login

KIOSK_ROWS = 5
T = TypeVar("T")


@pytest.fixture(scope="module")
def writer(netmon_server: NetmonServer) -> Iterator[EventLog]:
    """Another writer of the server's store (as a second replica's ingest would be)."""
    with EventLog(netmon_server.data_dir, "other-replica", durability="none") as log:
        yield log


def open_live(page: Page, server: NetmonServer, path: str = "/") -> None:
    login(page, server, path)
    expect(page.locator("[ws-connect]")).to_have_count(1)
    expect(page.locator("body")).to_have_attribute("data-ws", "connected")


def wall_row(page: Page, source: str, branch: str = "hq") -> Locator:
    """The wall's activity rows of one source (one per minute)."""
    return page.locator(f'#live-rows tr[data-entity="{branch}|{source}"]')


def test_a_detection_appears_live_without_reload_and_escaped(
    netmon_server: NetmonServer, context: BrowserContext, writer: EventLog, dialogs: list[str]
) -> None:
    page = context.new_page()
    open_live(page, netmon_server)
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    event = ssh_detection(time.time(), src="203.0.113.77")
    hostile = ssh_detection(time.time(), src="203.0.113.78", domain=XSS_DOMAIN)
    writer.append([event])
    expect(wall_row(page, "203.0.113.77")).to_be_visible(timeout=1000)
    expect(wall_row(page, "203.0.113.77").locator(".what")).to_have_text(
        "1 flow to port 22 of 10.0.0.22"
    )
    writer.append([hostile])
    row = wall_row(page, "203.0.113.78")
    expect(row).to_be_visible()
    expect(row.locator(".domain")).to_have_text(XSS_DOMAIN)
    assert page.locator("#live img").count() == 0 and page.locator("[onerror]").count() == 0
    assert page.evaluate("window.__sameDocument") is True
    assert dialogs == []
    screenshot(page, "live")


SSH_HIGH = Detection(kind="critical_port", detail="SSH (22/tcp)", severity="high", rule="ssh")
RDP = Detection(kind="critical_port", detail="RDP (3389/tcp)", severity="critical", rule="rdp")
TELNET = Detection(
    kind="critical_port", detail="Telnet (23/tcp)", severity="critical", rule="telnet"
)
FLOODER = "198.51.100.66"
WALL_ROWS = 10


def attempt(
    at: float, branch: str, src: str, port: int, detection: Detection, dst: str = "10.20.0.23"
) -> FlowObserved:
    """A flow that started at ``at`` carrying one detection."""
    return flow(at + 1, branch=branch, src=src, dst=dst, dport=port, detections=(detection,))


def test_a_flood_is_one_grouped_row_and_never_pushes_a_critical_row_off_the_wall(
    netmon_server: NetmonServer, context: BrowserContext, writer: EventLog
) -> None:
    """5,000 high flows from one source after 3 critical RDP/Telnet attempts from others, on a
    wall of 10 rows: one row counts the flood, the 3 critical rows stay; live and after a reload."""
    branch = f"flood-{time.time_ns()}"  # this test's rows only
    page = context.new_page()
    open_live(page, netmon_server, f"/?rows={WALL_ROWS}&branch={branch}")
    page.evaluate("window.__sameDocument = true")
    minute = time.time() // 60 * 60 - 60  # the whole flood within the previous minute
    criticals = [
        attempt(minute + 1, branch, "203.0.113.5", 3389, RDP, dst="10.20.0.33"),
        attempt(minute + 2, branch, "203.0.113.6", 23, TELNET),
        attempt(minute + 3, branch, "192.0.2.7", 23, TELNET),
    ]
    writer.append(criticals)
    critical_rows = page.locator('#live-rows tr[data-severity="critical"]')
    expect(critical_rows).to_have_count(3)
    flood = [
        attempt(minute + 5 + i * 0.009, branch, FLOODER, 1000 + i % 500, SSH_HIGH, dst="10.20.0.9")
        for i in range(5000)
    ]
    for start in range(0, len(flood), 1000):  # as five agent batches would come
        writer.append(flood[start : start + 1000])
    flooder = wall_row(page, FLOODER, branch)

    def shows_the_flood_and_the_criticals() -> None:
        expect(flooder.locator(".what")).to_have_text("5,000 flows to 500 ports of 10.20.0.9")
        expect(flooder).to_have_count(1)
        expect(flooder.locator(".why")).to_have_text("SSH (22/tcp)")
        expect(critical_rows).to_have_count(3)
        for source, why in (
            ("203.0.113.5", "RDP"),
            ("203.0.113.6", "Telnet"),
            ("192.0.2.7", "Telnet"),
        ):
            expect(wall_row(page, source, branch).locator(".why")).to_contain_text(why)
        expect(page.locator("#live-rows tr")).to_have_count(4)

    shows_the_flood_and_the_criticals()
    assert page.evaluate("window.__sameDocument") is True
    page.reload()  # the snapshot a (re)connecting wall starts from is grouped the same way
    expect(page.locator("body")).to_have_attribute("data-ws", "connected")
    shows_the_flood_and_the_criticals()

    # More sources than the wall has rows: the oldest rows that are not critical go first.
    others = [attempt(time.time(), branch, f"10.66.0.{i}", 22, SSH_HIGH) for i in range(12)]
    writer.append(others)
    expect(wall_row(page, "10.66.0.11", branch)).to_be_visible()
    expect(page.locator("#live-rows tr")).to_have_count(WALL_ROWS)
    expect(critical_rows).to_have_count(3)
    expect(flooder).to_have_count(0)  # the oldest row that is not critical
    screenshot(page, "live-flood")


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
    # Each burst is awaited (its rows on top) before the next. The day crosses midnight, so a
    # burst can land in two date segments, which one poll may push in either order: the ticker
    # shows what arrived last, so which row of a burst ends on top is not fixed.
    start = time.time() - 86400
    for hour in range(24):
        burst = [
            ssh_detection(start + hour * 3600 + i * 60, src=f"198.18.{hour}.{i}") for i in range(10)
        ]
        writer.append(burst)
        expect(page.locator("#live-rows tr").first).to_contain_text(f"198.18.{hour}.")
        rows = page.locator("#live-rows tr").count()
        assert rows <= KIOSK_ROWS, f"{rows} rows in the DOM after hour {hour}"
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
    expect(wall_row(page, "198.19.0.1")).to_be_visible()
    assert page.locator("#live-rows tr").count() <= KIOSK_ROWS


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


# An operator marks SSH critical on hosts where it should never be seen (the default is "high",
# which the analysis worker does not alert on). A list replaces the defaults: keep Telnet and RDP.
SSH_CRITICAL = """
[[critical_ports]]
port = 22
rule = "ssh"
name = "SSH"
severity = "critical"

[[critical_ports]]
port = 23
rule = "telnet"
name = "Telnet"
severity = "critical"

[[critical_ports]]
port = 3389
rule = "rdp"
name = "RDP"
severity = "critical"
"""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NetmonServer]:
    """A server whose log holds only this test's events: the worker's output is all ours."""
    server = NetmonServer(tmp_path / "server")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def enrol_agent(server: NetmonServer, workdir: Path, extra: str = "") -> Path:
    """`netmon agents add` as an operator runs it; its printed agent.toml, plus ``extra``."""
    enrolled = subprocess.run(
        [str(NETMON), "agents", "add", "web-agent", "--branch", "hq",
         "--server-url", server.url.replace("http", "ws")],
        env=server.env, cwd=server.workdir, capture_output=True, text=True,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    spool = f'spool_dir = "{workdir / "spool"}"'
    config = workdir / "agent.toml"
    config.write_text(re.sub(r'spool_dir = ".*"', spool, enrolled.stdout) + extra)
    return config


def replay(config: Path, capture: Path) -> None:
    """`netmon agent run --pcap`: exits once the server acknowledged (stored) every batch."""
    agent = subprocess.run(
        [str(NETMON), "agent", "run", "--config", str(config), "--pcap", str(capture),
         "--drain-timeout", "20"],
        cwd=capture.parent, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert agent.returncode == 0, agent.stderr[-2000:]
    assert "not yet acknowledged" not in agent.stderr, agent.stderr[-2000:]


def stored(server: NetmonServer, kind: type[T]) -> list[T]:
    """Every event of type ``kind`` in the server's store."""
    return [e for e in EventLogReader(server.data_dir).scan(None, None) if isinstance(e, kind)]


def test_a_real_ssh_attempt_is_alerted_by_the_worker_and_acknowledged_live(
    own_server: NetmonServer, context: BrowserContext, tmp_path: Path, default_model: Path
) -> None:
    """The whole chain: agent -> store -> live feed -> search -> analysis worker -> alert -> ack."""
    attacker = "203.0.113.50"
    live = context.new_page()
    open_live(live, own_server)
    live.evaluate("window.__sameDocument = true")  # gone if the page reloads
    capture = tmp_path / "ssh.pcap"
    write_ssh_attempt_pcap(capture, attacker, time.time())
    replay(enrol_agent(own_server, tmp_path, SSH_CRITICAL), capture)
    # Stored by now: the live feed has at most 1 s to show the detection and the flow.
    # DetectionRaised at once, then its FlowObserved: one row, one flow.
    rows = wall_row(live, attacker)
    expect(rows).to_have_count(1, timeout=1000)
    expect(rows.locator(".why")).to_have_text("SSH (22/tcp)")
    expect(rows.locator(".severity")).to_have_text("critical")
    expect(rows.locator(".what")).to_have_text("1 flow to port 22 of 10.0.0.22")
    (ssh_flow,) = stored(own_server, FlowObserved)
    assert ssh_flow.src_ip == attacker and ssh_flow.severity == "critical"

    analyzed = own_server.analyze_once(default_model)
    assert analyzed.returncode == 0, analyzed.stderr[-2000:]
    (alert,) = stored(own_server, AlertOpened)
    # A critical-port alert is about the server that offers SSH; the attacker is its source.
    assert (alert.rule, alert.entity, alert.severity) == (
        "detection:critical_port",
        "10.0.0.22",
        "critical",
    )
    assert alert.evidence.sources == (attacker,)
    # The worker has exited, its alert is stored: on the Live page within 1 s, no reload.
    alert_row = live.locator('#live-rows tr[data-kind="alert"]', has_text=attacker)
    expect(alert_row).to_be_visible(timeout=1000)
    expect(alert_row).to_have_attribute("data-state", "open")
    expect(alert_row.locator(".why")).to_contain_text("alert detection:critical_port")
    expect(alert_row.locator(".source")).to_have_text("10.0.0.22")
    assert live.evaluate("window.__sameDocument") is True
    screenshot(live, "live-agent-ssh-alert")

    search = context.new_page()
    search.goto(f"{own_server.url}/events?q={attacker}")
    expect(search.locator("#rows tr.row")).to_have_count(2)  # the flow and its detection
    found = search.locator(f"#ev-{ssh_flow.id}")
    expect(found).to_contain_text("10.0.0.22:22")
    found.click()
    expect(search.locator("#drawer")).to_contain_text("web-agent")
    screenshot(search, "events-agent-ssh")

    first, second = context.new_page(), context.new_page()
    open_live(first, own_server, "/alerts")
    open_live(second, own_server, "/alerts")
    second.evaluate("window.__sameDocument = true")
    row_id = f"#alert-{alert.alert_id}"
    expect(second.locator(f"{row_id} .entity")).to_have_text("10.0.0.22")
    expect(second.locator(row_id)).to_have_attribute("data-state", "open")
    note = "<b>on it</b>: blocking at the edge"  # shown as text, like every stored value
    note_box = first.locator(f"{row_id} input.note")
    note_box.fill(note)
    # While the analyst types, other traffic arrives: every live push re-renders the list,
    # which must neither drop the typed note nor take the focus away from it.
    with (
        first.expect_response(lambda r: r.url.endswith("/alerts") and r.ok) as refreshed,
        EventLog(own_server.data_dir, "other-replica", durability="none") as other,
    ):
        other.append([ssh_detection(time.time(), src="203.0.113.51")])
    assert refreshed.value.request.method == "GET"
    expect(note_box).to_have_value(note)
    expect(note_box).to_be_focused()
    with first.expect_response(lambda r: r.url.endswith(f"/alerts/{alert.alert_id}/ack")) as ack:
        first.locator(f"{row_id} button.ack").click()
    assert ack.value.status == 200
    expect(first.locator(row_id)).to_have_attribute("data-state", "acknowledged")
    expect(first.locator(f"{row_id} .state .note")).to_have_text(note)
    expect(first.locator(f"{row_id} input.note")).to_have_value("")  # sent: not kept for Resolve
    expect(second.locator(row_id)).to_have_attribute("data-state", "acknowledged")
    expect(second.locator(f"{row_id} .state")).to_contain_text("by admin")
    expect(second.locator(f"{row_id} .state .note")).to_have_text(note)
    assert second.locator(f"{row_id} b").count() == 0
    # The Live page's row of the alert changed in place too.
    expect(alert_row.locator(".why .state")).to_have_text("acknowledged by admin")
    expect(live.locator('#live-rows tr[data-kind="alert"]', has_text=attacker)).to_have_count(1)
    assert second.evaluate("window.__sameDocument") is True
    (acknowledged,) = stored(own_server, AlertAcknowledged)
    assert (acknowledged.alert_id, acknowledged.by, acknowledged.note) == (
        alert.alert_id,
        "admin",
        note,
    )
    screenshot(second, "alerts-acknowledged")

    search.goto(own_server.url + "/admin")
    expect(search.locator("#enrolled-web-agent")).to_contain_text("hq")
    expect(search.locator("#users")).to_contain_text("admin")
    screenshot(search, "admin")
