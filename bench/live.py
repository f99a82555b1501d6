"""Live feed and projections benchmark, on the real topology (nginx + three replicas).

    .venv/bin/python bench/live.py                      # 20 s of feed, 1M and 10M stored events
    .venv/bin/python bench/live.py --quick              # 10 s, 100k and 1M

Part 1, feed latency: an agent (the real transport) streams through nginx while one dashboard per
replica is connected through nginx. Probe events (critical flows, 20/s) are timed from the
agent's ``emit`` to each dashboard's receive. Measured twice in the same run: first with only the
probes (the baseline), then with background ingest of ``--rate`` events/s (10,000 by default);
printed as p50/p99 and the ratio to the baseline. Target: p99 < 250 ms under load. The same
probes are timed on the live wall too (an HTML dashboard on ``/ws/live``): all of them come from
one source, so they are one row, pushed once per batch; a probe counts as shown when a push of
that row carries its time as the row's last activity.

Part 2, summary latency: one replica answers /api/v1/summary and /api/v1/summary/top from its
projections with 1M, then 10M events stored (built with ``ProjectionRunner`` the way
``netmon projections rebuild`` does, then resumed for the next 9M: incremental; both spread
over the same 7 days, so the windows hold 10x the events at 10M). Target: the
latency at 10M equals the latency at 1M within noise (it reads projections, never the log).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import websockets
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netmon.app.follower import read_to_end  # noqa: E402
from netmon.app.projections.runner import ProjectionRunner, snapshot_path  # noqa: E402
from netmon.storage.contract.events import FlowObserved, new_event_id  # noqa: E402
from netmon.storage.eventlog import EventLog  # noqa: E402
from tests.live.cluster import Cluster, Dashboard, wait_http  # noqa: E402
from tests.live.factory import detection, flow  # noqa: E402
from tests.polling import wait_until_async

BRANCHES = ("hq", "branch-a", "branch-b", "branch-c")
WEEK = 7 * 86_400.0
AGENT = "bench-agent"  # events must carry the sending agent's id


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def templates(count: int, seed: int = 11) -> list[FlowObserved]:
    """Varied flows to copy with a fresh id and time (building each from scratch is slower)."""
    rng = random.Random(seed)
    return [
        flow(1_800_000_000.0 + i, rng=rng, branch=rng.choice(BRANCHES), agent_id=AGENT)
        for i in range(count)
    ]


# --- part 1: feed latency ---------------------------------------------------------------------
# The agent runs in its own process (as in production): its batching, spooling (fsync) and
# encryption must not share an event loop or a core slice with the dashboards being timed.
# time.monotonic() is CLOCK_MONOTONIC, comparable across processes of one machine.


async def agent_child(url: str, key: str, spool: str, seconds: float, rate: int) -> None:
    """Child process: emit ``rate`` flows/s plus 20 probes/s; print probe send times as JSON."""
    from netmon.agent.transport import AgentTransport, TransportConfig

    # The agent's own defaults: flows batched for up to 1 s, a DetectionRaised seals the batch
    # within 50 ms (the probes are DetectionRaised, the critical signal the agent sends first).
    config = TransportConfig(key=key, spool_dir=spool, offline_archives=False)
    transport = AgentTransport(AGENT, url, config)
    stop = asyncio.Event()
    task = asyncio.create_task(transport.run(stop))
    await wait_until_async(lambda: transport.connected, 20, "the agent to connect")
    pool, replace = templates(5000), msgspec.structs.replace
    sent: dict[str, float] = {}
    stamps: dict[str, float] = {}  # probe id -> its event time (what the wall's row shows)
    per_tick, emitted = rate // 100, 0
    started = time.monotonic()
    next_tick = next_probe = started
    while time.monotonic() - started < seconds:
        if per_tick:
            wall = time.time()
            for i in range(per_tick):
                transport.emit(
                    replace(pool[(emitted + i) % len(pool)], id=new_event_id(wall), ts=wall)
                )
            emitted += per_tick
        if time.monotonic() >= next_probe:
            probe = detection(time.time(), agent_id=AGENT)
            sent[probe.id], stamps[probe.id] = time.monotonic(), probe.ts
            transport.emit(probe)
            emitted += 1
            next_probe += 0.05
        next_tick += 0.01
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    await wait_until_async(lambda: transport.stats.events_acked >= emitted, 120, "acks")
    rate_achieved = emitted / (time.monotonic() - started)
    acks = sorted(transport.stats.ack_latencies)
    stop.set()
    await task
    usage = os.times()
    cpu = 100 * (usage.user + usage.system) / (time.monotonic() - started)
    ack_p99 = acks[int(0.99 * len(acks))] if acks else 0.0
    report = {"sent": sent, "stamps": stamps, "rate": rate_achieved, "cpu": cpu, "ack_p99": ack_p99}
    print(json.dumps(report))


class WallWatcher:
    """A Live page's socket (``/ws/live``, HTML): when each push of the probes' row arrived and
    the row's last activity it carried (its ``data-last``)."""

    ROW = re.compile(r'data-entity="hq\|10\.0\.0\.5"')  # the probes' source (factory.detection)
    LAST = re.compile(r'data-last="([0-9.e+]+)"')

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.pushes: list[tuple[float, float]] = []  # (arrival, row's last activity), in order
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with websockets.connect(
            self.url, additional_headers=self.headers, compression=None
        ) as socket_:
            async for raw in socket_:
                arrival, text = time.monotonic(), str(raw)
                self.connected.set()
                if 'id="live-rows"' in text:
                    continue  # a snapshot: not a push
                if self.ROW.search(text) and (last := self.LAST.search(text)):
                    self.pushes.append((arrival, float(last.group(1))))

    def shown(self, stamp: float) -> float | None:
        """When the wall first showed a probe of time ``stamp`` (a row's last only grows)."""
        index = bisect.bisect_left(self.pushes, stamp, key=lambda push: push[1])
        return self.pushes[index][0] if index < len(self.pushes) else None


async def feed_phase(
    cluster: Cluster,
    key: str,
    dashboards: list[Dashboard],
    wall: WallWatcher,
    seconds: float,
    rate: int,
) -> tuple[list[float], list[float], float, dict[str, float]]:
    """One agent child run; latencies over every dashboard and on the wall, achieved rate, CPU
    per process."""
    command = [
        sys.executable,
        __file__,
        "--agent-child",
        cluster.ws_url,
        key,
        str(cluster.root / "spool"),
        str(seconds),
        str(rate),
    ]
    cpu = CpuMeter(cluster)
    child = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    cpu.start()
    out, _ = await child.communicate()
    usage = cpu.stop()
    assert child.returncode == 0, "agent child failed"
    report = json.loads(out.decode().strip().splitlines()[-1])
    usage["agent"] = report["cpu"]
    usage["agent ack p99 ms"] = 1000 * report["ack_p99"]
    sent: dict[str, float] = report["sent"]
    await wait_until_async(
        lambda: all(sent.keys() <= d.received.keys() for d in dashboards), 60, "probes"
    )
    latencies = [d.received[i] - sent[i] for d in dashboards for i in sent]
    for dashboard in dashboards:
        usage[f"p99 ms {dashboard.replica}"] = 1000 * percentile(
            [dashboard.received[i] - sent[i] for i in sent], 0.99
        )
    stamps: dict[str, float] = report["stamps"]
    await wait_until_async(
        lambda: all(wall.shown(stamps[i]) is not None for i in sent), 60, "probes on the wall"
    )
    on_wall = [wall.shown(stamps[i]) - sent[i] for i in sent]  # type: ignore[operator]
    return latencies, on_wall, float(report["rate"]), usage


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


class CpuMeter:
    """CPU seconds used per process (from /proc) between start and stop, as % of one core."""

    def __init__(self, cluster: Cluster) -> None:
        self.pids = {r.name: r.process.pid for r in cluster.replicas if r.process}
        for name, pid in list(self.pids.items()):  # each replica's projector process
            for child in _children(pid):
                if b"netmon.app.projector" in Path(f"/proc/{child}/cmdline").read_bytes():
                    self.pids[f"{name}-projector"] = child
        if cluster.nginx is not None:
            self.pids["nginx"] = cluster.nginx.pid
        self.pids["bench"] = os.getpid()
        self.before: dict[str, float] = {}
        self.started = 0.0

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0.0
        # utime, stime, cutime, cstime (children: nginx workers, uvicorn has none)
        ticks = sum(int(value) for value in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self.before = {name: self._cpu(pid) for name, pid in self.pids.items()}
        self.started = time.monotonic()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        return {
            name: 100 * (self._cpu(pid) - self.before.get(name, 0.0)) / elapsed
            for name, pid in self.pids.items()
        }


async def feed_bench(root: Path, seconds: float, rate: int) -> None:
    cluster = Cluster(root, env={"NETMON_LIVE__QUEUE_SIZE": "4096"})
    cluster.start()
    dashboards: list[Dashboard] = []
    try:
        headers = cluster.login()
        key = cluster.enroll_agent(AGENT, "hq")
        names = {r.name for r in cluster.replicas}
        while {d.replica for d in dashboards} != names and len(dashboards) < 12:
            dashboard = Dashboard(f"{cluster.ws_url}/ws/live.json", lambda: headers)
            dashboard.start()
            await asyncio.wait_for(dashboard.connected.wait(), 10)
            dashboards.append(dashboard)
        wall = WallWatcher(f"{cluster.ws_url}/ws/live", headers)
        wall.start()
        await asyncio.wait_for(wall.connected.wait(), 10)
        base, base_wall, base_rate, _ = await feed_phase(
            cluster, key, dashboards, wall, seconds / 2, 0
        )
        loaded, load_wall, load_rate, load_cpu = await feed_phase(
            cluster, key, dashboards, wall, seconds, rate
        )
        await wall.stop()
        pushes = len(wall.pushes)
        print(
            f"\nfeed latency, agent emit -> dashboard receive, through nginx, "
            f"{len(dashboards)} dashboards on {len({d.replica for d in dashboards})} replicas"
        )
        print(
            f"{'phase':<30}{'ingest ev/s':>12}{'probes':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        )
        for name, values, achieved in (
            ("baseline (probes only)", base, base_rate),
            (f"background ingest {rate:,}/s", loaded, load_rate),
            ("wall row, baseline", base_wall, base_rate),
            (f"wall row, ingest {rate:,}/s", load_wall, load_rate),
        ):
            print(
                f"{name:<30}{achieved:>12,.0f}{len(values):>8}"
                f"{percentile(values, 0.5) * 1000:>9.1f}"
                f"{percentile(values, 0.99) * 1000:>9.1f}{max(values) * 1000:>9.1f}"
            )
        probes = len(base_wall) + len(load_wall)
        print(
            f"the wall (one HTML dashboard): {probes} probes of one source came as {pushes}"
            " pushes of its one row (once per batch)"
        )
        ratio = percentile(loaded, 0.99) / percentile(base, 0.99)
        target = "met" if percentile(loaded, 0.99) < 0.25 else "MISSED"
        print(f"p99 under load / baseline p99: {ratio:.2f}x; target p99 < 250 ms: {target}")
        per_replica = {k: v for k, v in load_cpu.items() if k.startswith("p99 ms ")}
        print(
            "per replica under load (a replica publishes an event in the same step as it applies"
            " it to its live projections, so this is also how far behind those are; the top lists"
            " follow from its projector's snapshot, saved every second): "
            + ", ".join(f"{k[7:]} p99 {v:.0f} ms" for k, v in per_replica.items())
        )
        for key in per_replica:
            del load_cpu[key]
        print(
            "CPU % of one core during the loaded phase: "
            + ", ".join(f"{name} {value:.0f}" for name, value in load_cpu.items())
            + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
    finally:
        for dashboard in dashboards:
            await dashboard.stop()
        cluster.stop()


# --- part 2: summary latency over 1M and 10M stored events ------------------------------------


def fill(data: Path, count: int, pool: list[FlowObserved], start_ts: float, span: float) -> None:
    """Append ``count`` flows spread over ``span`` seconds, 10,000 per batch."""
    replace = msgspec.structs.replace
    step = span / count
    with (
        EventLog(data, "bench-writer", durability="none") as log,
        tqdm(total=count, unit="ev", desc="append", unit_scale=True) as bar,
    ):
        for first in range(0, count, 10_000):
            size = min(10_000, count - first)
            batch = [
                replace(
                    pool[(first + i) % len(pool)],
                    id=new_event_id(),
                    ts=start_ts + (first + i) * step,
                )
                for i in range(size)
            ]
            log.append(batch)
            bar.update(size)


def project(data: Path, replica: str) -> float:
    """Bring the replica's snapshot up to the end of the log (resuming); events/s."""
    runner = ProjectionRunner(snapshot_path(data, replica))
    runner.load()
    before, started = runner.state.events, time.monotonic()
    with tqdm(unit="ev", desc="project", unit_scale=True) as bar:
        for batch in read_to_end(data, runner.state.offsets):
            runner.apply(batch.events, batch.offsets)
            bar.update(len(batch.events))
    runner.save()
    return (runner.state.events - before) / (time.monotonic() - started)


def time_endpoint(url: str, headers: dict[str, str], requests: int) -> list[float]:
    times = []
    with httpx.Client(headers=headers, timeout=30) as client:
        client.get(url).raise_for_status()  # warm-up
        for _ in range(requests):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def summary_bench(root: Path, sizes: list[int], requests: int) -> None:
    """Build one data dir per size (each a copy of the previous, grown), then start one replica
    per size at once and alternate requests between them: every size sees the same noise."""
    pool = templates(20_000)
    end_ts = time.time()
    stages: list[tuple[int, Cluster, float]] = []
    previous: Cluster | None = None
    for size in sizes:
        cluster = Cluster(root / f"size-{size}", replicas=1)
        if previous is None:
            cluster.create_admin()
            stored = 0
        else:
            shutil.copytree(previous.data_dir, cluster.data_dir)
            cluster.password, stored = previous.password, stages[-1][0]
        # Every size spreads over the same 7 days: same windows, more events in them.
        fill(cluster.data_dir, size - stored, pool, end_ts - WEEK, WEEK)
        rate = project(cluster.data_dir, cluster.replicas[0].name)
        stages.append((size, cluster, rate))
        previous = cluster
    clients: list[tuple[str, httpx.Client]] = []
    try:
        for _size, cluster, _rate in stages:
            cluster.start_replica(cluster.replicas[0])
        for _size, cluster, _rate in stages:
            replica = cluster.replicas[0]
            url = f"http://127.0.0.1:{replica.port}"
            wait_http(f"{url}/healthz", replica, timeout=300)
            clients.append((url, httpx.Client(headers=cluster.login(url=url), timeout=30)))
        times: dict[tuple[int, str], list[float]] = {}
        events: dict[int, int] = {}
        for (size, _cluster, _rate), (url, client) in zip(stages, clients, strict=True):
            events[size] = client.get(f"{url}/api/v1/summary").raise_for_status().json()["events"]
            for path in ("/api/v1/summary", "/api/v1/summary/top?hours=24"):
                client.get(url + path).raise_for_status()  # warm-up
        pairs = list(zip(stages, clients, strict=True))
        for round_ in range(requests):  # interleaved, the order flipped every round
            for path in ("/api/v1/summary", "/api/v1/summary/top?hours=24"):
                for (size, _cluster, _rate), (url, client) in pairs[:: 1 if round_ % 2 else -1]:
                    started = time.perf_counter()
                    client.get(url + path).raise_for_status()
                    times.setdefault((size, path), []).append(time.perf_counter() - started)
    finally:
        for _url, client in clients:
            client.close()
        for _size, cluster, _rate in stages:
            cluster.stop()
    print(
        "\nsummary endpoints, one replica per size running at once, requests interleaved "
        f"({requests} each), ms"
    )
    print(
        f"{'stored':>12}{'projected':>12}{'project ev/s':>14}{'summary p50':>13}{'p99':>8}"
        f"{'top p50':>10}{'p99':>8}"
    )
    paths = ("/api/v1/summary", "/api/v1/summary/top?hours=24")
    for size, _cluster, rate in stages:
        summary_times, top_times = (times[(size, path)] for path in paths)
        print(
            f"{size:>12,}{events[size]:>12,}{rate:>14,.0f}"
            f"{statistics.median(summary_times) * 1000:>13.1f}"
            f"{percentile(summary_times, 0.99) * 1000:>8.1f}"
            f"{statistics.median(top_times) * 1000:>10.1f}"
            f"{percentile(top_times, 0.99) * 1000:>8.1f}"
        )
    first, last = sizes[0], sizes[-1]
    ratios = [
        statistics.median(times[(last, path)]) / statistics.median(times[(first, path)])
        for path in paths
    ]
    print(
        f"p50 ratio {last:,} / {first:,} stored: summary {ratios[0]:.2f}x, top {ratios[1]:.2f}x"
        " (target: ~1.0)"
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--agent-child":
        url, key, spool, seconds, rate = sys.argv[2:7]
        asyncio.run(agent_child(url, key, spool, float(seconds), int(rate)))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the loaded phase")
    parser.add_argument("--rate", type=int, default=10_000, help="background ingest, events/s")
    parser.add_argument("--sizes", default="1000000,10000000", help="stored events for part 2")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="10 s and 100k,1M events")
    parser.add_argument("--skip-feed", action="store_true")
    parser.add_argument("--skip-summary", action="store_true")
    parser.add_argument("--dir", type=Path, help="work here (kept) instead of a temp dir")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.sizes = 10.0, "100000,1000000"
    root = args.dir or Path(tempfile.mkdtemp(prefix="netmon-bench-live-"))
    try:
        if not args.skip_feed:
            asyncio.run(feed_bench(root / "feed", args.seconds, args.rate))
        if not args.skip_summary:
            summary_bench(root / "summary", [int(s) for s in args.sizes.split(",")], args.requests)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
