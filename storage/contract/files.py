"""The one way Netmon replaces a file: temp file beside it, fsync, rename, fsync of the directory.

After a crash at any point the path holds either the old content or the new, never a mix, and
once this returns the new content survives a power cut. It lives in the contract package because
the agent (spool, offline ZIPs) and the server (projections, indexes, archives, checkpoints)
both need it, and the agent may import nothing else of ours.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], object]


def write_atomically(
    path: Path, content: bytes | Writer, *, durable: bool = True, mode: int | None = None
) -> None:
    """Replace ``path`` with ``content`` (bytes, or a function writing into the open file).

    ``durable=False`` skips both fsyncs (an event log opened with ``durability="none"``); the
    rename is still atomic. ``mode`` (0o600 for anything holding a key) is set on the temp file
    before a byte is written, so the content is never readable by others, not even briefly. The
    temp name is per process and thread, so two writers of the same path never share one, and it
    is removed when anything fails.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a crash's leftover under the same name: O_EXCL below makes a new one
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        # Created with its mode (os.open, not fchmod: the Windows agent has no fchmod).
        with os.fdopen(os.open(tmp, flags, 0o666 if mode is None else mode), "wb") as handle:
            if isinstance(content, bytes):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    if os.name == "nt":
        return  # Windows cannot open a directory to fsync it; NTFS journals the rename itself
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
