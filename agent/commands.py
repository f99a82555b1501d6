"""``netmon agent ...``: replay a capture file or capture live, writing events as JSON lines.

``netmon agent run`` (streaming to the server) is registered by netmon.agent.run_command and uses
the same ``run_pipeline``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``agent`` command group."""
    parser = subparsers.add_parser("agent", help="the sniffer agent")
    commands = parser.add_subparsers(dest="agent_command", required=True, metavar="SUBCOMMAND")

    replay = commands.add_parser("replay", help="meter a pcap/pcapng file into flow events")
    replay.add_argument("file", type=Path, help="pcap or pcapng file")
    replay.add_argument("--realtime", action="store_true", help="pace packets as captured")
    replay.add_argument("--loop", action="store_true", help="replay the file again and again")
    _common(replay)
    replay.set_defaults(handler=run_replay)

    capture = commands.add_parser("capture", help="capture live on an interface")
    capture.add_argument("--interface", "-i", help="interface (default: the config's)")
    capture.add_argument("--filter", "-f", dest="bpf", help="BPF filter (default: the config's)")
    capture.add_argument("--duration", type=float, default=0.0, help="stop after SECONDS")
    _common(capture)
    capture.set_defaults(handler=run_capture)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="agent.toml (default: built-in defaults)")
    parser.add_argument(
        "--output", "-o", default="-", help="where JSON lines go: '-' for stdout or a file path"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _load(args: argparse.Namespace) -> Any:
    # deferred: `netmon --help` imports this module and must stay light (see app/cli.py)
    from netmon.agent.config import AgentConfigError, load_agent_config

    try:
        return load_agent_config(args.config)
    except AgentConfigError as error:
        log.error("%s", error)
        return None


def _writer(target: str) -> tuple[IO[bytes], Callable[[Any], None]]:
    # deferred: `netmon --help` imports this module and must stay light (see app/cli.py)
    from netmon.storage.contract.events import AgentHeartbeat, DetectionRaised, encode_json_line

    stream = sys.stdout.buffer if target == "-" else open(target, "ab")  # noqa: SIM115

    def emit(event: Any) -> None:
        stream.write(encode_json_line(event))
        if isinstance(event, AgentHeartbeat | DetectionRaised):
            stream.flush()  # live readers see health and critical findings at once

    return stream, emit


def _run(args: argparse.Namespace, source: Any, config: Any, stop: Any = None) -> int:
    # deferred: `netmon --help` imports this module and must stay light (see app/cli.py)
    from netmon.agent.config import AgentConfigError
    from netmon.agent.pipeline import run_pipeline  # deferred, as above

    stream, emit = _writer(args.output)
    try:
        stats = run_pipeline(source, config, emit, stop=stop)
    except BrokenPipeError:
        return 0
    except AgentConfigError as error:  # e.g. a domain list file that cannot be read
        log.error("%s", error)
        return 2
    finally:
        with contextlib.suppress(BrokenPipeError):
            stream.flush()
        if stream is not sys.stdout.buffer:
            stream.close()
    log.info(
        "%d packets (%d malformed, %d not IP, %d dropped), %d flows, %d detections raised, %.2f s",
        stats.packets_seen,
        stats.packets_malformed,
        stats.packets_not_ip,
        stats.packets_dropped,
        stats.flows_exported,
        stats.detections_raised,
        stats.elapsed_s,
    )
    return 0


def _stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM ask the pipeline to stop and flush (set explicitly: a background job
    started by a non-interactive shell inherits an ignored SIGINT)."""
    stopping = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stopping


def run_replay(args: argparse.Namespace) -> int:
    """``netmon agent replay FILE``."""
    # deferred: `netmon --help` imports this module and must stay light (see app/cli.py)
    from netmon.agent.capture import CaptureError, FileSource

    config = _load(args)
    if config is None:
        return 2
    try:
        source = FileSource(
            args.file,
            realtime=args.realtime,
            loop=args.loop,
            progress=not args.no_progress,
        )
        return _run(args, source, config, _stop_on_signals().is_set)
    except CaptureError as error:
        log.error("%s", error)
        return error.exit_code


def run_capture(args: argparse.Namespace) -> int:
    """``netmon agent capture``: live capture until Ctrl-C or ``--duration``."""
    # deferred: `netmon --help` imports this module and must stay light (see app/cli.py)
    from netmon.agent.capture import CaptureError, LiveSource

    config = _load(args)
    if config is None:
        return 2
    interface = args.interface or config.interface
    bpf = config.bpf_filter if args.bpf is None else args.bpf
    try:
        source = LiveSource(interface, bpf)
    except CaptureError as error:
        log.error("%s", error)
        return error.exit_code
    deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    stopping = _stop_on_signals()

    def stop() -> bool:
        return stopping.is_set() or time.monotonic() >= deadline

    log.info("capturing on %s%s", interface, f" (filter {bpf!r})" if bpf else "")
    try:
        return _run(args, source, config, stop)
    except CaptureError as error:
        log.error("%s", error)
        return error.exit_code
