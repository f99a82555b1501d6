"""The deployment topology on loopback: nginx (Debian package) in front of three ``netmon serve``
replicas sharing one data dir, plus a dashboard client that reconnects like a browser tab would.

Used by tests/live/test_replicas.py and bench/live.py. Logging in is done in one place
(``Cluster.login``), so an auth change is adapted here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import websockets
from cryptography.fernet import Fernet

from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO_ROOT / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _sub(text: str, pattern: str, replacement: str, count: int) -> str:
    """Replace exactly ``count`` matches of ``pattern``, or fail: the template changed."""
    result, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if found != count:
        raise AssertionError(
            f"nginx.conf: expected {count} match(es) of {pattern!r}, found {found}"
        )
    return result


def render_nginx_conf(
    template: str, *, listen_port: int, upstream_ports: list[int], prefix: Path
) -> str:
    """nginx.conf for loopback: the same file with hosts, ports and paths rewritten."""
    text = template
    user = "user root root;" if os.geteuid() == 0 else ""
    text = _sub(text, r"^user nginx;$", user, 1)
    text = _sub(text, r"^worker_processes auto;$", "worker_processes 1;", 1)
    text = _sub(text, r"/var/run/nginx\.pid", str(prefix / "nginx.pid"), 1)
    text = _sub(text, r"/var/log/nginx/", f"{prefix}/", 2)
    text = _sub(text, r"/var/cache/nginx/", f"{prefix}/cache/", 6)
    text = _sub(text, r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{listen_port};", 1)
    return _replace_upstreams(text, upstream_ports)


def _replace_upstreams(text: str, ports: list[int]) -> str:
    found = re.findall(r"server replica-\d:8080", text)
    if len(found) != len(ports):
        raise AssertionError(f"nginx.conf: {len(found)} upstream servers, expected {len(ports)}")
    for number, port in enumerate(ports, start=1):
        text = text.replace(f"server replica-{number}:8080", f"server 127.0.0.1:{port}")
    return text


class Replica:
    """One ``netmon serve`` subprocess."""

    def __init__(self, name: str, port: int, log_path: Path) -> None:
        self.name, self.port, self.log_path = name, port, log_path
        self.process: subprocess.Popen[bytes] | None = None


class Cluster:
    """nginx + N replicas on loopback, sharing ``root/data``."""

    def __init__(self, root: Path, replicas: int = 3, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.nginx_prefix = root / "nginx"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NETMON_")},
            "NETMON_STORE__DATA_DIR": str(self.data_dir),
            "NETMON_SERVER__SECRET_KEY": Fernet.generate_key().decode(),
            "NETMON_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
            # Cheap password hashing: the tests log in, they do not test argon2's cost.
            "NETMON_AUTH__ARGON2_TIME_COST": "1",
            "NETMON_AUTH__ARGON2_MEMORY_KIB": "8192",
            "NETMON_AUTH__ARGON2_PARALLELISM": "1",
            **(env or {}),
        }
        self.replicas = [
            Replica(f"r{n}", free_port(), root / f"replica-r{n}.log")
            for n in range(1, replicas + 1)
        ]
        self.nginx: subprocess.Popen[bytes] | None = None
        self.password = ""

    # --- processes ----------------------------------------------------------------------------

    def netmon(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a ``netmon`` CLI command against the cluster's settings."""
        return subprocess.run(
            [sys.executable, "-m", "netmon.app.cli", *args],
            env={**self.env, "PYTHONPATH": str(REPO_ROOT)},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def create_admin(self) -> None:
        """The first admin, made with the CLI (its generated password is kept for login)."""
        self.root.mkdir(parents=True, exist_ok=True)
        created = self.netmon("users", "create-admin", "--username", "admin", "--generate")
        match = re.search(r"password \(shown once\): (\S+)", created.stdout)
        assert match, created.stdout
        self.password = match.group(1)

    def start(self) -> None:
        """Create the admin, start every replica and nginx, wait until all answer."""
        self.create_admin()
        for replica in self.replicas:
            self.start_replica(replica)
        for replica in self.replicas:
            wait_http(f"http://127.0.0.1:{replica.port}/healthz", replica)
        self.start_nginx()
        wait_http(f"{self.url}/healthz", None)

    def start_replica(self, replica: Replica) -> None:
        """Start (or restart) one replica."""
        env = {**self.env, "NETMON_SERVER__REPLICA": replica.name, "PYTHONPATH": str(REPO_ROOT)}
        handle = replica.log_path.open("ab")
        replica.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "netmon.app.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(replica.port),
            ],
            env=env,
            cwd=self.root,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()

    def start_nginx(self) -> None:
        """Render nginx.conf for loopback and run nginx in the foreground."""
        (self.nginx_prefix / "cache").mkdir(parents=True, exist_ok=True)
        conf = self.nginx_prefix / "nginx.conf"
        conf.write_text(
            render_nginx_conf(
                NGINX_CONF.read_text(),
                listen_port=self.port,
                upstream_ports=[replica.port for replica in self.replicas],
                prefix=self.nginx_prefix,
            )
        )
        with (self.nginx_prefix / "stderr.log").open("ab") as stderr:
            self.nginx = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(self.nginx_prefix),
                    "-c",
                    str(conf),
                    "-e",
                    str(self.nginx_prefix / "startup.log"),
                    "-g",
                    "daemon off;",
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def kill_replica(self, replica: Replica) -> None:
        """kill -9, and reap it."""
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGKILL)
        replica.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop nginx and every replica (gracefully, then hard)."""
        processes = [r.process for r in self.replicas if r.process] + (
            [self.nginx] if self.nginx else []
        )
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM if process is not self.nginx else signal.SIGQUIT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def logs(self) -> str:
        """Every process's log, for assertion messages."""
        parts = [
            f"--- {r.name}\n{r.log_path.read_text(errors='replace')[-4000:]}"
            for r in self.replicas
            if r.log_path.exists()
        ]
        for name in ("error.log", "stderr.log", "startup.log"):
            path = self.nginx_prefix / name
            if path.exists():
                parts.append(f"--- nginx {name}\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    def writer_of(self, event_id: str) -> str:
        """The replica (writer) whose segment holds ``event_id``; "" when none does yet."""
        needle = f'"id":"{event_id}"'.encode()
        for path in (self.data_dir / "events").glob("date=*/branch=*/*.jsonl"):
            if needle in path.read_bytes():
                return path.name.rsplit("-", 1)[0]
        return ""

    # --- clients ------------------------------------------------------------------------------

    def enroll_agent(self, name: str, branch: str) -> str:
        """Enrol an agent in the shared registry; its key (what `netmon agents add` prints)."""
        from netmon.storage.agents import AgentRegistry

        return AgentRegistry(self.data_dir, self.env["NETMON_SERVER__SECRET_KEY"]).add(name, branch)

    def login(
        self, username: str = "admin", password: str | None = None, url: str | None = None
    ) -> dict[str, str]:
        """Headers of a logged-in user (OAuth2 password grant through nginx); admin by default."""
        answer = httpx.post(
            f"{url or self.url}/api/v1/auth/token",
            data={
                "grant_type": "password",
                "username": username,
                "password": password or self.password,
            },
            timeout=30,
        )
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def create_user(self, username: str, role: str, branches: list[str]) -> dict[str, str]:
        """Create a user through the admin API and return its login headers."""
        answer = httpx.post(
            f"{self.url}/api/v1/users",
            json={"username": username, "role": role, "branches": branches},
            headers=self.login(),
            timeout=30,
        )
        answer.raise_for_status()
        return self.login(username, answer.json()["password"])


class Agent:
    """A real agent transport (agent/transport.py) streaming to the cluster through nginx."""

    def __init__(self, cluster: Cluster, name: str, branch: str, spool_dir: Path) -> None:
        from netmon.agent.transport import AgentTransport, TransportConfig

        config = TransportConfig(
            key=cluster.enroll_agent(name, branch),
            spool_dir=str(spool_dir),
            batch_max_delay_s=0.02,
            critical_delay_s=0.01,
            backoff_base_s=0.1,
            backoff_cap_s=1.0,
            offline_archives=False,
        )
        self.name = name
        self.transport = AgentTransport(name, cluster.ws_url, config)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.transport.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def emit(self, events: list[Any]) -> None:
        for event in events:
            self.transport.emit(event)
        self.transport.flush()


def wait_http(url: str, replica: Replica | None, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200 (fail early if the replica died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            replica is not None
            and replica.process is not None
            and replica.process.poll() is not None
        ):
            raise AssertionError(f"{replica.name} exited: {replica.log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.05)  # polling a real condition with a deadline
    raise AssertionError(f"{url} did not answer within {timeout} s")


class Dashboard:
    """A dashboard tab on /ws/live.json: records every event id with its arrival time, follows
    snapshots, and reconnects (through nginx, so to any live replica) when the connection drops.
    """

    def __init__(self, url: str, headers: Callable[[], dict[str, str]], name: str = "") -> None:
        self.url, self.headers, self.name = url, headers, name
        self.received: dict[str, float] = {}  # event id -> first arrival (monotonic)
        self.replicas: list[str] = []  # the replica of each connection, in order
        self.reconnects: list[float] = []  # seconds from a drop to the next snapshot
        self.missed_markers: list[int] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def replica(self) -> str:
        return self.replicas[-1] if self.replicas else ""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        dropped_at: float | None = None
        while True:
            try:
                async with websockets.connect(
                    self.url, additional_headers=self.headers(), open_timeout=5, compression=None
                ) as socket_:
                    async for raw in socket_:
                        message = json.loads(raw)
                        self._take(message)
                        if message["type"] == "snapshot" and dropped_at is not None:
                            self.reconnects.append(time.monotonic() - dropped_at)
                            dropped_at = None
            except (TimeoutError, OSError, websockets.exceptions.WebSocketException):
                pass
            self.connected.clear()
            if dropped_at is None:
                dropped_at = time.monotonic()
            await asyncio.sleep(0.1)  # reconnect backoff, like the dashboard's script

    def _take(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        if message["type"] == "snapshot":
            self.replicas.append(message["replica"])
            for event in message["events"]:
                self.received.setdefault(event["id"], now)
            self.connected.set()
        elif message["type"] == "event":
            self.received.setdefault(message["event"]["id"], now)
        elif message["type"] == "missed":
            self.missed_markers.append(message["count"])
