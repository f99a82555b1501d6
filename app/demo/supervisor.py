"""A small process supervisor for ``netmon demo``: start children, watch them, stop them all.

Each child runs in its own session (so a Ctrl-C in the terminal reaches only the supervisor,
which then stops the children in reverse start order: agent before server, so the agent's last
batches can still be delivered). Should the supervisor itself be killed (SIGKILL, OOM), the
kernel sends each child SIGTERM (PR_SET_PDEATHSIG), so no part is left running. Each child's
output goes to ``DIR/logs/NAME.log``; when a child dies, the supervisor shows the tail of its
log and stops the others.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class ChildFailed(Exception):
    """A supervised process exited on its own; the message carries its log's tail."""


@dataclass
class Child:
    """One supervised process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    log_start: int = 0  # size of the log before this run: what follows is this run's output

    def output(self) -> str:
        """What the child has written to its log during this run."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.log_start)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 20) -> str:
        """The last lines of the child's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Children started with one environment and working directory, stopped together."""

    def __init__(self, workdir: Path, env: Mapping[str, str], stop_timeout_s: float = 15.0) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.stop_timeout_s = stop_timeout_s
        self.logs = workdir / "logs"
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str]) -> Child:
        """Start ``argv`` with its output appended to logs/NAME.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        log_start = log_path.stat().st_size if log_path.exists() else 0
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            list(argv),
            cwd=self.workdir,  # a .env in the caller's directory must not leak into the demo
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, process, log_path, log_file, log_start)
        self.children.append(child)
        log.info("started %s (pid %d)", name, process.pid)
        return child

    def check(self) -> None:
        """Raise ChildFailed if any child has exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise ChildFailed(
                    f"{child.name} exited with status {code}; last lines of {child.log_path}:\n"
                    f"{child.tail()}"
                )

    def stop_all(self) -> None:
        """SIGTERM every child (last started first); SIGKILL the ones still up at the timeout."""
        for child in reversed(self.children):
            self._stop(child)
        self.children.clear()

    def _stop(self, child: Child) -> None:
        process = child.process
        if process.poll() is None:
            _signal(process, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s did not stop within %.0f s: killed", child.name, self.stop_timeout_s
                )
                _signal(process, signal.SIGKILL)
                process.wait()
        child.log_file.close()

    def pids(self) -> list[int]:
        """Process ids of the running children."""
        return [child.process.pid for child in self.children if child.process.poll() is None]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the child's whole session (a child's own helpers stop with it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def wait_for(condition, timeout_s: float, supervisor: Supervisor, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until true; ChildFailed if a child dies, TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        supervisor.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")
        time.sleep(0.2)
