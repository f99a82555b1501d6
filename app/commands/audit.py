"""``netmon audit``: check the hash chain of the audit trail, or print its latest records."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``audit`` command group."""
    parser = subparsers.add_parser("audit", help="verify or show the audit trail")
    parser.add_argument("--config", type=Path, help="TOML settings file (or NETMON_CONFIG)")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = commands.add_parser(
        "verify", help="check the hash chain; exit 1 naming the first bad record"
    )
    verify.set_defaults(handler=lambda args: _run(_verify, args))
    tail = commands.add_parser("tail", help="print the latest records")
    tail.add_argument("-n", type=int, default=20, help="how many records")
    tail.set_defaults(handler=lambda args: _run(_tail, args))


def _run(action: Any, args: argparse.Namespace) -> int:
    # Deferred: SQLite access needs the server's packages, absent from an agent-only install.
    from netmon.app.settings import SettingsError, load_settings
    from netmon.storage.database import DatabaseError, database_path

    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        print(f"netmon audit: {error}", file=sys.stderr)
        return 2
    path = database_path(settings.data_dir)
    if not path.is_file():
        print(f"netmon audit: no database at {path}", file=sys.stderr)
        return 2
    try:
        result: int = asyncio.run(action(path, args))
    except DatabaseError as error:
        print(f"netmon audit: {error}", file=sys.stderr)
        return 2
    return result


async def _verify(path: Path, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    # Deferred: SQLite access needs the server's packages, absent from an agent-only install.
    from netmon.storage.audit import AuditTrail
    from netmon.storage.database import Database

    db = await Database.open(path)
    try:
        trail = AuditTrail(db)
        # Progress on stderr, only on a terminal: stdout stays one parseable verdict line.
        with tqdm(total=await trail.count(), unit="rec", desc="verifying", disable=None) as bar:
            result = await trail.verify(progress=bar.update)
    finally:
        await db.close()
    if result.ok:
        print(f"audit trail OK: {result.checked} records, chain intact")
        return 0
    print(
        f"audit trail BROKEN at record {result.first_bad}: {result.reason}"
        f" ({result.checked} records before it are intact)"
    )
    return 1


async def _tail(path: Path, args: argparse.Namespace) -> int:
    import datetime

    # Deferred: SQLite access needs the server's packages, absent from an agent-only install.
    from netmon.storage.audit import AuditQuery, AuditTrail
    from netmon.storage.database import Database

    db = await Database.open(path)
    try:
        row = await db.fetch_one("SELECT COALESCE(MAX(seq), 0) FROM audit")
        start = max(0, int(row[0] if row else 0) - max(1, min(args.n, 1000)))
        records = await AuditTrail(db).query(AuditQuery(after_seq=start, limit=1000))
    finally:
        await db.close()
    for record in records:
        when = datetime.datetime.fromtimestamp(record.ts, datetime.UTC).isoformat(
            timespec="seconds"
        )
        print(
            f"{record.seq}\t{when}\t{record.actor[:64]}\t{record.action}\t{record.target[:64]}"
            f"\t{record.source}\t{record.outcome}"
        )
    return 0
