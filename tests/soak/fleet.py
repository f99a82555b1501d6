"""One agent-fleet process of the chaos soak: several real ``AgentTransport``s in one event loop,
each streaming synthetic flows (plus one critical probe a second) at a fixed rate.

    python -m tests.soak.fleet CONFIG.json

CONFIG names the server URL, the agents (name, key, spool dir, and whether its network goes
through this process's cuttable proxy), the per-agent rate and the control/status files. Control
lines are read from stdin: ``cut`` (drop the proxied agents' connections and refuse new ones),
``jump SECONDS`` (advance the proxied agents' clocks: simulated time while cut), ``restore``,
``stop`` (stop emitting, drain every spool, write the ledger, exit). Every second the process
writes its status (sent / acked per agent) to STATUS.json (atomically).

Flow ``i`` of an agent carries ``i`` in its domain (``i<i>.<agent>.soak``), so the checker can
count every flow back; probe ids are written to the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from netmon.agent.transport import AgentTransport, TransportConfig
from netmon.storage.contract.events import DetectionRaised, FlowObserved, new_event_id
from tests.factories import telnet_detection

TICK_S = 0.05  # emission granularity: rate/20 flows per agent per tick
DRAIN_S = 180.0  # after the load stops, every spool must be empty within this


class AgentSpec(msgspec.Struct, frozen=True):
    name: str
    key: str
    spool_dir: str
    proxied: bool = False


class FleetConfig(msgspec.Struct, frozen=True):
    server_url: str  # ws://127.0.0.1:PORT (nginx)
    agents: list[AgentSpec]
    rate_per_agent: float  # flows/s
    status_path: str
    ledger_path: str
    spool_max_bytes: int = 1024 * 1024 * 1024


class SimClock:
    """time.time() plus an offset the soak moves forward (the agent's injectable clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class CutProxy:
    """A loopback TCP proxy in front of the server for the agents whose network gets cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut = False
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            for writer in list(self._writers):
                writer.transport.abort()  # like a cable pulled: no close handshake

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self._writers.discard(end)
                end.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def make_flow(agent: str, index: int, now: float) -> FlowObserved:
    """Synthetic flow ``index`` of ``agent`` (the index is in the domain and the source)."""
    return FlowObserved(
        id=new_event_id(now),
        ts=now,
        branch="",
        agent_id=agent,
        first_seen=now - 1.0,
        last_seen=now,
        src_ip=f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}",
        src_port=1024 + index % 60000,
        dst_ip="192.0.2.10",
        dst_port=443,
        protocol=6,
        src2dst_packets=3,
        src2dst_bytes=180,
        dst2src_packets=2,
        dst2src_bytes=120,
        domain=f"i{index}.{agent}.soak",
    )


def make_probe(agent: str, now: float) -> DetectionRaised:
    """A critical detection: what the live feed must push to dashboards."""
    return telnet_detection(agent, now)


class FleetAgent:
    def __init__(self, spec: AgentSpec, transport: AgentTransport, clock: SimClock) -> None:
        self.spec, self.transport, self.clock = spec, transport, clock
        self.sent = 0
        self.probes: list[str] = []
        self.owed = 0.0  # fractional flows carried to the next tick


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.agents: list[FleetAgent] = []
        self.proxy: CutProxy | None = None
        self.stopping = asyncio.Event()
        self.started = time.monotonic()
        self.behind_ticks = 0

    async def start(self) -> None:
        port = int(self.config.server_url.rsplit(":", 1)[1])
        if any(spec.proxied for spec in self.config.agents):
            self.proxy = CutProxy(port)
            await self.proxy.start()
        for spec in self.config.agents:
            clock = SimClock()
            url = self.config.server_url
            if spec.proxied and self.proxy is not None:
                url = f"ws://127.0.0.1:{self.proxy.port}"
            transport = AgentTransport(
                spec.name,
                url,
                TransportConfig(
                    key=spec.key,
                    spool_dir=spec.spool_dir,
                    spool_max_bytes=self.config.spool_max_bytes,
                    backoff_base_s=0.2,
                    backoff_cap_s=2.0,
                    hour_check_s=0.2,
                    offline_archives=spec.proxied,
                ),
                clock=clock,
            )
            self.agents.append(FleetAgent(spec, transport, clock))

    def control(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        if words[0] == "cut" and self.proxy is not None:
            self.proxy.set_cut(True)
        elif words[0] == "restore" and self.proxy is not None:
            self.proxy.set_cut(False)
        elif words[0] == "jump":
            for agent in self.agents:
                if agent.spec.proxied:
                    agent.clock.offset += float(words[1])
        elif words[0] == "stop":
            self.stopping.set()
        print(f"fleet: {line.strip()}", file=sys.stderr, flush=True)

    def tick(self) -> None:
        """Emit this tick's share of flows for every agent, and a probe once a second."""
        now = time.time()
        second = int(now) != int(now - TICK_S)
        for agent in self.agents:
            agent.owed += self.config.rate_per_agent * TICK_S
            count, agent.owed = int(agent.owed), agent.owed - int(agent.owed)
            for _ in range(count):
                agent.transport.emit(make_flow(agent.spec.name, agent.sent, now))
                agent.sent += 1
            if second:
                probe = make_probe(agent.spec.name, now)
                agent.probes.append(probe.id)
                agent.transport.emit(probe)

    def status(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            "elapsed_s": elapsed,
            "behind_ticks": self.behind_ticks,
            "agents": {
                a.spec.name: {
                    "sent": a.sent,
                    "acked": a.transport.stats.events_acked,
                    "spooled": len(a.transport.spool),
                    "outbox": len(a.transport.spool.outbox()),
                    "connected": a.transport.connected,
                    "archives_sealed": a.transport.stats.archives_sealed,
                    "archives_uploaded": a.transport.stats.archives_uploaded,
                }
                for a in self.agents
            },
        }

    def ledger(self, drained: bool) -> dict[str, Any]:
        agents = {}
        for agent in self.agents:
            stats = agent.transport.stats
            agents[agent.spec.name] = {
                "sent": agent.sent,
                "probes": agent.probes,
                "acked_events": stats.events_acked,
                "duplicate_acks": stats.duplicates,
                "rejected": stats.rejected,
                "connects": stats.connects,
                "archives_sealed": stats.archives_sealed,
                "archives_uploaded": stats.archives_uploaded,
                "gaps": len(agent.transport.spool.gaps()),
                "max_ack_latency_s": max(stats.ack_latencies, default=0.0),
                "ack_p99_s": _p99(stats.ack_latencies),
            }
        return {"drained": drained, "agents": agents, "status": self.status()}


def _p99(values: Any) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99)] if ordered else 0.0


def write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _read_stdin(loop: asyncio.AbstractEventLoop, fleet: Fleet) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(fleet.control, line)
    loop.call_soon_threadsafe(fleet.stopping.set)  # the soak went away: stop


async def run(config: FleetConfig) -> int:
    fleet = Fleet(config)
    await fleet.start()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_read_stdin, args=(loop, fleet), daemon=True).start()
    stop = asyncio.Event()
    runners = [asyncio.create_task(a.transport.run(stop)) for a in fleet.agents]
    next_tick = next_status = time.monotonic()
    while not fleet.stopping.is_set():
        fleet.tick()
        next_tick += TICK_S
        now = time.monotonic()
        if now >= next_status:
            write_json(config.status_path, fleet.status())
            next_status = now + 1.0
        if next_tick < now:  # the machine cannot keep up: emit at the achievable rate
            fleet.behind_ticks += 1
            next_tick = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fleet.stopping.wait(), max(0.0, next_tick - now))
    draining = asyncio.gather(*(a.transport.drain(DRAIN_S) for a in fleet.agents))
    while not draining.done():  # keep the status fresh for the soak while draining
        write_json(config.status_path, fleet.status())
        await asyncio.wait([draining], timeout=1.0)
    drained = all(draining.result())
    write_json(config.status_path, fleet.status())
    stop.set()
    await asyncio.gather(*runners)
    write_json(config.ledger_path, fleet.ledger(drained))
    return 0 if drained else 1


def main() -> int:
    config = msgspec.json.decode(Path(sys.argv[1]).read_bytes(), type=FleetConfig)
    return asyncio.run(run(config))


if __name__ == "__main__":
    raise SystemExit(main())
