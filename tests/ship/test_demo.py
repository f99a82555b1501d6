"""The README's main command run for real: ``netmon demo`` in a fresh directory, in Chromium."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.polling import wait_until
from tests.ports import free_port
from tests.web.harness import CHROMIUM, CHROMIUM_ARGS, NETMON, PASSWORD_LINE

STARTED = re.compile(r"started (\w+) \(pid (\d+)\)")


class Demo:
    """``netmon demo`` as a user runs it, with its console collected line by line."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
        self.process = subprocess.Popen(
            [str(NETMON), "demo", "--dir", str(workdir / ".netmon-demo"),
             "--port", str(self.port), "--interval", "3", *extra],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def console(self) -> str:
        return "".join(self.lines)

    def password(self) -> str | None:
        found = PASSWORD_LINE.search(self.console())
        return found.group(1) if found else None

    def children(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in STARTED.findall(self.console())}

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"netmon demo exited {self.process.returncode}:\n{self.console()}")
        try:
            return httpx.get(self.url + "/login", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, as in a terminal; the exit status."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.pump.join(timeout=5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.children().values():  # never leave a child behind a failed test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.pump.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent may not have reaped it yet).
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path)
    try:
        yield running
    finally:
        running.kill()


def test_netmon_demo_shows_live_alerts_after_login_and_stops_cleanly(demo: Demo) -> None:
    wait_until(demo.answers, 120, f"the demo's dashboard\n{demo.console()}", interval=0.2)
    password = wait_until(demo.password, 30, f"the printed one-time password\n{demo.console()}")
    assert f"dashboard: {demo.url}/" in demo.console()
    children = wait_until(
        lambda: demo.children() if len(demo.children()) == 4 else None, 30, "four started parts"
    )
    assert set(children) == {"server", "agent", "analyzer", "archiver"}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(demo.url + "/")
            page.fill("#username", "admin")
            page.fill("#password", password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/login" not in url)
            expect(page.locator("body")).to_have_attribute("data-ws", "connected")
            page.evaluate("window.__sameDocument = true")
            seen = set(page.eval_on_selector_all("#live-rows tr", "rows => rows.map(r => r.id)"))
            # A new round of demo traffic arrives every 3 s: its Telnet/RDP attempts are pushed
            # into the open page (no reload) as critical rows.
            fresh = page.locator("#live-rows tr", has_text=re.compile("Telnet|RDP"))
            wait_until(
                lambda: any(
                    row_id not in seen
                    for row_id in fresh.evaluate_all("rows => rows.map(r => r.id)")
                ),
                30,
                "a live alert from the demo agent",
                interval=0.2,
            )
            assert page.evaluate("window.__sameDocument") is True
            expect(page.locator("#agent-demo-agent")).to_contain_text("up")
            # The API docs page renders the OpenAPI document under the page's own CSP.
            page.goto(demo.url + "/docs")
            expect(page.locator(".opblock").first).to_be_visible()
            assert page.locator(".opblock").count() >= 20
        finally:
            browser.close()

    assert demo.interrupt() == 0, demo.console()
    assert "netmon demo: stopped" in demo.console()
    for name, pid in children.items():
        assert not alive(pid), f"{name} (pid {pid}) still running after Ctrl-C"


def test_demo_reports_a_taken_port_and_leaves_nothing_running(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
        result = subprocess.run(
            [str(NETMON), "demo", "--dir", str(tmp_path / "d"), "--port", str(port)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "server exited with status" in result.stderr
    assert "address already in use" in result.stderr.lower()


def token_status(demo: Demo, password: str) -> int:
    form = {"grant_type": "password", "username": "admin", "password": password}
    return httpx.post(demo.url + "/api/v1/auth/token", data=form, timeout=30).status_code


def test_a_second_run_keeps_the_data_and_can_issue_a_new_admin_password(tmp_path: Path) -> None:
    first = Demo(tmp_path)
    try:
        wait_until(first.answers, 120, "the first run's dashboard", interval=0.2)
        old = wait_until(first.password, 30, f"the first password\n{first.console()}")
        assert first.interrupt() == 0, first.console()
    finally:
        first.kill()
    second = Demo(tmp_path, "--new-password")
    try:
        wait_until(second.answers, 120, "the second run's dashboard", interval=0.2)
        new = wait_until(second.password, 30, f"the new password\n{second.console()}")
        assert new != old, second.console()
        assert token_status(second, new) == 200, second.console()
        assert token_status(second, old) == 400, second.console()  # the reset replaced it
        assert second.interrupt() == 0, second.console()
    finally:
        second.kill()


def telnet_seen(data_dir: Path) -> bool:
    """Whether a stored event carries the agent's telnet finding."""
    return any(
        '"rule":"telnet"' in segment.read_text(errors="replace")
        for segment in data_dir.glob("events/date=*/branch=*/*.jsonl")
    )


def knock(port: int) -> None:
    """One TCP connection attempt to 127.0.0.1:PORT (refused or not, it is a flow)."""
    import socket

    with socket.socket() as sock, contextlib.suppress(OSError):
        sock.settimeout(0.5)
        sock.connect(("127.0.0.1", port))


@pytest.mark.skipif(os.geteuid() != 0, reason="--live captures raw packets: needs root")
def test_live_demo_captures_loopback_and_flags_a_telnet_attempt(demo_live: Demo) -> None:
    wait_until(demo_live.answers, 120, f"the live demo\n{demo_live.console()}", interval=0.2)
    data_dir = demo_live.workdir / ".netmon-demo" / "data"

    def attempt() -> bool:
        knock(23)  # at most one attempt per poll: bounded traffic on loopback
        return telnet_seen(data_dir)

    wait_until(attempt, 60, "a telnet finding from the live capture", interval=1.0)
    assert demo_live.interrupt() == 0, demo_live.console()


@pytest.fixture
def demo_live(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path, "--live", "lo")
    try:
        yield running
    finally:
        running.kill()


def test_killing_the_demo_outright_still_stops_every_part(demo: Demo) -> None:
    wait_until(demo.answers, 120, f"the demo's dashboard\n{demo.console()}", interval=0.2)
    children = wait_until(
        lambda: demo.children() if len(demo.children()) == 4 else None, 30, "four started parts"
    )
    demo.process.kill()  # SIGKILL: no handler runs in the supervisor
    demo.process.wait(timeout=10)
    for name, pid in children.items():
        wait_until(lambda pid=pid: not alive(pid), 30, f"{name} (pid {pid}) to stop")
