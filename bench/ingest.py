"""Ingest benchmark: one agent process -> WebSocket -> one server process (fsync per batch).

    .venv/bin/python bench/ingest.py [--events 600000] [--batch 2000] [--window 8] [--rounds 3]

Prints events/s durably stored (first emit to last Ack, measured in the agent) and p50/p99 of
the acknowledgement latency (frame sent -> Ack received), at full speed and then paced at half
the target rate. Baseline measured in the same run: ``EventLog.append`` of the same events in
one process with the same batch size and fsync (the store alone, no transport), so the ratio
shows what the transport costs. Reference figures from other shippers are printed beside ours.
Each server and pace runs ``--rounds`` times, interleaved, each round with a fresh server; the
summary gives the best, median and worst round (this 2-core machine drifts by 10-20% over
minutes). The server's CPU per event is split into the replica process and its projector.

The agent replays a pool of pre-generated synthetic flows (realistic size, features filled in):
the pipeline's own cost is measured by the agent benchmarks, not here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.ports import free_port  # noqa: E402  (the repository root is on the path now)

POOL = 20_000
TARGET_RATE = 100_000


def synthetic_flows(agent_id: str, count: int, branch: str = "bench") -> list:  # type: ignore[type-arg]
    """Flows shaped like the pipeline's (addresses, ports, domain, features, detections)."""
    from netmon.storage.contract.events import Detection, FlowFeatures, FlowObserved, new_event_id

    now = time.time()
    flows = []
    for i in range(count):
        detections = (
            (Detection(kind="critical_port", detail="SSH (22/tcp)", severity="high", rule="ssh"),)
            if i % 50 == 0
            else ()
        )
        flows.append(
            FlowObserved(
                id=new_event_id(now),
                ts=now,
                branch=branch,  # as the pipeline does (config.branch, which enrolment sets)
                agent_id=agent_id,
                first_seen=now - 3.2,
                last_seen=now - 0.1,
                src_ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                src_port=32768 + i % 28000,
                dst_ip=f"93.184.{i % 200}.{i % 250}",
                dst_port=(443, 80, 53, 22)[i % 4],
                protocol=6 if i % 4 != 2 else 17,
                src2dst_packets=12 + i % 7,
                src2dst_bytes=1800 + i % 900,
                dst2src_packets=15 + i % 5,
                dst2src_bytes=24000 + i,
                src2dst_payload_bytes=1100,
                dst2src_payload_bytes=22000,
                src2dst_tcp_flags=0x1B,
                dst2src_tcp_flags=0x1B,
                community_id="1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
                domain=f"host{i % 997}.example.com",
                domain_source="sni",
                end_reason="fin",
                features=FlowFeatures(
                    duration=3.1,
                    fwd_pkt_len_min=54.0,
                    fwd_pkt_len_max=583.0,
                    fwd_pkt_len_mean=150.0,
                    fwd_pkt_len_std=140.2,
                    bwd_pkt_len_mean=1600.0,
                    fwd_iat_mean=0.25,
                    bwd_iat_mean=0.2,
                    flow_iat_mean=0.11,
                    bytes_per_s=8300.0,
                    packets_per_s=8.7,
                    handshake_duration=0.012,
                    syn_count=2,
                    fin_count=2,
                    ack_count=26,
                    psh_count=8,
                    fwd_init_win=64240,
                    bwd_init_win=65160,
                ),
                detections=detections,
                severity="high" if detections else "none",
            )
        )
    return flows


# --- the agent process -------------------------------------------------------------------------


async def agent_main(
    url: str, key: str, spool: str, total: int, rate: float, batch: int, window: int
) -> None:
    """Replay ``total`` flows (at ``rate``/s, 0 = as fast as possible); print the figures."""
    from netmon.agent.transport import AgentTransport, TransportConfig

    config = TransportConfig(
        key=key, spool_dir=spool, batch_max_events=batch, window=window, spool_max_bytes=4 * 1024**3
    )
    transport = AgentTransport("bench", url, config)
    pool = synthetic_flows("bench", POOL)
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    for _ in range(3000):  # the handshake, at most 30 s
        if transport.connected:
            break
        await asyncio.sleep(0.01)
    else:
        raise SystemExit("agent could not connect (see the server log)")

    def replay() -> None:
        emit = transport.emit
        chunk = 1000
        started = time.perf_counter()
        for sent in range(0, total, chunk):
            for i in range(sent, min(sent + chunk, total)):
                emit(pool[i % POOL])
            if rate:
                ahead = (sent + chunk) / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
        transport.flush()

    started = time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.to_thread(replay)
    while transport.stats.events_acked < total:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stop.set()
    await runner
    latencies = sorted(transport.stats.ack_latencies)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(
        f"RESULT {total} {elapsed:.4f} {p50:.2f} {p99:.2f} {len(latencies)} {cpu:.4f}", flush=True
    )


# --- the driver --------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu(pid: int) -> float:
    """CPU seconds of the live descendants of ``pid`` (the replica's projector process)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += process_cpu(int(child)) + children_cpu(int(child))
    return total


def baseline(root: Path, total: int, batch: int) -> tuple[float, float]:
    """The store alone: EventLog.append of the same flows in batches, fsync each (events/s)."""

    from netmon.storage.eventlog import EventLog

    pool = synthetic_flows("bench", POOL)
    with EventLog(root / "baseline", "base", durability="batch") as log:
        started, cpu_started = time.perf_counter(), time.process_time()
        for sent in range(0, total, batch):
            log.append([pool[i % POOL] for i in range(sent, min(sent + batch, total))])
        return total / (time.perf_counter() - started), time.process_time() - cpu_started


def ingest_only_server(config: str, port: int) -> None:
    """The ingest routes and lifespan alone (no dashboard, no live projections), same uvicorn
    options as ``netmon serve``: isolates what the transport itself costs the replica."""

    import uvicorn
    from starlette.applications import Starlette

    from netmon.app.ingest.wiring import ingest_routes, open_ingest
    from netmon.app.settings import load_settings
    from netmon.app.state import ServerState

    settings = load_settings(Path(config), environ={}, dotenv_file=None)
    server = ServerState(settings=settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):  # type: ignore[no-untyped-def]
        async with open_ingest(settings) as ingestor:
            server.event_log, server.ingestor = ingestor.event_log, ingestor
            yield

    app = Starlette(routes=ingest_routes(), lifespan=lifespan)
    app.state.server = server
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False)


def start_server(root: Path, secret: str, port: int, full: bool) -> subprocess.Popen[bytes]:
    import httpx

    data = root / ("data" if full else "data-ingest-only")
    config = root / f"server-{full}.toml"
    # The ingest-only server runs no projector, so its event log indexes segments itself.
    config.write_text(
        f'[store]\ndata_dir = "{data}"\ndurability = "batch"\n'
        f'[server]\nreplica = "bench"\nsecret_key = "{secret}"\n'
        + ("" if full else "[live]\nprojector = false\n")
    )
    if not full and not data.exists():  # the same enrolment (and key) as the full server
        data.mkdir()
        shutil.copy(root / "data" / "netmon.sqlite3", data / "netmon.sqlite3")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = (
        [
            sys.executable,
            "-m",
            "netmon.app.cli",
            "--log-level",
            "WARNING",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ]
        if full
        else [sys.executable, __file__, "--server-child", str(config), str(port)]
    )
    with (root / "server.log").open("ab") as log:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit(f"server did not start; see {root / 'server.log'}")


def projector_catch_up(data: Path, events: int, timeout_s: float = 120.0) -> float:
    """Seconds until the replica's projector has saved a snapshot that reflects ``events``
    events (it lags under full load, at its lower priority): its CPU is counted until then."""
    import msgspec

    from netmon.app.projections.runner import snapshot_path
    from netmon.app.projector_link import TopSnapshot

    path = snapshot_path(data, "bench")
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(FileNotFoundError, msgspec.DecodeError):
            if msgspec.msgpack.decode(path.read_bytes(), type=TopSnapshot).events >= events:
                return time.monotonic() - started
        time.sleep(0.05)  # polls a file another process replaces; nothing to await
    raise SystemExit(f"the projector did not catch up with {events} events in {timeout_s} s")


def run_agent(
    url: str, key: str, spool: Path, total: int, rate: float, args: argparse.Namespace
) -> list[float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--agent-child",
            url,
            # The key travels in the environment: a base64url key may start with "-", which
            # argparse would take for an option (and argv is visible to every local user).
            "env:BENCH_AGENT_KEY",
            str(spool),
            str(total),
            str(rate),
            str(args.batch),
            str(args.window),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_AGENT_KEY": key},
    )
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))
    return [float(part) for part in line.split()[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each server and pace (best and median)"
    )
    parser.add_argument(
        "--server",
        choices=["both", "ingest-only", "netmon-serve"],
        default="both",
        help="which server(s) to measure",
    )
    parser.add_argument("--agent-child", nargs=7, help=argparse.SUPPRESS)
    parser.add_argument("--server-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server_child:
        ingest_only_server(args.server_child[0], int(args.server_child[1]))
        return
    if args.agent_child:
        url, _, spool, total, rate, batch, window = args.agent_child
        key = os.environ["BENCH_AGENT_KEY"]
        asyncio.run(agent_main(url, key, spool, int(total), float(rate), int(batch), int(window)))
        return

    from cryptography.fernet import Fernet
    from tqdm import tqdm

    from netmon.storage.agents import AgentRegistry

    root = Path(tempfile.mkdtemp(prefix="netmon-bench-ingest-"))
    secret = Fernet.generate_key().decode()
    key = AgentRegistry(root / "data", secret).add("bench", "bench")
    load = os.getloadavg()[0]
    print(
        f"cores: {os.cpu_count()}  load average before: {load:.1f}  events: {args.events}  "
        f"batch: {args.batch}  window: {args.window}  fsync per batch (durability=batch)"
    )
    half_events = min(args.events, TARGET_RATE // 2 * 6)  # ~6 s at 50k/s
    runs = [
        ("ingest-only", False, 0.0, args.events),
        ("ingest-only", False, TARGET_RATE / 2, half_events),
        ("netmon serve", True, 0.0, args.events),
        ("netmon serve", True, TARGET_RATE / 2, half_events),
    ]
    if args.server != "both":
        runs = [run for run in runs if run[0].replace(" ", "-") == args.server]
    # Rounds interleaved (A B A B ...), each with a fresh server process: this machine's speed
    # drifts by 10-20% over minutes, which interleaving spreads over both servers alike.
    runs = [run for _ in range(args.rounds) for run in runs]
    results: list[tuple[str, float, list[float]]] = []
    in_full_log = 0  # events in the log the netmon-serve runs share (data/)
    with tqdm(total=len(runs) + 1, desc="bench ingest", unit="run", file=sys.stderr) as progress:
        base_rate, base_cpu = baseline(root, args.events, args.batch)
        progress.update()
        for name, full, rate, total in runs:
            port = free_port()
            server = start_server(root, secret, port, full)
            try:
                spool = root / f"spool-{len(results)}"
                cpu_before = process_cpu(server.pid), children_cpu(server.pid)
                figures = run_agent(f"ws://127.0.0.1:{port}", key, spool, total, rate, args)
                cpu = process_cpu(server.pid) - cpu_before[0]
                catch_up = 0.0
                if full:
                    in_full_log += total
                    catch_up = projector_catch_up(root / "data", in_full_log)
                helpers = children_cpu(server.pid) - cpu_before[1]
                results.append((name, rate, [*figures, cpu, helpers, catch_up]))
            finally:
                server.terminate()
                server.wait(30)
            progress.update()
    print(f"baseline   EventLog.append alone, 1 process, fsync/batch: {base_rate:>9,.0f} events/s")
    for name, rate, figures in results:
        total, elapsed, p50, p99, batches, agent_cpu, server_cpu, projector_cpu, lag = figures
        pace = "full speed" if not rate else f"paced {rate:,.0f}/s"
        stored = total / elapsed
        print(
            f"{name:<12} {pace:<18} stored {stored:>9,.0f} events/s ({stored / base_rate:.2f}x "
            f"baseline)  ack p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({int(batches)} batches)  "
            f"CPU/event: agent {agent_cpu / total * 1e6:.1f} us, server "
            f"{server_cpu / total * 1e6:.1f} us, projector {projector_cpu / total * 1e6:.1f} us"
            + (f" (caught up {lag:.1f} s after the last ack)" if name == "netmon serve" else "")
        )
    for name, rate in dict.fromkeys((name, rate) for name, rate, _ in results):
        rates = sorted(f[0] / f[1] for n, r, f in results if (n, r) == (name, rate))
        p99s = sorted(f[3] for n, r, f in results if (n, r) == (name, rate))
        pace = "full speed" if not rate else f"paced {rate:,.0f}/s"
        print(
            f"{name:<12} {pace:<18} {len(rates)} rounds: stored best {rates[-1]:>9,.0f}  median "
            f"{statistics.median(rates):>9,.0f}  worst {rates[0]:>9,.0f} events/s;  ack p99 "
            f"median {statistics.median(p99s):6.1f} ms, worst {p99s[-1]:6.1f} ms"
        )
    print(f"baseline   CPU/event of the store alone: {base_cpu / args.events * 1e6:.1f} us")
    print(
        f"targets    >= {TARGET_RATE:,} events/s into one replica; p99 ack < 100 ms at "
        f"{TARGET_RATE // 2:,}/s"
    )
    print("reference  Vector:   ~35,000-40,000 events/s per vCPU (vendor figures)")
    print("reference  Filebeat: ~20,000-30,000 events/s per core (vendor figures)")
    print(f"load average after: {os.getloadavg()[0]:.1f} (other processes share these cores)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
