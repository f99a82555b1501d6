"""``netmon projections rebuild``: recompute this replica's projections from the whole log.

The result replaces the snapshot atomically; run it with the replica stopped (a running replica
would overwrite it with its own state at its next save). ``--output`` writes elsewhere instead,
e.g. to compare with what a running replica built.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``projections`` command group."""
    parser = subparsers.add_parser("projections", help="rebuild the projections from the log")
    parser.add_argument("--config", type=Path, help="TOML settings file (or NETMON_CONFIG)")
    commands = parser.add_subparsers(dest="projections_command", required=True, metavar="ACTION")
    rebuild = commands.add_parser("rebuild", help="recompute every projection from the whole log")
    rebuild.add_argument("--output", type=Path, help="write the snapshot here instead")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_projections)


def run_projections(args: argparse.Namespace) -> int:
    """Rebuild from position zero, showing progress in segment bytes read."""
    from tqdm import tqdm

    # Deferred: the server's modules load packages absent from an agent-only install.
    from netmon.app.follower import read_to_end
    from netmon.app.projections.runner import ProjectionRunner, snapshot_path
    from netmon.app.settings import SettingsError, load_settings
    from netmon.storage.log_reader import EventLogReader

    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        print(f"netmon projections: {error}", file=sys.stderr)
        return 2
    target = args.output or snapshot_path(settings.data_dir, settings.server.replica)
    runner = ProjectionRunner(target)
    total = _log_bytes(settings.data_dir, EventLogReader(settings.data_dir).segments())
    with tqdm(total=total, unit="B", unit_scale=True, desc="rebuild", disable=args.quiet) as bar:
        done = 0
        for batch in read_to_end(settings.data_dir, {}):
            runner.apply(batch.events, batch.offsets)
            reached = sum(batch.offsets.values())
            bar.update(reached - done)
            done = reached
    runner.save()
    print(f"rebuilt {runner.state.events} events into {target}")
    return 0


def _log_bytes(data_dir: Path, segments: list[str]) -> int:
    # Deferred: keeps `netmon --help` light (app/cli.py).
    from netmon.storage.segments import EVENTS_DIR

    total = 0
    for segment in segments:
        try:
            total += (data_dir / EVENTS_DIR / segment).stat().st_size
        except FileNotFoundError:
            continue
    return total
