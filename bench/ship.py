"""Operations benchmark: cost of a /metrics scrape and of the readiness probe, and demo start-up.

    .venv/bin/python bench/ship.py                # 300 requests per endpoint, 20k stored events
    .venv/bin/python bench/ship.py --quick        # 100 requests, 2k events

Part 1: one real ``netmon serve`` over a data dir holding ``--events`` stored flow events. Each
endpoint is requested ``--requests`` times, interleaved round-robin so load changes hit all of
them alike; ``/healthz`` (a constant JSON answer) is the baseline measured in the same run.
Printed: p50/p99 per endpoint and the ratio of each p50 to the baseline's. The /metrics figure
includes walking the log's segments for the lag gauges.

Part 2: ``netmon demo`` in a fresh directory: seconds until the dashboard answers and until the
first event of the demo agent is stored (read through /metrics), next to the time a bare
``netmon serve`` takes to answer (the baseline).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netmon.storage.eventlog import EventLog  # noqa: E402
from tests.ports import free_port  # noqa: E402
from tests.web.flows import flow  # noqa: E402
from tests.web.harness import NETMON, NetmonServer  # noqa: E402

ENDPOINTS = ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json")


def fill(data_dir: Path, count: int) -> None:
    """Store ``count`` flow events over the last day, in batches of 1000."""
    now = time.time()
    with EventLog(data_dir, "bench", durability="none") as log:
        for start in tqdm(range(0, count, 1000), desc="storing events", unit="batch"):
            batch = [
                flow(now - (i % 86400), src=f"10.{i % 200}.{i % 7}.1", branch=("hq", "lab")[i % 2])
                for i in range(start, min(count, start + 1000))
            ]
            log.append(batch)


def latencies(url: str, requests: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
    with httpx.Client(base_url=url, timeout=30) as client:
        for path in ENDPOINTS:  # warm up (the OpenAPI document is built on first use)
            client.get(path).raise_for_status()
        for _ in tqdm(range(requests), desc="requests", unit="round"):
            for path in ENDPOINTS:
                started = time.perf_counter()
                client.get(path).raise_for_status()
                timings[path].append(time.perf_counter() - started)
    return timings


def part1(requests: int, events: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ship-") as tmp:
        server = NetmonServer(Path(tmp))
        fill(server.data_dir, events)
        server.start()
        try:
            timings = latencies(server.url, requests)
        finally:
            server.stop()
    base = statistics.median(timings["/healthz"])
    print(f"\nPart 1: {requests} requests per endpoint, {events} stored events")
    print(f"{'endpoint':<24} {'p50 ms':>8} {'p99 ms':>8} {'p50 / healthz':>14}")
    for path, values in timings.items():
        values.sort()
        p50, p99 = statistics.median(values), values[int(len(values) * 0.99) - 1]
        print(f"{path:<24} {p50 * 1000:8.2f} {p99 * 1000:8.2f} {p50 / base:14.2f}")


def wait(condition, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError("timed out")
        time.sleep(0.05)
    return time.monotonic() - started


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stored_events(url: str) -> float:
    try:
        text = httpx.get(url + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "netmon_ingest_events":
            return family.samples[0].value
    return 0.0


def part2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve_env = {**env, "NETMON_STORE__DATA_DIR": f"{tmp}/serve",
                     "NETMON_SERVER__SECRET_KEY": Fernet.generate_key().decode()}  # fmt: skip
        serve = subprocess.Popen(
            [str(NETMON), "serve", "--port", str(port)], cwd=tmp, env=serve_env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            baseline = wait(lambda: answers(url + "/healthz"), 120)
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(30)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        demo = subprocess.Popen(
            [str(NETMON), "demo", "--dir", f"{tmp}/demo", "--port", str(port)], cwd=tmp, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            started = time.monotonic()
            wait(lambda: answers(url + "/login"), 120)
            dashboard = time.monotonic() - started
            wait(lambda: stored_events(url) > 0, 120)
            first_event = time.monotonic() - started
        finally:
            demo.send_signal(signal.SIGINT)
            demo.wait(60)
    print("\nPart 2: start-up, fresh directory")
    print(f"netmon serve answers /healthz      {baseline:6.2f} s (baseline)")
    print(f"netmon demo dashboard answers       {dashboard:6.2f} s ({dashboard / baseline:.2f}x)")
    print(f"netmon demo first agent event stored {first_event:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int)
    parser.add_argument("--events", type=int)
    args = parser.parse_args()
    requests = args.requests or (100 if args.quick else 300)
    events = args.events or (2_000 if args.quick else 20_000)
    part1(requests, events)
    part2()


if __name__ == "__main__":
    main()
