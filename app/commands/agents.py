"""``netmon agents``: enrol, rotate, disable and list agents (the registry in storage/agents.py).

``add`` and ``rotate`` print the agent's configuration as TOML, with the key: the only time the
key is shown. Paste it into the agent's ``agent.toml``. ``list`` also says, per agent, what its
last heartbeat reported of its domain policy (read from this replica's saved projections): an
agent without one finds no unapproved domain, and nothing else would say so.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from netmon.storage.names import InvalidNameError


def register(subparsers: Any) -> None:
    """Add the ``agents`` command group."""
    parser = subparsers.add_parser("agents", help="enrol and manage agents")
    parser.add_argument("--config", type=Path, help="TOML settings file (or NETMON_CONFIG)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="enrol an agent and print its agent.toml")
    add.add_argument("name", help="agent id: a-z, 0-9, '_' or '-'")
    add.add_argument("--branch", required=True, help="the branch its events belong to")
    add.add_argument("--server-url", default="", help="ws(s):// URL the agent connects to")
    add.set_defaults(handler=_add)

    rotate = actions.add_parser("rotate", help="give an agent a new key (old key kept)")
    rotate.add_argument("name")
    rotate.add_argument(
        "--finish",
        action="store_true",
        help="end a rotation: keep only the newest key (no new key made)",
    )
    rotate.add_argument("--server-url", default="")
    rotate.set_defaults(handler=_rotate)

    for action, helptext in (
        ("disable", "refuse the agent's connections"),
        ("enable", "accept the agent's connections again"),
    ):
        sub = actions.add_parser(action, help=helptext)
        sub.add_argument("name")
        sub.set_defaults(handler=_set_enabled, enabled=(action == "enable"))

    listing = actions.add_parser("list", help="list enrolled agents")
    listing.set_defaults(handler=_list)


def _registry(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    # Deferred: the registry needs the server's packages, absent from an agent-only install.
    from netmon.app.settings import load_settings
    from netmon.storage.agents import AgentRegistry

    settings = load_settings(args.config)
    return settings, AgentRegistry(settings.data_dir, settings.server.secret_key)


def _run(args: argparse.Namespace, action) -> int:  # type: ignore[no-untyped-def]
    # Deferred: the registry needs the server's packages, absent from an agent-only install.
    from netmon.app.settings import SettingsError
    from netmon.storage.agents import AgentRegistryError

    try:
        settings, registry = _registry(args)
        action(settings, registry)
    except (SettingsError, AgentRegistryError, InvalidNameError) as error:
        print(f"netmon agents {args.action}: {error}", file=sys.stderr)
        return 2
    return 0


def agent_toml(agent_id: str, branch: str, key: str, server_url: str) -> str:
    """The part of agent.toml that the server decides."""
    return (
        f"# agent.toml for {agent_id} (branch {branch}); the key is secret: keep this file 0600\n"
        f'agent_id = "{agent_id}"\n'
        f'branch = "{branch}"\n'
        f'server_url = "{server_url}"\n'
        "\n[transport]\n"
        f'key = "{key}"\n'
        f'spool_dir = "/var/lib/netmon-agent/spool"\n'
    )


def _url(args: argparse.Namespace, settings: Any) -> str:
    return args.server_url or f"ws://{settings.server.host}:{settings.server.port}"


def _add(args: argparse.Namespace) -> int:
    def action(settings: Any, registry: Any) -> None:
        key = registry.add(args.name, args.branch)
        print(agent_toml(args.name, args.branch, key, _url(args, settings)), end="")

    return _run(args, action)


def _rotate(args: argparse.Namespace) -> int:
    def action(settings: Any, registry: Any) -> None:
        if args.finish:
            registry.retire_old_keys(args.name)
            print(f"agent {args.name}: old keys retired, only the newest key is accepted")
            return
        key = registry.rotate(args.name)
        record = registry.get(args.name)
        print(agent_toml(args.name, record.branch, key, _url(args, settings)), end="")
        print(
            f"# the old key stays valid (spooled batches) until: "
            f"netmon agents rotate {args.name} --finish",
            file=sys.stderr,
        )

    return _run(args, action)


def _set_enabled(args: argparse.Namespace) -> int:
    def action(settings: Any, registry: Any) -> None:
        registry.set_enabled(args.name, args.enabled)
        print(f"agent {args.name} {'enabled' if args.enabled else 'disabled'}")

    return _run(args, action)


def _list(args: argparse.Namespace) -> int:
    def action(settings: Any, registry: Any) -> None:
        # Deferred: the projections need the server's packages, as the registry does.
        from netmon.app.projections.agents import domain_policy_text

        reported = _reported_domain_rules(settings)
        print(f"{'AGENT':<24} {'BRANCH':<16} {'ENABLED':<8} {'KEYS':<5} ROTATED (UTC)")
        for record in registry.agents():
            rotated = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.rotated))
            print(
                f"{record.agent_id:<24} {record.branch:<16} {'yes' if record.enabled else 'no':<8} "
                f"{record.key_count:<5} {rotated}"
            )
            rules = reported.get(record.agent_id, -1)
            print(f"  domain policy: {domain_policy_text(rules)}")

    return _run(args, action)


def _reported_domain_rules(settings: Any) -> dict[str, int]:
    """Each agent's last reported ``domain_rules``, from the replica's projection snapshot.

    Only the agents part is decoded, and nothing is written: a snapshot that is missing (no
    server ran yet) or unreadable leaves every agent "not reported".
    """
    import msgspec

    # Deferred: the server's modules load packages absent from an agent-only install.
    from netmon.app.projections.agents import reported_domain_rules
    from netmon.app.projections.runner import snapshot_path  # deferred, as above

    path = snapshot_path(settings.data_dir, settings.server.replica)
    try:
        return reported_domain_rules(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
        print(f"netmon agents list: projections at {path} not read: {error}", file=sys.stderr)
        return {}
