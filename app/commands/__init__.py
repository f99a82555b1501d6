"""CLI command groups; each module has ``register(subparsers)`` (see app/cli.py)."""
