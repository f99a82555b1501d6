"""Fixtures for the transport tests: a real ``netmon serve`` process on loopback, enrolled
agents, synthetic flows and a reader of what the store holds."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from netmon.storage.agents import AgentRegistry
from netmon.storage.contract.events import FlowObserved, new_event_id
from tests.conftest import REPO_ROOT
from tests.polling import wait_until
from tests.ports import free_port


class PortTaken(Exception):
    """The server could not bind its port."""


class ServerProcess:
    """``python -m netmon.app.cli serve`` in a subprocess, on its own data dir and port."""

    def __init__(self, root: Path, secret: str, replica: str = "r1", **ingest: object) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.config = root / f"{replica}.toml"
        lines = [
            f'[store]\ndata_dir = "{self.data_dir}"\n',
            f'[server]\nreplica = "{replica}"\nsecret_key = "{secret}"\n',
            "[ingest]\n",
        ]
        lines += [f"{key} = {value}\n" for key, value in ingest.items()]
        self.config.write_text("".join(lines))
        self.log_path = root / f"{replica}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False
        self.log_offset = 0

    def start(self) -> ServerProcess:
        """Start and wait until /healthz answers. A first start that loses its port to another
        process (other test runs share this machine) moves to a new port."""
        for _attempt in range(3):
            self._spawn()
            try:
                wait_until(
                    self._healthy, 60, f"server on port {self.port} (log {self.log_path})", 0.05
                )
                self.started = True
                return self
            except PortTaken:
                if self.started:
                    raise
                self.port = free_port()
                self.url = f"ws://127.0.0.1:{self.port}"
                self.http_url = f"http://127.0.0.1:{self.port}"
        raise AssertionError("no free port for the server after 3 attempts")

    def _spawn(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        env.pop("NETMON_CONFIG", None)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "netmon.app.cli",
                    "serve",
                    "--config",
                    str(self.config),
                    "--port",
                    str(self.port),
                ],
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            output = self.log_path.read_text(errors="replace")[self.log_offset :]
            if "address already in use" in output.lower():
                raise PortTaken(self.port)
            raise AssertionError(f"server exited: {output[-3000:]}")
        try:
            return httpx.get(f"{self.http_url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL if it hangs)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_text(self) -> str:
        """What the server logged so far."""
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def secret() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def make_server(tmp_path: Path, secret: str) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def make(replica: str = "r1", **ingest: object) -> ServerProcess:
        server = ServerProcess(tmp_path, secret, replica, **ingest)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def registry(tmp_path: Path, secret: str) -> AgentRegistry:
    return AgentRegistry(tmp_path / "data", secret)


def make_flow(agent_id: str, index: int, now: float | None = None) -> FlowObserved:
    """A synthetic flow whose source port and address encode ``index`` (to count it back)."""
    now = time.time() if now is None else now
    return FlowObserved(
        id=new_event_id(now),
        ts=now,
        branch="",
        agent_id=agent_id,
        first_seen=now - 1.0,
        last_seen=now,
        src_ip=f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}",
        src_port=index % 65536,
        dst_ip="192.0.2.10",
        dst_port=443,
        protocol=6,
        src2dst_packets=3,
        src2dst_bytes=180,
        dst2src_packets=2,
        dst2src_bytes=120,
        domain=f"i{index}.example",
    )


def flow_index(event: FlowObserved) -> int:
    """The ``index`` a make_flow event was made with."""
    return int(event.domain[1:].split(".")[0])


def stored_events(data_dir: Path) -> list:  # type: ignore[type-arg]
    """Every event in the store, in log order."""
    from netmon.storage.log_reader import EventLogReader

    if not (data_dir / "events").exists():
        return []
    return list(EventLogReader(data_dir).scan(None, None))


def flow_counts(data_dir: Path) -> collections.Counter[int]:
    """How many times each synthetic flow index is stored."""
    return collections.Counter(
        flow_index(event) for event in stored_events(data_dir) if isinstance(event, FlowObserved)
    )
