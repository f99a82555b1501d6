"""``netmon users``: create the first admin, list users, reset a password (e.g. a locked-out admin).

These work on the database directly (no running server needed); every change is audited with
the actor "cli:<login name>".
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``users`` command group."""
    parser = subparsers.add_parser("users", help="manage users (first admin, password reset)")
    parser.add_argument("--config", type=Path, help="TOML settings file (or NETMON_CONFIG)")
    commands = parser.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    create = commands.add_parser("create-admin", help="create an admin user")
    create.add_argument("--username", default="admin")
    create.add_argument(
        "--generate", action="store_true", help="generate the password and print it once"
    )
    create.set_defaults(handler=lambda args: _run(_create_admin, args))
    listing = commands.add_parser("list", help="list users")
    listing.set_defaults(handler=lambda args: _run(_list_users, args))
    reset = commands.add_parser(
        "reset-password", help="set a new password (revokes tokens and sessions)"
    )
    reset.add_argument("username")
    reset.add_argument(
        "--generate", action="store_true", help="generate the password and print it once"
    )
    reset.set_defaults(handler=lambda args: _run(_reset_password, args))


def _run(action: Any, args: argparse.Namespace) -> int:
    # Deferred, as in every handler here: keeps `netmon --help` light (app/cli.py).
    from netmon.app.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        print(f"netmon users: {error}", file=sys.stderr)
        return 2
    result: int = asyncio.run(action(settings, args))
    return result


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _new_password(username: str, generate: bool, min_length: int) -> tuple[str, bool] | None:
    """(password, was generated), or None after telling the user why not."""
    # Deferred: argon2 is a server package, absent from an agent-only install.
    from netmon.app.auth.passwords import PasswordPolicyError, check_policy, generate_password

    if generate or not sys.stdin.isatty():
        return generate_password(), True
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Repeat it: "):
        print("netmon users: the passwords differ", file=sys.stderr)
        return None
    try:
        check_policy(first, username, min_length)
    except PasswordPolicyError as error:
        print(f"netmon users: {error}", file=sys.stderr)
        return None
    return first, False


async def _create_admin(settings: Any, args: argparse.Namespace) -> int:
    # Deferred: SQLite and argon2 are server packages, absent from an agent-only install.
    from netmon.app.auth.forms import BadInput, check_text
    from netmon.app.auth.passwords import Passwords
    from netmon.storage.audit import AuditTrail
    from netmon.storage.database import Database, database_path
    from netmon.storage.users import UserExistsError, UserStore

    try:
        check_text("username", args.username)
    except BadInput as error:
        print(f"netmon users: {error}", file=sys.stderr)
        return 2
    chosen = _new_password(args.username, args.generate, settings.auth.password_min_length)
    if chosen is None:
        return 2
    password, generated = chosen
    db = await Database.open(database_path(settings.data_dir))
    try:
        users = UserStore(db)
        try:
            user = await users.create(
                args.username, await Passwords(settings.auth).hash(password), "admin"
            )
        except UserExistsError as error:
            print(f"netmon users: {error}", file=sys.stderr)
            return 1
        await AuditTrail(db).record(
            "user.created", actor=_actor(), target=user.username, detail={"role": "admin"}
        )
    finally:
        await db.close()
    print(f"created admin {user.username!r}")
    if generated:
        print(f"password (shown once): {password}")
    return 0


async def _list_users(settings: Any, args: argparse.Namespace) -> int:
    # Deferred: SQLite access needs the server's packages, absent from an agent-only install.
    from netmon.storage.database import Database, database_path
    from netmon.storage.users import UserStore

    db = await Database.open(database_path(settings.data_dir))
    try:
        for user in await UserStore(db).all():
            print(f"{user.id}\t{user.role}\t{','.join(user.branches) or '-'}\t{user.username}")
    finally:
        await db.close()
    return 0


async def _reset_password(settings: Any, args: argparse.Namespace) -> int:
    # Deferred: SQLite and argon2 are server packages, absent from an agent-only install.
    from netmon.app.auth.passwords import Passwords
    from netmon.storage.audit import AuditTrail
    from netmon.storage.database import Database, database_path
    from netmon.storage.users import UserStore

    db = await Database.open(database_path(settings.data_dir))
    try:
        users = UserStore(db)
        user = await users.get_by_username(args.username)
        if user is None:
            print(f"netmon users: no user {args.username!r}", file=sys.stderr)
            return 1
        chosen = _new_password(user.username, args.generate, settings.auth.password_min_length)
        if chosen is None:
            return 2
        password, generated = chosen
        await users.set_password(user.id, await Passwords(settings.auth).hash(password))
        await AuditTrail(db).record("user.password_reset", actor=_actor(), target=user.username)
    finally:
        await db.close()
    print(f"password of {user.username!r} reset; its tokens and sessions are revoked")
    if generated:
        print(f"password (shown once): {password}")
    return 0
