"""Dashboard benchmark: server time of the Live and Analytics pages and of an IP search, over a
store of N events spread across the last 7 days (4 branches).

    .venv/bin/python bench/dashboard.py                      # 1M events, quick
    .venv/bin/python bench/dashboard.py --events 10000000    # the figure the issue asks for

A real ``netmon serve`` runs on a free loopback port over a generated data dir; every figure is
the median (and p95) of repeated requests timed by the client, next to two baselines measured
in the same run: ``/healthz`` (the floor: loopback + HTTP + auth middleware) and ``grep -F -c``
over the same segment files for the searched IP (what a search without indexes costs).
Targets: pages < 100 ms, search < 1 s. The data is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from tqdm import tqdm

from netmon.storage.contract.events import Detection, DetectionRaised, FlowObserved, new_event_id
from netmon.storage.eventlog import EventLog

BRANCHES = ("hq", "branch-a", "branch-b", "branch-c")
DAYS = 7
RARE_IP = "198.51.100.77"  # in 40 flows of one branch on two days
HOT_IP = "192.0.2.53"  # in ~2% of all flows
SSH = Detection(kind="critical_port", detail="SSH (22/tcp)", severity="critical", rule="ssh")
NETMON = Path(sys.executable).parent / "netmon"


def generate(data_dir: Path, total: int, now: float, seed: int = 7) -> None:
    """``total`` flows (0.1% of them with an SSH detection) over the 7 days before ``now``."""
    rnd = random.Random(seed)
    clients = [
        f"10.{b}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}" for b in range(4) for _ in range(500)
    ]
    servers = [
        f"{rnd.choice((23, 52, 104, 151))}.{rnd.randrange(256)}.{rnd.randrange(256)}.{n % 254 + 1}"
        for n in range(3000)
    ]
    domains = [f"svc{n}.example.com" for n in range(500)]
    start = now - DAYS * 86400
    step = DAYS * 86400 / total
    rare_at = {int(total * f) for f in (0.30, 0.80)}  # two moments get a burst of the rare IP
    batch: list[FlowObserved | DetectionRaised] = []
    with (
        EventLog(data_dir, "bench-web", durability="none") as log,
        tqdm(total=total, unit="ev", unit_scale=True, desc="generating") as bar,
    ):
        for n in range(total):
            ts = start + n * step
            branch = BRANCHES[n % 4]
            src = clients[(n % 4) * 500 + rnd.randrange(500)]
            dst = HOT_IP if rnd.random() < 0.02 else rnd.choice(servers)
            critical = n % 1000 == 0
            if any(0 <= n - at < 40 for at in rare_at):
                src, branch = RARE_IP, "branch-a"
            batch.append(
                FlowObserved(
                    id=new_event_id(ts),
                    ts=ts,
                    branch=branch,
                    agent_id=f"agent-{branch}",
                    first_seen=ts - 2.0,
                    last_seen=ts,
                    src_ip=src,
                    src_port=1024 + n % 60000,
                    dst_ip=dst,
                    dst_port=22 if critical else 443,
                    protocol=6,
                    src2dst_packets=6,
                    src2dst_bytes=900,
                    dst2src_packets=8,
                    dst2src_bytes=5200,
                    domain=domains[n % 500],
                    detections=(SSH,) if critical else (),
                    severity="critical" if critical else "none",
                )
            )
            if len(batch) == 10_000:
                log.append(batch)
                bar.update(len(batch))
                batch = []
        log.append(batch)
        bar.update(len(batch))


class Server:
    """``netmon serve`` over the generated data dir, logged in with a Bearer token."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {
            **os.environ,
            "NETMON_STORE__DATA_DIR": str(workdir / "data"),
            "NETMON_SERVER__SECRET_KEY": Fernet.generate_key().decode(),
            "NETMON_SERVER__REPLICA": "bench-web-server",
        }
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [str(NETMON), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=workdir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._pump, daemon=True).start()
        self.client = httpx.Client(base_url=self.url, timeout=120)
        try:
            self._wait(lambda: self._get_ok("/healthz"), 120, "the server to answer")
            self._login()
        except BaseException:
            self.stop()  # never leave a server behind
            raise

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def _get_ok(self, path: str) -> bool:
        try:
            return self.client.get(path).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gave up waiting for {what}:\n{''.join(self.output[-40:])}")
            time.sleep(0.2)

    def _login(self) -> None:
        if self.client.get("/", headers={"accept": "text/html"}).status_code == 200:
            return  # a build without identity
        # A fresh admin per run (the first start's one-time password is gone on a reused dir).
        username = f"bench-{os.getpid()}"
        made = subprocess.run(
            [str(NETMON), "users", "create-admin", "--username", username, "--generate"],
            cwd=self.workdir, env=self.env, capture_output=True, text=True,
        )  # fmt: skip
        found = re.search(r"password \(shown once\): (\S+)", made.stdout + made.stderr)
        if found is None:
            raise SystemExit(f"could not create a bench user:\n{made.stdout}{made.stderr}")
        answer = self.client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": found.group(1)},
        )
        answer.raise_for_status()
        self.client.headers["authorization"] = f"Bearer {answer.json()['access_token']}"

    def projected_events(self) -> int:
        answer = self.client.get("/api/v1/summary")
        return int(answer.json().get("events", 0)) if answer.status_code == 200 else -1

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def timed(client: httpx.Client, path: str, headers: dict[str, str], runs: int) -> list[float]:
    """Milliseconds per request (2 warm-up requests first, not counted)."""
    for _ in range(2):
        client.get(path, headers=headers).raise_for_status()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return times


def grep_ms(data_dir: Path, needle: str, runs: int = 3) -> tuple[float, int]:
    """Best time of ``grep -F -c`` over every segment, and the matching line count."""
    files = [str(p) for p in sorted((data_dir / "events").rglob("*.jsonl"))]
    best, count = float("inf"), 0
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(["grep", "-F", "-c", needle, *files], capture_output=True, text=True)
        best = min(best, (time.perf_counter() - started) * 1000)
        count = sum(int(line.rsplit(":", 1)[1]) for line in done.stdout.splitlines())
    return best, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dir", type=Path, help="work dir (kept); default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args = parser.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="netmon-bench-web-"))
    data_dir = workdir / "data"
    try:
        if not (data_dir / "events").exists():
            generate(data_dir, args.events, time.time())
        size = sum(p.stat().st_size for p in (data_dir / "events").rglob("*.jsonl"))
        print(f"store: {args.events:,} events, {size / 1e9:.2f} GB in {data_dir}")
        server = Server(workdir)
        try:
            with tqdm(total=args.events, unit="ev", unit_scale=True, desc="projections") as bar:

                def caught_up() -> bool:
                    bar.n = max(0, server.projected_events())
                    bar.refresh()
                    return bar.n >= args.events

                server._wait(caught_up, 3600, "the projections to catch up")
            report(server, data_dir, args.runs)
        finally:
            server.stop()
    finally:
        if not (args.keep or args.dir):
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(server: Server, data_dir: Path, runs: int) -> None:
    page = {"accept": "text/html"}
    fragment = {"accept": "text/html", "HX-Request": "true", "HX-Target": "results"}
    cases = [
        ("/healthz (baseline)", "/healthz", {}, None),
        ("Live page", "/", page, 100.0),
        ("Live page, kiosk", "/?kiosk=1", page, 100.0),
        ("Analytics page", "/analytics", page, 100.0),
        ("Analytics top lists (fragment, 2 s cache)", "/analytics/top", page, None),
        ("top lists uncached (/api/v1/summary/top)", "/api/v1/summary/top", {}, None),
        ("/api/v1/summary (charts)", "/api/v1/summary", {}, 100.0),
        ("Alerts page (14 days of the log)", "/alerts", page, None),
        ("Windows page (24 h of the log)", "/windows", page, None),
        (f"search ip {RARE_IP} (rare), 7 days", f"/events?q={RARE_IP}", fragment, 1000.0),
        (f"search ip {HOT_IP} (2%), 7 days", f"/events?q={HOT_IP}", fragment, 1000.0),
        (
            "search port:22 kind:critical_port",
            "/events?q=port:22+kind:critical_port",
            fragment,
            1000.0,
        ),
    ]
    print(f"\n{'request':44} {'median ms':>10} {'p95 ms':>8} {'target':>8}  verdict")
    floor = 0.0
    for label, path, headers, target in cases:
        times = sorted(timed(server.client, path, headers, runs))
        median, p95 = statistics.median(times), times[int(len(times) * 0.95) - 1]
        floor = floor or median
        verdict = "" if target is None else ("ok" if median < target else "SLOW")
        shown = "" if target is None else f"{target:.0f}"
        print(f"{label:44} {median:10.1f} {p95:8.1f} {shown:>8}  {verdict}")
    for ip in (RARE_IP, HOT_IP):
        ms, count = grep_ms(data_dir, f'"{ip}"')
        print(
            f"{'grep -F -c ' + ip + ' (baseline)':44} {ms:10.1f} {'':>8} {'':>8}  {count:,} lines"
        )
    print(f"\nround-trip floor (/healthz median): {floor:.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
