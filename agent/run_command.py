"""``netmon agent run``: capture (live or a pcap file) -> flow pipeline -> transport to the server.

The pipeline runs in a worker thread and calls ``AgentTransport.emit``; the transport's event
loop delivers the spooled batches. A pcap source ends by waiting (``--drain-timeout``) until
the server has acknowledged everything; whatever is left stays in the spool for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``run`` to the ``agent`` group (created by netmon.agent.commands, listed before us)."""
    group = subparsers.choices.get("agent")
    if group is None:
        group = subparsers.add_parser("agent", help="the sniffer agent")
        group.add_subparsers(dest="agent_command", required=True, metavar="SUBCOMMAND")
    actions = next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))
    run = actions.add_parser("run", help="capture and stream events to the server")
    run.add_argument("--config", type=Path, required=True, help="agent.toml with [transport]")
    run.add_argument("--pcap", type=Path, help="replay this capture file instead of capturing live")
    run.add_argument("--interface", "-i", help="interface (default: the config's)")
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="after a pcap ends, wait this long for acknowledgements",
    )
    run.set_defaults(handler=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    """Run the agent until the source ends or SIGINT/SIGTERM."""
    # deferred: `netmon --help` imports this module and must stay light (see app/cli.py)
    from netmon.agent.capture import CaptureError, FileSource, LiveSource
    from netmon.agent.config import AgentConfigError, load_agent_config  # deferred, as above
    from netmon.agent.transport import AgentTransport, TransportError  # deferred, as above

    try:
        config = load_agent_config(args.config)
        transport = AgentTransport(config.resolved_agent_id(), config.server_url, config.transport)
        source: Any
        if args.pcap is not None:
            source = FileSource(args.pcap, realtime=False, loop=False, progress=True)
        else:
            source = LiveSource(args.interface or config.interface, config.bpf_filter)
    except (AgentConfigError, TransportError) as error:
        log.error("%s", error)
        return 2
    except CaptureError as error:
        log.error("%s", error)
        return error.exit_code
    return asyncio.run(_main(args, config, source, transport))


async def _main(args: argparse.Namespace, config: Any, source: Any, transport: Any) -> int:
    # deferred: `netmon --help` imports this module and must stay light (see app/cli.py)
    from netmon.agent.pipeline import run_pipeline

    stopping = threading.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    try:
        await asyncio.to_thread(run_pipeline, source, config, transport.emit, stopping.is_set)
        if not stopping.is_set() and not await transport.drain(args.drain_timeout):
            log.warning(
                "agent: %d batches not yet acknowledged; they stay in the spool",
                len(transport.spool),
            )
    finally:
        stop.set()
        await runner
    return 0
