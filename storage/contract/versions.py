"""Netmon's release, read from the installed distribution's metadata (pyproject's ``version``).

It lives in the contract package because the agent (its heartbeats) and the server (the OpenAPI
document) both report it, and the agent may import nothing else of ours.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version


@functools.cache
def netmon_version() -> str:
    """The installed Netmon release, e.g. ``"0.1.0"``."""
    try:
        return version("netmon")
    except PackageNotFoundError:
        # Only when the code runs from a tree that was never installed (no dist-info to read).
        return "0+unknown"
