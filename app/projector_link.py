"""The replica's side of the projector (app/projector.py): start it, restart it when it dies, and
mirror the top lists of every snapshot it saves.

The replica runs the projector as a child process (``python -m netmon.app.projector``) and reads
back only the part of each saved snapshot it does not fold itself: the top lists.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time

import anyio
import anyio.abc
import msgspec

from netmon.app.projections.runner import SNAPSHOT_FORMAT, ProjectionRunner
from netmon.app.projections.top import TopState
from netmon.app.settings import Settings

log = logging.getLogger("netmon.app.projector")

RESTART_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # after the projector died, capped
HEALTHY_RUN_S = 60.0  # a projector that ran this long starts the delays over


class TopSnapshot(msgspec.Struct):
    """The part of the snapshot the replica reloads (msgspec skips the other fields)."""

    format: int = SNAPSHOT_FORMAT
    offsets: dict[str, int] = {}
    events: int = 0
    top: TopState = msgspec.field(default_factory=TopState)


_top_decoder = msgspec.msgpack.Decoder(TopSnapshot)


class ProjectorLink:
    """The replica's side: runs the projector, restarts it when it dies, mirrors the top lists
    of every snapshot it saves into ``runner.state.top``."""

    def __init__(self, settings: Settings, runner: ProjectionRunner) -> None:
        self.settings = settings
        self.runner = runner
        self.path = runner.path
        self.events = runner.state.events  # events the mirrored top lists reflect
        self.offsets = dict(runner.state.offsets)
        self.restarts = 0
        self._seen: tuple[int, int] | None = None
        self._stopping = False

    def command(self) -> list[str]:
        """How the projector is started: this interpreter, this package."""
        live = self.settings.live
        return [
            sys.executable, "-m", "netmon.app.projector",
            "--data-dir", str(self.settings.data_dir),
            "--replica", self.settings.server.replica,
            "--poll-interval", str(live.poll_interval_s),
            "--save-interval", str(live.save_interval_s),
            "--nice", str(live.projector_nice),
        ]  # fmt: skip

    async def supervise(self) -> None:
        """Run the projector until cancelled; after it dies, log and start it again."""
        failures = 0
        while True:
            started = time.monotonic()
            process = await anyio.open_process(
                self.command(), stdin=subprocess.DEVNULL, stdout=None, stderr=None
            )  # its log lines go where the replica's go
            try:
                code = await process.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(process)
            if time.monotonic() - started > HEALTHY_RUN_S:
                failures = 0
            delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
            self.restarts += 1
            failures += 1
            # Exit 0 is a SIGTERM the replica did not send (e.g. systemd without KillMode=mixed).
            report = log.warning if code == 0 else log.error
            report("projector exited with %s; starting it again in %.1f s", code, delay)
            await anyio.sleep(delay)

    async def mirror(self, interval_s: float = 0.25) -> None:
        """Reload the top lists whenever the projector saved a new snapshot."""
        while True:
            await self.reload()
            await anyio.sleep(interval_s)

    async def reload(self) -> bool:
        """Take the top lists from the snapshot file if it changed; True when it did."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return False
        try:
            data = await anyio.to_thread.run_sync(self.path.read_bytes)
            snapshot = _top_decoder.decode(data)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
            # Replaced atomically, so this is a real fault: the projector sets it aside and
            # rebuilds on its next start; meanwhile the top lists stay as they were.
            log.error("projector snapshot %s unreadable, top lists kept: %s", self.path, error)
            self._seen = seen
            return False
        self._seen = seen
        self.runner.state.top = snapshot.top
        self.events, self.offsets = snapshot.events, snapshot.offsets
        return True


async def _stop(process: anyio.abc.Process) -> None:
    """SIGTERM (the projector saves once more), SIGKILL after 10 s."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    with anyio.move_on_after(10):
        await process.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
