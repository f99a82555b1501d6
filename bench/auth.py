"""Identity benchmark: what authentication costs per request, audit append/verify rates, argon2id.

Run: .venv/bin/python bench/auth.py [--requests N] [--records N]

Prints, all measured in this run on a throw-away data dir:
- requests/s through the real app on loopback (uvicorn in a thread, one httpx client) for the
  public /healthz (the baseline: route lookup only), and /api/v1/auth/me with a Bearer token
  (joserfc verify + revocation + user lookup) and with a session cookie; ratio to the baseline;
- audit records appended/s (one BEGIN IMMEDIATE transaction each) and verified/s, next to the
  bare SHA-256 of the same canonical bytes as the baseline;
- argon2id hash time at the default cost (what one login costs the server) and logins/s/core.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import msgspec  # noqa: E402
import uvicorn  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from netmon.app.auth.passwords import Passwords  # noqa: E402
from netmon.app.settings import Settings, load_settings  # noqa: E402
from netmon.storage.audit import AuditTrail  # noqa: E402
from netmon.storage.database import Database, database_path  # noqa: E402
from netmon.storage.users import UserStore  # noqa: E402
from netmon.web.factory import create_app  # noqa: E402

PASSWORD = "bench passphrase 4711"


def bench_settings(data_dir: Path, cheap_argon2: bool = True) -> Settings:
    environ = {
        "NETMON_STORE__DATA_DIR": str(data_dir),
        "NETMON_AUTH__JWT_SECRET": Fernet.generate_key().decode(),
        "NETMON_SERVER__SECRET_KEY": Fernet.generate_key().decode(),
    }
    if cheap_argon2:
        environ |= {
            "NETMON_AUTH__ARGON2_TIME_COST": "1",
            "NETMON_AUTH__ARGON2_MEMORY_KIB": "1024",
            "NETMON_AUTH__ARGON2_PARALLELISM": "1",
        }
    return load_settings(environ=environ, dotenv_file=None)


async def seed(settings: Settings) -> None:
    db = await Database.open(database_path(settings.data_dir))
    try:
        hashed = await Passwords(settings.auth).hash(PASSWORD)
        await UserStore(db).create("bench", hashed, "analyst", ("north",))
    finally:
        await db.close()


def rate(client: httpx.Client, path: str, count: int, headers: dict[str, str]) -> float:
    """Requests per second for ``count`` sequential GETs."""
    start = time.perf_counter()
    for _ in range(count):
        assert client.get(path, headers=headers).status_code == 200
    return count / (time.perf_counter() - start)


def interleaved(
    client: httpx.Client, count: int, kinds: dict[str, tuple[str, dict[str, str]]], rounds: int = 5
) -> dict[str, float]:
    """Median rate per kind over rounds that alternate the kinds (the machine is shared)."""
    for path, headers in kinds.values():
        rate(client, path, 20, headers)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, (path, headers) in kinds.items():
            rates[name].append(rate(client, path, max(1, count // rounds), headers))
    return {name: statistics.median(values) for name, values in rates.items()}


def bench_requests(data_dir: Path, count: int) -> None:
    settings = bench_settings(data_dir)
    asyncio.run(seed(settings))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            grant = {"grant_type": "password", "username": "bench", "password": PASSWORD}
            token = client.post("/api/v1/auth/token", data=grant).json()["access_token"]
            csrf = client.get("/login").cookies["netmon_login_csrf"]
            login = {"username": "bench", "password": PASSWORD, "csrf_token": csrf}
            assert client.post("/login", data=login).status_code == 303
            cookie = client.cookies["netmon_session"]
            client.cookies.clear()
            measured = interleaved(
                client,
                count,
                {
                    "base": ("/healthz", {}),
                    "bearer": ("/api/v1/auth/me", {"Authorization": f"Bearer {token}"}),
                    "session": ("/api/v1/auth/me", {"Cookie": f"netmon_session={cookie}"}),
                },
            )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    base, bearer, session = measured["base"], measured["bearer"], measured["session"]
    print(f"requests ({count} each in 5 interleaved rounds, medians, sequential, loopback):")
    print(f"  GET /healthz (public, baseline)   {base:8.0f} req/s")
    print(f"  GET /api/v1/auth/me  Bearer JWT    {bearer:8.0f} req/s  ratio {bearer / base:.2f}")
    print(f"  GET /api/v1/auth/me  session       {session:8.0f} req/s  ratio {session / base:.2f}")


async def bench_audit(data_dir: Path, count: int) -> None:
    db = await Database.open(database_path(data_dir))
    trail = AuditTrail(db)
    try:
        start = time.perf_counter()
        for n in range(count):
            await trail.record(
                "bench.append", actor="bench", target=f"t{n}", source="127.0.0.1", detail={"n": n}
            )
        append = count / (time.perf_counter() - start)
        start = time.perf_counter()
        result = await trail.verify()
        verify = count / (time.perf_counter() - start)
        assert result.ok and result.checked == count
    finally:
        await db.close()
    import hashlib

    payload = msgspec.json.encode(
        ["0" * 64, 1, time.time(), "bench", "bench.append", "t1", "127.0.0.1", "ok", '{"n":1}'],
        order="sorted",
    )
    start = time.perf_counter()
    for _ in range(count):
        hashlib.sha256(payload).hexdigest()
    baseline = count / (time.perf_counter() - start)
    print(f"audit trail ({count} records):")
    print(f"  bare SHA-256 of one record (baseline) {baseline:10.0f} /s")
    print(
        f"  append (one transaction each)         {append:10.0f} /s  ratio {append / baseline:.4f}"
    )
    print(
        f"  verify (read + rehash)                {verify:10.0f} /s  ratio {verify / baseline:.4f}"
    )


def bench_argon2(data_dir: Path) -> None:
    default = Passwords(bench_settings(data_dir, cheap_argon2=False).auth)
    cheap = Passwords(bench_settings(data_dir).auth)

    def timed(passwords: Passwords, rounds: int) -> float:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            asyncio.run(passwords.hash(PASSWORD))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    slow, fast = timed(default, 5), timed(cheap, 20)
    print("argon2id hash (median):")
    print(f"  test cost  t=1 m=1 MiB  p=1  {fast * 1000:7.1f} ms  (baseline)")
    print(
        f"  default    t=3 m=64 MiB p=4  {slow * 1000:7.1f} ms  ratio {slow / fast:.1f}"
        f"  -> about {1 / slow:.0f} logins/s per core"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netmon-bench-auth-") as tmp:
        bench_requests(Path(tmp) / "server", args.requests)
        asyncio.run(bench_audit(Path(tmp) / "audit", args.records))
        bench_argon2(Path(tmp) / "argon2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
