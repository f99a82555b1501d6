"""A real ``netmon serve`` on a free loopback port, and a login helper for Playwright pages.

The server runs as a subprocess with its own data dir, exactly as an operator starts it; the
tests write events with a real ``EventLog`` writer into the same data dir (as another replica
would) or through real agents, and drive Debian's Chromium against it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from tests.polling import wait_until
from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NETMON = Path(sys.executable).parent / "netmon"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD_LINE = re.compile(r"one-time password:\s*\n\s*\n\s*(\S+)")


class NetmonServer:
    """One ``netmon serve`` subprocess; restartable on the same port and data dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.env = {
            **os.environ,
            "NETMON_STORE__DATA_DIR": str(self.data_dir),
            "NETMON_STORE__DURABILITY": "none",
            "NETMON_SERVER__SECRET_KEY": Fernet.generate_key().decode(),
            "NETMON_SERVER__REPLICA": "web-test",
            # Cheap hashing: the tests log in often; the policy is tested by identity.
            "NETMON_AUTH__ARGON2_TIME_COST": "1",
            "NETMON_AUTH__ARGON2_MEMORY_KIB": "8192",
            "NETMON_AUTH__ARGON2_PARALLELISM": "1",
        }

    def start(self) -> None:
        """Start and wait until /healthz answers."""
        self.process = subprocess.Popen(
            [str(NETMON), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.workdir,  # no stray .env from the repo
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.process,), daemon=True)
        self._pump_thread.start()
        wait_until(self._healthy, 30, f"netmon serve on {self.url}\n{self.log()}")

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                self.output.append(line)
        except ValueError:
            pass  # closed by stop()

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"netmon serve exited {self.process.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return "".join(self.output[-200:])

    def admin_password(self) -> str | None:
        """The first admin's one-time password printed on the console (None without identity)."""
        found = PASSWORD_LINE.search("".join(self.output))
        return found.group(1) if found else None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and close its pipe."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._pump_thread.join(timeout=5)  # it ends at EOF, now that the process is gone
        if process.stdout is not None:
            process.stdout.close()

    def analyze_once(self, model: Path) -> subprocess.CompletedProcess[str]:
        """Run the analysis worker (``netmon analyze --once``) over this server's data dir."""
        return subprocess.run(
            [str(NETMON), "analyze", "--once", "--model", str(model)],
            env=self.env,  # the server's settings: same data dir, same secret key
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def restart(self) -> None:
        self.stop()
        self.start()


def login(page, server: NetmonServer, path: str = "/") -> None:  # type: ignore[no-untyped-def]
    """Open ``path``; if the server asks for a login, log in as the first admin."""
    page.goto(server.url + path)
    if "/login" not in page.url:
        return  # a build without identity: pages are open
    password = wait_until(server.admin_password, 10, "the first admin's password on the console")
    page.fill("#username", "admin")
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
