"""``netmon demo``: a server on an embedded data dir with generated secrets, URL printed.

Later stages add the first admin, a demo agent replaying generated traffic, the analysis worker
and the archive manager (see docs/operations.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

DEMO_DIR = Path(".netmon-demo")


def register(subparsers: Any) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser("demo", help="run a self-contained demo (server + demo agent)")
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help="demo data directory")
    parser.add_argument("--port", type=int, default=8080)
    parser.set_defaults(handler=run_demo)


def demo_secret(directory: Path) -> str:
    """The demo's Fernet secret: generated on first run, kept in DIR/secret_key (mode 0600)."""
    from cryptography.fernet import Fernet

    path = directory / "secret_key"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return path.read_text().strip()


def run_demo(args: argparse.Namespace) -> int:
    """Start the demo and block until Ctrl-C."""
    import uvicorn

    from app.factory import create_app
    from app.settings import ServerSettings, Settings, StoreSettings

    directory: Path = args.dir
    settings = Settings(
        store=StoreSettings(data_dir=str(directory / "data")),
        server=ServerSettings(port=args.port, replica="demo", secret_key=demo_secret(directory)),
    )
    print(f"netmon demo: dashboard at http://127.0.0.1:{args.port}/  (data in {directory})")
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="info")
    return 0
