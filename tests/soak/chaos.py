"""The chaos soak: the whole deployment on loopback under load while things break.

nginx + three ``netmon serve`` replicas (tests/live/cluster.py) + the analysis worker + the
archive manager, their data dir on a small tmpfs mounted for the run; agent-fleet processes
(tests/soak/fleet.py, the real agent transport) stream synthetic flows through nginx; a
dashboard WebSocket client counts the critical probes it receives. Meanwhile, on a schedule:

* a random replica is killed with SIGKILL and restarted (every ``kill_every_s``);
* nginx is reloaded (``nginx -s reload`` with the test prefix, every ``reload_every_s``);
* one agent's network is cut (its proxy drops and refuses connections) and its clock jumps
  more than an hour, so it seals an hourly offline ZIP that it uploads when the network returns;
* the data volume fills up (a ballast file takes every free byte): ingest must stop
  acknowledging while agents spool, then resume once the ballast is deleted.

At the end the fleets drain their spools and tests/soak/checker.py compares every agent's ledger
with the store. Needs root (mount) and nginx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from tests.live.cluster import NGINX, Cluster, Dashboard, Replica, wait_http
from tests.soak.checker import SoakReport, check
from tests.soak.fleet import AgentSpec, FleetConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


class SoakConfig(msgspec.Struct, frozen=True, kw_only=True):
    seconds: float = 180.0
    rate: int = 2000  # flows/s, all agents together
    agents: int = 20
    processes: int = 4
    kill_every_s: float = 40.0
    reload_every_s: float = 30.0
    cut_at_s: float = 15.0
    cut_for_s: float = 30.0
    full_at_s: float = 75.0
    full_for_s: float = 20.0
    volume_mb: int = 1024
    model_path: str = ""  # a built model for the worker; empty: the worker builds one
    seed: int = 11


class Timeline:
    """What happened when (seconds since the start), for the report."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.entries: list[str] = []
        self.figures: dict[str, Any] = {}

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.start:7.1f}s {text}"
        self.entries.append(line)
        print(f"soak: {line}", file=sys.stderr, flush=True)


def mount_tmpfs(path: Path, size_mb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
        check=True,
    )


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _biggest_files(root: Path, count: int) -> list[str]:
    """The ``count`` largest files under ``root`` as "relative/path SIZE" (for the timeline)."""
    sizes = []
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                sizes.append((path.stat().st_size, path))
    sizes.sort(reverse=True)
    return [f"{path.relative_to(root)} {size:,}" for size, path in sizes[:count]]


def fill_up(ballast: Path) -> None:
    """Take every free byte of the volume: preallocate most, then write until ENOSPC."""
    with ballast.open("wb") as handle:
        with contextlib.suppress(OSError):
            os.posix_fallocate(handle.fileno(), 0, max(0, free_bytes(ballast.parent) - 2**20))
        handle.seek(0, os.SEEK_END)
        block = b"\0" * 4096
        with contextlib.suppress(OSError):  # ENOSPC: the volume is full
            while True:
                os.write(handle.fileno(), block)


class Child:
    """A supervised CLI process (worker, archive manager): restarted if it exits."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []

    def start(self) -> None:
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT
            )

    def check(self, timeline: Timeline) -> None:
        if self.process is not None and (code := self.process.poll()) is not None:
            self.exits.append(code)
            timeline.note(f"{self.name} exited with status {code}; restarting it")
            self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Soak:
    def __init__(self, root: Path, config: SoakConfig) -> None:
        self.root, self.config = root, config
        self.random = random.Random(config.seed)
        self.timeline = Timeline()
        env = {
            "NETMON_ARCHIVE__INTERVAL_S": "10",
            "NETMON_ARCHIVE__MIN_FREE_BYTES": "0",
            "NETMON_ARCHIVE__MIN_FREE_PERCENT": "0",
        }
        if config.model_path:
            env["NETMON_ANALYSIS__MODEL_PATH"] = config.model_path
        self.cluster = Cluster(root, replicas=3, env=env)
        self.fleets: list[subprocess.Popen[bytes]] = []
        self.cut_fleet: subprocess.Popen[bytes] | None = None
        self.children: list[Child] = []
        self.replica_exits: list[str] = []
        self.killing: Replica | None = None
        self._headers: dict[str, str] = {}
        self._headers_at = 0.0

    # --- setup --------------------------------------------------------------------------------

    def start(self) -> None:
        mount_tmpfs(self.cluster.data_dir, self.config.volume_mb)
        self.cluster.start()
        cli = [sys.executable, "-m", "netmon.app.cli"]
        env = {**self.cluster.env, "PYTHONPATH": str(REPO_ROOT)}
        for name, argv in (("worker", [*cli, "analyze"]), ("archiver", [*cli, "archive", "run"])):
            child = Child(name, argv, env, self.root / f"{name}.log")
            child.start()
            self.children.append(child)
        self._start_fleets()
        self.timeline.note(
            f"started: {self.config.agents} agents in {self.config.processes} processes, "
            f"{self.config.rate} flows/s"
        )

    def _start_fleets(self) -> None:
        per_agent = self.config.rate / self.config.agents
        names = [f"agent-{n:02d}" for n in range(self.config.agents)]
        specs = [
            AgentSpec(
                name,
                self.cluster.enroll_agent(name, "soak"),
                str(self.root / "agents" / name),
                proxied=(n == 0),
            )
            for n, name in enumerate(names)
        ]
        for index in range(self.config.processes):
            mine = specs[index :: self.config.processes]
            config = FleetConfig(
                server_url=self.cluster.ws_url,
                agents=mine,
                rate_per_agent=per_agent,
                status_path=str(self.root / f"fleet-{index}.status.json"),
                ledger_path=str(self.root / f"fleet-{index}.ledger.json"),
            )
            path = self.root / f"fleet-{index}.json"
            path.write_bytes(msgspec.json.encode(config))
            with (self.root / f"fleet-{index}.log").open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tests.soak.fleet", str(path)],
                    cwd=REPO_ROOT,
                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.fleets.append(process)
            if any(spec.proxied for spec in mine):
                self.cut_fleet = process

    def headers(self) -> dict[str, str]:
        """Login headers for the dashboard, refreshed before the access token expires."""
        if time.monotonic() - self._headers_at > 300:
            with contextlib.suppress(Exception):  # the cluster may be mid-chaos: keep the old
                self._headers = self.cluster.login()
                self._headers_at = time.monotonic()
        return self._headers

    # --- observing ----------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        agents: dict[str, dict[str, Any]] = {}
        for index in range(len(self.fleets)):
            path = self.root / f"fleet-{index}.status.json"
            with contextlib.suppress(OSError, ValueError):
                agents.update(json.loads(path.read_text())["agents"])
        return agents

    def acked(self) -> int:
        return sum(agent["acked"] for agent in self.status().values())

    def supervise(self) -> None:
        for child in self.children:
            child.check(self.timeline)
        for replica in self.cluster.replicas:
            process = replica.process
            if replica is not self.killing and process is not None and process.poll() is not None:
                self.replica_exits.append(f"{replica.name}: {process.returncode}")
                self.timeline.note(f"{replica.name} exited by itself ({process.returncode})")
                self.cluster.start_replica(replica)
        for index, fleet in enumerate(self.fleets):
            if fleet.poll() is not None:
                raise AssertionError(
                    f"fleet {index} exited early: "
                    f"{(self.root / f'fleet-{index}.log').read_text()[-3000:]}"
                )

    # --- chaos --------------------------------------------------------------------------------

    async def kill_replicas(self) -> None:
        while True:
            await asyncio.sleep(self.config.kill_every_s)
            replica = self.random.choice(self.cluster.replicas)
            self.killing = replica
            self.cluster.kill_replica(replica)
            started = time.monotonic()
            failed = await self._restart(replica)
            self.killing = None
            self.timeline.note(
                f"kill -9 {replica.name}; back in {time.monotonic() - started:.1f} s"
                + (f" ({failed} restarts failed first)" if failed else "")
            )

    async def _restart(self, replica: Replica) -> int:
        """Restart until healthy, as a supervisor would (it cannot start on a full disk)."""
        failed = 0
        deadline = time.monotonic() + 300
        while True:
            self.cluster.start_replica(replica)
            try:
                await asyncio.to_thread(
                    wait_http, f"http://127.0.0.1:{replica.port}/healthz", replica, 120
                )
                return failed
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                failed += 1
                if failed == 1:  # what the volume looked like (a restart fails on a full one)
                    self.timeline.note(
                        f"{replica.name} did not start; data volume free "
                        f"{free_bytes(self.cluster.data_dir):,} B, biggest: "
                        + ", ".join(_biggest_files(self.cluster.data_dir, 3))
                    )
                await asyncio.sleep(1.0)  # a supervisor's restart delay

    async def reload_nginx(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_every_s)
            prefix = self.cluster.nginx_prefix
            result = await asyncio.to_thread(
                subprocess.run,
                [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-s", "reload"],
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stderr
            self.timeline.note("nginx -s reload")

    def _tell_cut_fleet(self, line: str) -> None:
        assert self.cut_fleet is not None and self.cut_fleet.stdin is not None
        self.cut_fleet.stdin.write(f"{line}\n".encode())
        self.cut_fleet.stdin.flush()

    async def cut_network(self) -> None:
        await asyncio.sleep(self.config.cut_at_s)
        self._tell_cut_fleet("cut")
        self.timeline.note("agent-00: network cut")
        await asyncio.sleep(self.config.cut_for_s / 2)
        self._tell_cut_fleet("jump 3700")
        self.timeline.note("agent-00: clock +3700 s (an hour passes offline)")
        await self._wait(
            lambda: self.status().get("agent-00", {}).get("archives_sealed", 0) > 0,
            30,
            "agent-00 to seal its offline hour into a ZIP",
        )
        self.timeline.note("agent-00: hourly ZIP sealed")
        await asyncio.sleep(self.config.cut_for_s / 2)
        self._tell_cut_fleet("restore")
        self.timeline.note("agent-00: network back")
        took = await self._wait(
            lambda: self.status().get("agent-00", {}).get("archives_uploaded", 0) > 0,
            120,
            "agent-00 to upload its ZIP",
        )
        self.timeline.note(f"agent-00: ZIP uploaded {took:.1f} s after the network returned")

    async def fill_disk(self) -> None:
        await asyncio.sleep(self.config.full_at_s)
        ballast = self.cluster.data_dir / "ballast"
        marks = {r.name: r.log_path.stat().st_size for r in self.cluster.replicas}
        fill_up(ballast)
        self.timeline.note(f"data volume full (free now {free_bytes(self.cluster.data_dir)} B)")
        took = await self._wait(lambda: self._ingest_refusing(marks), 60, "ingest to refuse")
        self.timeline.note(f"ingest refusing batches after {took:.1f} s")
        # Appends that still fit in a segment's last allocated page are stored and acknowledged;
        # after a few seconds every writer has run out of them.
        await asyncio.sleep(5.0)
        before = self.acked()
        await asyncio.sleep(self.config.full_for_s)
        during = self.acked() - before
        self.timeline.figures["acks_while_full"] = during
        self.timeline.note(f"{during} events acknowledged in {self.config.full_for_s:.0f} s full")
        ballast.unlink()
        self.timeline.note("ballast deleted: space is back")
        start = self.acked()
        took = await self._wait(lambda: self.acked() > start, 120, "acks to resume")
        self.timeline.note(f"ingest acknowledging again after {took:.1f} s")

    def _ingest_refusing(self, marks: dict[str, int]) -> bool:
        """A store failure was logged by some replica since the volume filled up."""
        for replica in self.cluster.replicas:
            with replica.log_path.open("rb") as handle:
                handle.seek(marks[replica.name])
                text = handle.read()
            if b"store_failed" in text or b"No space left" in text or b"disk is full" in text:
                return True
        return False

    async def _wait(self, condition: Any, within: float, what: str) -> float:
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > within:
                raise AssertionError(f"soak: timed out after {within} s waiting for {what}")
            await asyncio.sleep(0.2)
        return time.monotonic() - start

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> SoakReport:
        self._headers = self.cluster.login()
        self._headers_at = time.monotonic()
        dashboard = Dashboard(f"{self.cluster.ws_url}/ws/live.json", self.headers, "soak")
        dashboard.start()
        chaos = [
            asyncio.create_task(self.kill_replicas()),
            asyncio.create_task(self.reload_nginx()),
        ]
        scenes = [
            asyncio.create_task(self.cut_network()),
            asyncio.create_task(self.fill_disk()),
        ]
        try:
            deadline = time.monotonic() + self.config.seconds
            while time.monotonic() < deadline:
                self.supervise()
                for task in scenes + chaos:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                await asyncio.sleep(0.5)
            await asyncio.gather(*scenes)  # a scene still running must finish
        finally:
            for task in chaos:
                task.cancel()
            await asyncio.gather(*chaos, return_exceptions=True)
        self.timeline.note("load stops; fleets drain their spools")
        await self._drain()
        sent_probes = self._ledger_probes()
        with contextlib.suppress(AssertionError):
            await self._wait(lambda: sent_probes <= dashboard.received.keys(), 30, "the feed")
        await dashboard.stop()
        self.timeline.note("checking the store")
        return check(self.cluster.data_dir, self.ledgers(), dashboard, self)

    async def _drain(self) -> None:
        for fleet in self.fleets:
            assert fleet.stdin is not None
            fleet.stdin.write(b"stop\n")
            fleet.stdin.close()
        deadline = time.monotonic() + 300
        while any(fleet.poll() is None for fleet in self.fleets):
            self.supervise_children_only()
            if time.monotonic() > deadline:
                raise AssertionError("soak: fleets did not drain within 300 s")
            await asyncio.sleep(0.5)
        self.timeline.note("fleets drained")

    def supervise_children_only(self) -> None:
        for child in self.children:
            child.check(self.timeline)

    def ledgers(self) -> dict[str, dict[str, Any]]:
        agents: dict[str, dict[str, Any]] = {}
        for index in range(len(self.fleets)):
            ledger = json.loads((self.root / f"fleet-{index}.ledger.json").read_text())
            assert ledger["drained"], f"fleet {index} did not drain"
            agents.update(ledger["agents"])
        return agents

    def _ledger_probes(self) -> set[str]:
        return {probe for agent in self.ledgers().values() for probe in agent["probes"]}

    def stop(self) -> None:
        for fleet in self.fleets:
            if fleet.poll() is None:
                fleet.kill()
                fleet.wait(10)
            if fleet.stdin is not None and not fleet.stdin.closed:
                with contextlib.suppress(OSError):
                    fleet.stdin.close()
        for child in self.children:
            child.stop()
        self.cluster.stop()
        unmount(self.cluster.data_dir)


def run_soak(root: Path, config: SoakConfig) -> SoakReport:
    """Start everything, run the chaos for ``config.seconds``, drain, check, stop."""
    soak = Soak(root, config)
    try:
        soak.start()
        return asyncio.run(soak.run())
    finally:
        soak.stop()
