"""The Events page in headless Chromium against a real ``netmon serve`` on loopback."""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import time
import zipfile

import httpx
from playwright.sync_api import BrowserContext, expect

from tests.web.conftest import screenshot
from tests.web.flows import SSH, XSS_DOMAIN, alert_opened, flow, ssh_detection, store
from tests.web.harness import NETMON, NetmonServer, login

PAGES = ["/", "/alerts", "/events", "/analytics", "/windows", "/model", "/archives", "/admin"]


def test_search_an_ip_open_the_drawer_and_export_csv(
    netmon_server: NetmonServer, context: BrowserContext, dialogs: list[str]
) -> None:
    now = time.time()
    attacker = "198.51.100.23"
    ssh_flow = flow(now - 30, src=attacker, dst="10.0.0.22", dport=22, detections=(SSH,))
    noise = [flow(now - 100 - i, src=f"10.0.1.{i}") for i in range(20)]
    store(netmon_server.data_dir, [ssh_flow, *noise])
    page = context.new_page()
    login(page, netmon_server, "/events")
    page.fill("#q", attacker)
    page.press("#q", "Enter")
    row = page.locator(f"#ev-{ssh_flow.id}")
    expect(row).to_be_visible()
    expect(page.locator("#rows tr.row")).to_have_count(1)
    assert f"q={attacker}" in page.url  # the search is a shareable link
    row.click()
    drawer = page.locator("#drawer")
    expect(drawer).to_have_class("drawer open")
    expect(drawer).to_contain_text("critical_port")
    expect(drawer).to_contain_text("SSH (22/tcp)")
    screenshot(page, "events-drawer")
    page.keyboard.press("Escape")
    expect(drawer).to_have_class("drawer")
    with page.expect_download() as download_info:
        page.click("#export-csv")
    path = download_info.value.path()
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["src_ip"], r["dst_port"]) for r in rows] == [(ssh_flow.id, attacker, "22")]
    # The shared link opens the same results in a fresh tab.
    other = context.new_page()
    other.goto(page.url)
    expect(other.locator(f"#ev-{ssh_flow.id}")).to_be_visible()
    assert dialogs == []


def test_hostile_domain_renders_as_text_on_every_page(
    netmon_server: NetmonServer, context: BrowserContext, dialogs: list[str]
) -> None:
    now = time.time()
    hostile = flow(now - 5, src="192.0.2.66", domain=XSS_DOMAIN, detections=(SSH,))
    store(netmon_server.data_dir, [hostile, ssh_detection(now - 4, src="192.0.2.66")])
    page = context.new_page()
    login(page, netmon_server, "/")
    for path in [*PAGES, "/events?q=domain:evil", f"/events/{hostile.id}"]:
        page.goto(netmon_server.url + path)
        page.wait_for_load_state("networkidle")
        assert page.locator("img").count() == 0, path
        assert page.locator("[onerror]").count() == 0, path
    expect(page.locator("body")).to_contain_text(XSS_DOMAIN)  # shown, as text
    page.goto(netmon_server.url + "/events?q=domain:evil")
    expect(page.locator("td.domain").first).to_have_text(XSS_DOMAIN)
    page.locator("tr.row").first.click()
    expect(page.locator("#drawer .domain")).to_have_text(XSS_DOMAIN)
    assert page.locator("img").count() == 0
    assert dialogs == []


def test_every_page_renders_and_is_captured(
    netmon_server: NetmonServer, context: BrowserContext
) -> None:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(netmon_server.url + "/")
    if "/login" in page.url:  # identity's login page, in the dashboard's style
        expect(page.locator("#login")).to_have_css("background-color", "rgb(22, 27, 34)")
        screenshot(page, "login")
    login(page, netmon_server, "/")
    for path in PAGES:
        response = page.goto(netmon_server.url + path)
        assert response is not None and response.status == 200, path
        expect(page.locator("main h1")).to_be_visible()
        screenshot(page, "page" + (path.replace("/", "-") if path != "/" else "-live"))
    missing = page.goto(netmon_server.url + "/no-such-page")
    assert missing is not None and missing.status == 404
    expect(page.locator("h1")).to_have_text("Page not found")
    assert errors == []


def test_archived_date_is_listed_downloadable_and_still_searchable(
    netmon_server: NetmonServer, context: BrowserContext
) -> None:
    old = time.time() - 10 * 86400
    day = dt.datetime.fromtimestamp(old, dt.UTC).date().isoformat()
    flows = [flow(old + i, branch="vault", src="198.51.100.200") for i in range(25)]
    store(netmon_server.data_dir, flows)  # the writer closes: its segments are sealed
    env = {**netmon_server.env, "NETMON_ARCHIVE__GRACE_S": "0", "NETMON_ARCHIVE__AFTER_DAYS": "7"}
    done = subprocess.run(
        [str(NETMON), "archive", "once"], env=env, cwd=netmon_server.workdir,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    page = context.new_page()
    login(page, netmon_server, "/archives")
    row = page.locator(f"#archive-{day}_vault\\.zip")
    expect(row).to_contain_text("25")
    screenshot(page, "archives")
    with page.expect_download() as download_info:
        row.locator("a.download").click()
    with zipfile.ZipFile(download_info.value.path()) as archive:
        assert archive.testzip() is None
        assert any(name.endswith(".jsonl") for name in archive.namelist())
    # The archived date is still searchable, with the same results.
    page.goto(f"{netmon_server.url}/events?q=198.51.100.200+from:{day}")
    expect(page.locator("#rows tr.row")).to_have_count(25)


def test_an_analyst_of_another_branch_sees_only_their_branch(netmon_server: NetmonServer) -> None:
    now = time.time()
    ours, theirs = flow(now - 3, branch="lab", src="10.55.0.1"), flow(now - 3, src="10.55.0.1")
    alert = alert_opened(now - 2, branch="hq")
    store(netmon_server.data_dir, [ours, theirs, alert])
    admin_password = netmon_server.admin_password()
    assert admin_password is not None, "the server printed no first-admin password"

    def token(username: str, password: str) -> dict[str, str]:
        answer = httpx.post(
            f"{netmon_server.url}/api/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": password},
        )
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    created = httpx.post(
        f"{netmon_server.url}/api/v1/users",
        json={"username": "lab-analyst", "role": "analyst", "branches": ["lab"]},
        headers=token("admin", admin_password),
    )
    created.raise_for_status()
    lab = token("lab-analyst", created.json()["password"])
    with httpx.Client(base_url=netmon_server.url, headers=lab) as http:
        page = http.get("/events", params={"q": "10.55.0.1"})
        assert f"ev-{ours.id}" in page.text and f"ev-{theirs.id}" not in page.text
        asked = http.get("/events", params={"q": "10.55.0.1 branch:hq"})
        assert f"ev-{theirs.id}" not in asked.text
        exported = list(csv.DictReader(io.StringIO(http.get("/events.csv?q=10.55.0.1").text)))
        assert [row["id"] for row in exported] == [ours.id]
        assert http.get(f"/events/{theirs.id}").status_code == 404
        assert http.get(f"/events/{ours.id}").status_code == 200
        assert alert.alert_id not in http.get("/alerts").text
        refused = http.post(f"/alerts/{alert.alert_id}/ack")
        assert refused.status_code == 404
