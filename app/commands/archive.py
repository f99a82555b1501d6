"""``netmon archive``: seal old partitions into ZIPs, expire old archives, guard the disk.

- ``netmon archive run``: the service; one run every ``archive.interval_s`` until SIGTERM/SIGINT
  (a signal lets the current partition finish; a kill is also safe, see archive/manager.py);
- ``netmon archive once [--dry-run] [--json]``: one run; ``--dry-run`` prints what would be
  archived, held back and deleted, and changes nothing;
- ``netmon archive verify``: read every archive back against its manifest.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``archive`` command group."""
    parser = subparsers.add_parser("archive", help="archive old events, expire old archives")
    commands = parser.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    once = commands.add_parser("once", help="one archive run, then exit")
    _common(once)
    once.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")
    once.add_argument("--json", action="store_true", help="print the run summary as JSON")
    # Fault injection for the crash-recovery tests: SIGKILL this process at step K of the run.
    once.add_argument("--crash-at-step", type=int, default=0, help=argparse.SUPPRESS)
    once.set_defaults(handler=run_once)
    service = commands.add_parser("run", help="run as a service: one run every interval_s")
    _common(service)
    service.set_defaults(handler=run_service)
    verify = commands.add_parser("verify", help="check every archive against its manifest")
    _common(verify)
    verify.set_defaults(handler=run_verify)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file (or NETMON_CONFIG)")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )  # fmt: skip


def _manager(args: argparse.Namespace, crash_at: int = 0) -> Any:
    # Deferred, as in every handler here: keeps `netmon --help` light (app/cli.py).
    from netmon.app.settings import SettingsError, load_settings
    from netmon.archive.manager import ArchiveManager, ArchiveSettingsError, StepCounter

    try:
        settings = load_settings(args.config)
        return ArchiveManager(
            settings.data_dir, settings.archive, steps=StepCounter(crash_at), progress=args.progress
        )
    except (SettingsError, ArchiveSettingsError) as error:
        print(f"netmon archive: {error}", file=sys.stderr)
        return None


def run_once(args: argparse.Namespace) -> int:
    """One run; exit code 0 when it finished without errors, 1 otherwise, 2 on bad settings."""
    import msgspec

    # Deferred: keeps `netmon --help` light (app/cli.py).
    from netmon.archive.manager import ArchiveBusyError

    manager = _manager(args, args.crash_at_step)
    if manager is None:
        return 2
    try:
        summary = manager.run_once(dry_run=args.dry_run)
    except ArchiveBusyError as error:
        print(f"netmon archive: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        if args.dry_run:
            _print_dry_run(summary)
        print(summary.line())
    return 1 if summary.errors else 0


def _print_dry_run(summary: Any) -> None:
    for partition in summary.partitions_sealed:
        print(f"would archive {partition}")
    for held in summary.held_back:
        print(f"held back {held}")
    for deletion in summary.deleted:
        print(f"would delete {deletion.name} ({deletion.size} bytes): {deletion.reason}")


def run_service(args: argparse.Namespace) -> int:
    """Run until SIGTERM or SIGINT."""
    # Deferred: keeps `netmon --help` light (app/cli.py).
    from netmon.archive.manager import run_service as loop

    manager = _manager(args)
    if manager is None:
        return 2
    _count_runs(manager)
    stopping = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    manager.should_stop = stopping.is_set
    print(f"netmon archive: running every {manager.settings.interval_s:g}s on {manager.data_dir}")
    loop(manager, stopping.wait)
    return 0


def _count_runs(manager: Any) -> None:
    """Record each service run for /metrics (netmon_archive_runs_total, app/metrics.py)."""
    # Deferred: app/metrics.py loads Starlette and prometheus_client, for this service only.
    from netmon.app.metrics import record_archive_run

    run = manager.run_once

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            summary = run(*args, **kwargs)
        except Exception:
            record_archive_run(manager.data_dir, ok=False)
            raise
        if not summary.dry_run:
            record_archive_run(manager.data_dir, not summary.errors, summary.events_archived)
        return summary

    manager.run_once = counted


def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every archive matches its manifest, 1 (naming the bad ones) otherwise."""
    # Deferred: keeps `netmon --help` light (app/cli.py).
    from netmon.archive.layout import archive_path, archived_partitions
    from netmon.archive.zipfiles import ArchiveError, verify_archive

    manager = _manager(args)
    if manager is None:
        return 2
    bad = 0
    for key in archived_partitions(manager.data_dir):
        try:
            manifest = verify_archive(archive_path(manager.data_dir, key))
        except ArchiveError as error:
            bad += 1
            print(f"BAD {key.archive_name}: {error}")
            continue
        print(f"ok  {key.archive_name}: {manifest.events} events, {len(manifest.members)} files")
    return 1 if bad else 0
