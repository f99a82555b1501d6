"""The demo agent: ``python -m netmon.app.demo.agent --config FILE`` streams generated traffic.

It is ``netmon agent run`` with a ``DemoSource`` in place of a capture: the same pipeline, the
same encrypted transport and spool, so the server cannot tell it from a real agent. It runs
until SIGINT/SIGTERM, then seals what it has and exits (spooled batches go out next time).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from netmon.agent.config import AgentConfigError, load_agent_config
from netmon.agent.pipeline import run_pipeline
from netmon.agent.transport import AgentTransport, TransportError
from netmon.app.demo.traffic import DemoSource

log = logging.getLogger("netmon.demo.agent")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m netmon.app.demo.agent")
    parser.add_argument("--config", type=Path, required=True, help="agent.toml with [transport]")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between rounds")
    parser.add_argument("--seed", type=int, help="random seed of the generated traffic")
    return parser.parse_args(argv)


async def run(config_path: Path, interval_s: float, seed: int | None) -> int:
    """Stream rounds of generated traffic to the configured server until a signal arrives."""
    try:
        config = load_agent_config(config_path)
        transport = AgentTransport(config.resolved_agent_id(), config.server_url, config.transport)
    except (AgentConfigError, TransportError) as error:
        log.error("%s", error)
        return 2
    stopping = threading.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    source = DemoSource(interval_s, seed=seed, stop=stopping.is_set)
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    log.info("demo agent %s streaming to %s", config.resolved_agent_id(), config.server_url)
    try:
        await asyncio.to_thread(run_pipeline, source, config, transport.emit, stopping.is_set)
        await transport.drain(2.0)  # a clean stop delivers the last round if the server is up
    finally:
        stop.set()
        await runner
    log.info("demo agent stopped after %d rounds", source.rounds)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(run(args.config, args.interval, args.seed))


if __name__ == "__main__":
    raise SystemExit(main())
