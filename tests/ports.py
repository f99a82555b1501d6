"""The one ``free_port``: a TCP port that nothing listens on right now."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` (loopback by default) that the kernel just handed out and released."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
