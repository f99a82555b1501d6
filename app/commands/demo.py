"""``netmon demo``: the whole system on one machine, in one command, on an embedded data dir.

It starts, as separate processes exactly as in production (app/demo/supervisor.py):
the server (``netmon serve``, which creates the first admin and prints its one-time password),
a demo agent enrolled on first run that streams generated traffic with current timestamps
(app/demo/agent.py), or with root and ``--live IFACE`` a real capturing agent, the analysis
worker (``netmon analyze``) and the archive manager (``netmon archive run``). Ctrl-C stops them
all. Everything lives under ``--dir`` (default ``./.netmon-demo``): secret key, data, logs.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from netmon.app.demo.supervisor import ChildFailed, Supervisor, wait_for
from netmon.storage.contract.files import write_atomically

DEMO_DIR = Path(".netmon-demo")
DEMO_AGENT = "demo-agent"
DEMO_BRANCH = "demo"
PASSWORD = re.compile(r"one-time password:\s*\n\s*\n\s*(\S+)")
RESET_PASSWORD = re.compile(r"password \(shown once\): (\S+)")
# Short analysis windows so that the demo's alerts show within a minute or two.
DEMO_SETTINGS = {
    "NETMON_ANALYSIS__WINDOW_S": "60",
    "NETMON_ANALYSIS__WINDOW_GRACE_S": "5",
    "NETMON_ANALYSIS__ALERT_COOLDOWN_S": "120",
    "NETMON_ARCHIVE__INTERVAL_S": "600",
}


def register(subparsers: Any) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser("demo", help="run the whole system locally with a demo agent")
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help="demo data directory")
    parser.add_argument("--port", type=int, default=8080, help="dashboard port on 127.0.0.1")
    parser.add_argument(
        "--live", metavar="IFACE", help="capture live on IFACE instead of generated traffic (root)"
    )
    parser.add_argument(
        "--interval", type=float, default=10.0, help="seconds between rounds of demo traffic"
    )
    parser.add_argument(
        "--new-password", action="store_true", help="give the admin a new one-time password"
    )
    parser.set_defaults(handler=run_demo)


def demo_secret(directory: Path) -> str:
    """The demo's Fernet secret: generated on first run, kept in DIR/secret_key (mode 0600)."""
    from cryptography.fernet import Fernet

    path = directory / "secret_key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return path.read_text().strip()


def demo_env(directory: Path, port: int) -> dict[str, str]:
    """The children's environment: the caller's, minus its NETMON_* settings, plus the demo's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETMON_")}
    env.update(DEMO_SETTINGS)
    env.update(
        NETMON_STORE__DATA_DIR=str(directory / "data"),
        NETMON_SERVER__SECRET_KEY=demo_secret(directory),
        NETMON_SERVER__REPLICA="demo",
        NETMON_SERVER__HOST="127.0.0.1",
        NETMON_SERVER__PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    return env


def netmon(*args: str) -> list[str]:
    """argv of a netmon sub-command run by this same interpreter."""
    return [sys.executable, "-m", "netmon.app.cli", *args]


def write_agent_config(directory: Path, env: dict[str, str], port: int, live: str | None) -> Path:
    """Enrol the demo agent on first run; (re)write DIR/agent.toml for this port and source."""
    path = directory / "agent.toml"
    key_file = directory / "agent.key"
    if not key_file.exists():
        enrolled = subprocess.run(
            netmon("agents", "add", DEMO_AGENT, "--branch", DEMO_BRANCH),
            cwd=directory, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if enrolled.returncode != 0:
            raise RuntimeError(f"enrolling the demo agent failed: {enrolled.stderr.strip()}")
        key = tomllib.loads(enrolled.stdout)["transport"]["key"]
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
    # Deferred: the demo's traffic generator loads scapy, which `netmon --help` must not wait for.
    from netmon.app.demo.traffic import APPROVED_DOMAINS, THREAT_NETWORK

    threats = directory / "threats.txt"
    write_atomically(threats, f"# demo threat list\n{THREAT_NETWORK}\n".encode())
    approved = ", ".join(f'"{name}"' for name in APPROVED_DOMAINS)
    text = (
        "# Written by `netmon demo` on every start; the key is in agent.key.\n"
        f'agent_id = "{DEMO_AGENT}"\n'
        f'branch = "{DEMO_BRANCH}"\n'
        f'server_url = "ws://127.0.0.1:{port}"\n'
        f'interface = "{live or "lo"}"\n'
        # Live: leave out the agent's own uploads to the demo server.
        f'bpf_filter = "{f"not tcp port {port}" if live else ""}"\n'
        "idle_timeout = 15.0\n"
        "heartbeat_interval = 10.0\n"
        "\n[[threat_lists]]\n"
        'name = "demo"\n'
        f'path = "{threats}"\n'
        "\n[domains]\n"
        f"approved = [{approved}]\n"
        "\n[transport]\n"
        f'key = "{key_file.read_text().strip()}"\n'
        f'spool_dir = "{directory / "agent-spool"}"\n'
    )
    write_atomically(path, text.encode(), mode=0o600)  # it holds the agent's key
    return path


def healthy(url: str) -> bool:
    """True when the server's /healthz answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def new_admin_password(directory: Path, env: dict[str, str]) -> str:
    """Reset the demo admin's password (``netmon users reset-password``); the new password."""
    reset = subprocess.run(
        netmon("users", "reset-password", "admin", "--generate"),
        cwd=directory, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = RESET_PASSWORD.search(reset.stdout)
    if reset.returncode != 0 or found is None:
        raise RuntimeError(f"resetting the admin password failed: {reset.stderr.strip()}")
    return found.group(1)


def banner(url: str, server_output: str, directory: Path, password: str | None = None) -> str:
    """What the operator needs: the URL and, on first run, the admin's one-time password."""
    found = PASSWORD.search(server_output)
    password = password or (found.group(1) if found else None)
    lines = ["", "netmon demo is running (Ctrl-C stops everything)", f"  dashboard: {url}/"]
    lines.append(f"  API docs:  {url}/docs     metrics: {url}/metrics")
    if password:
        lines += ["  login:     admin", "  one-time password:", "", f"    {password}", ""]
    else:
        lines.append(
            "  login:     admin (password shown on the first run; "
            "`netmon demo --new-password` makes a new one)"
        )
    lines.append(f"  data and logs in {directory}")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    """Start every part, print the URL, and block until Ctrl-C (or a part fails)."""
    if args.live and os.geteuid() != 0:
        print("netmon demo: --live needs root (raw capture); run it with sudo", file=sys.stderr)
        return 2
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    env = demo_env(directory, args.port)
    url = f"http://127.0.0.1:{args.port}"
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    supervisor = Supervisor(directory, env)
    try:
        agent_config = write_agent_config(directory, env, args.port, args.live)
        existing = (directory / "data" / "netmon.sqlite3").exists()
        password = new_admin_password(directory, env) if args.new_password and existing else None
        server = supervisor.start("server", netmon("serve"))
        print(f"netmon demo: starting the server on {url} (log: {server.log_path})", flush=True)
        wait_for(lambda: healthy(url) or stopping.is_set(), 120, supervisor, "the server")
        if stopping.is_set():
            return 0
        if args.live:
            agent_argv = netmon("agent", "run", "--config", str(agent_config))
        else:
            agent_argv = [
                sys.executable,
                "-m",
                "netmon.app.demo.agent",
                "--config",
                str(agent_config),
            ]
            agent_argv += ["--interval", str(args.interval)]
        supervisor.start("agent", agent_argv)
        supervisor.start("analyzer", netmon("analyze"))
        supervisor.start("archiver", netmon("archive", "run"))
        print(banner(url, server.output(), directory, password), flush=True)
        while not stopping.wait(0.5):
            supervisor.check()
    except (ChildFailed, TimeoutError, RuntimeError) as error:
        print(f"netmon demo: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        supervisor.stop_all()
    print("netmon demo: stopped", flush=True)
    return 0
