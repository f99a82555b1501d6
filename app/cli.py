"""The ``netmon`` command: one sub-command group per concept, each registered by its own module.

A module listed in COMMAND_MODULES exposes ``register(subparsers)``; it keeps heavy imports
inside its handlers so that ``netmon --help`` and the agent-only install stay light.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "netmon.app.commands.serve",
    "netmon.app.commands.demo",
    "netmon.app.commands.projections",
    "netmon.app.commands.users",
    "netmon.app.commands.audit",
    "netmon.agent.commands",
    "netmon.app.commands.agents",
    "netmon.agent.run_command",  # adds `agent run` to the group netmon.agent.commands creates
    "netmon.app.commands.archive",
    "netmon.app.commands.model",
    "netmon.app.commands.analyze",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered command group."""
    parser = argparse.ArgumentParser(prog="netmon", description="Netmon network security monitor")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
