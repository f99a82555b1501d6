"""``netmon serve``: run one server replica with uvicorn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser("serve", help="run one server replica")
    parser.add_argument("--config", type=Path, help="TOML settings file (or NETMON_CONFIG)")
    parser.add_argument("--host", help="listen address (overrides server.host)")
    parser.add_argument("--port", type=int, help="listen port (overrides server.port)")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Load settings, build the app and serve it until interrupted."""
    import msgspec
    import uvicorn

    # Deferred: the server's packages are absent from an agent-only install (app/cli.py).
    from netmon.app.settings import SettingsError, load_settings
    from netmon.web.factory import create_app

    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        print(f"netmon serve: {error}", file=sys.stderr)
        return 2
    server = settings.server
    if args.host or args.port:
        server = msgspec.structs.replace(
            server, host=args.host or server.host, port=args.port or server.port
        )
        settings = msgspec.structs.replace(settings, server=server)
    app = create_app(settings)
    print(f"netmon: serving on http://{server.host}:{server.port}/ (data in {settings.data_dir})")
    uvicorn.run(
        app, host=server.host, port=server.port, log_level="info", ws_per_message_deflate=False
    )
    return 0
