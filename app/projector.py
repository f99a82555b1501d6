"""The projector: a child process of each replica that folds the top lists and owns the snapshot.

Why a process: after storing a flow, folding it into the top lists is the most expensive thing a
replica does with it (a dict update per dimension, and a cut every few hundred new keys while a
scan brings new addresses), and ingest, dashboards and the live feed share one interpreter lock.
So the replica folds only what the live feed needs at the instant of a push (summary counters,
agents, recent critical events), and the projector runs the same ``LiveService`` loop over the
shared log with no dashboards, folds every projection, and saves the snapshot (``DATA/
projections/REPLICA.msgpack``, about once a second). The replica reloads the top lists from each
snapshot saved. The projector runs at a lower CPU priority: under overload the top lists lag and
catch up; ingest never waits for them.

The projector also writes the sidecar index of each segment its replica seals (the replica's
``EventLog`` runs with ``index_on_seal=False``): building the per-IP line lists was the next most
expensive thing ingest did per event, and a sealed segment's index is never needed at once.

The snapshot keeps its meaning: every projection's state at one log position. A replica that
starts loads it and catches up from there, as before. One projector per replica holds the
snapshot's lock; it exits when its replica is gone (a replica killed with -9 included), and the
replica restarts it if it dies.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import msgspec

from netmon.app.projections.runner import SNAPSHOT_FORMAT, ProjectionRunner, snapshot_path
from netmon.app.projections.top import TopState
from netmon.app.settings import Settings
from netmon.storage.segment_index import SealedSegmentIndexer
from netmon.storage.segments import EVENTS_DIR

log = logging.getLogger(__name__)

RESTART_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # after the projector died, capped
HEALTHY_RUN_S = 60.0  # a projector that ran this long starts the delays over
PARENT_CHECK_S = 0.5  # how often the projector looks whether its replica is still there
LOCK_RETRY_S = 0.1
INDEX_CHECK_S = 1.0  # how often the projector looks for segments sealed without a sidecar


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
        env = {**os.environ, "PYTHONPATH": _package_root()}
        failures = 0
        while True:
            started = time.monotonic()
            process = await anyio.open_process(
                self.command(), stdin=subprocess.DEVNULL, stdout=None, stderr=None, env=env
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


def _package_root() -> str:
    """The directory holding ``app/`` first on the child's path, whatever the replica's cwd."""
    root = str(Path(__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH", "")
    return root if not rest else f"{root}{os.pathsep}{rest}"


# --- the projector process ---------------------------------------------------------------------


@contextlib.contextmanager
def snapshot_lock(path: Path) -> Iterator[None]:
    """Hold ``REPLICA.lock`` next to the snapshot: one projector per replica writes it. A
    projector whose replica was killed exits within PARENT_CHECK_S, so waiting is short."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(LOCK_RETRY_S)  # polls the lock's real state; nothing to await
        yield
    finally:
        os.close(fd)


async def run_projector(args: argparse.Namespace) -> None:
    """Follow the log, fold every projection, save the snapshot; stop with the replica."""
    from netmon.app.follower import FileFeed
    from netmon.app.live import LiveHub, LiveRenderer
    from netmon.app.live_routes import LiveService

    parent = os.getppid()
    runner = ProjectionRunner(snapshot_path(args.data_dir, args.replica))
    await anyio.to_thread.run_sync(runner.load)
    service = LiveService(
        FileFeed(args.data_dir, poll_interval=args.poll_interval),
        runner,
        LiveHub(),  # no dashboards here: the replica pushes
        LiveRenderer(args.replica),
        save_interval_s=args.save_interval,
    )
    log.info("projector for %s: from %d events", args.replica, runner.state.events)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(service.run)
            group.start_soon(_index_sealed_segments, args.data_dir, args.replica)
            group.start_soon(_stop_when_told, parent, group.cancel_scope)
    finally:
        with anyio.CancelScope(shield=True):
            await service.save()


async def _index_sealed_segments(data_dir: Path, writer: str) -> None:
    """Write the sidecar of every segment the replica sealed without one, once a second."""
    indexer = SealedSegmentIndexer(Path(data_dir) / EVENTS_DIR, writer)
    while True:
        await anyio.to_thread.run_sync(indexer.index_new)
        await anyio.sleep(INDEX_CHECK_S)


async def _stop_when_told(parent: int, scope: anyio.CancelScope) -> None:
    """Cancel on SIGTERM, or once the replica is gone (the projector was reparented)."""
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with anyio.create_task_group() as group:

            async def orphaned() -> None:
                while os.getppid() == parent:  # noqa: ASYNC110 - no event tells a parent died
                    await anyio.sleep(PARENT_CHECK_S)
                log.warning("projector: replica (pid %d) is gone; stopping", parent)
                group.cancel_scope.cancel()

            group.start_soon(orphaned)
            async for _ in signals:
                break
            group.cancel_scope.cancel()
    scope.cancel()


def main(argv: list[str] | None = None) -> None:
    """``python -m netmon.app.projector``: started by ``netmon serve``, not by hand."""
    parser = argparse.ArgumentParser(prog="netmon-projector", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--replica", required=True)
    parser.add_argument("--poll-interval", type=float, default=0.02)
    parser.add_argument("--save-interval", type=float, default=1.0)
    parser.add_argument("--nice", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.nice:
        os.nice(args.nice)  # below the replica: ingest and dashboards come first
    # Ctrl-C in a terminal reaches the whole process group: the replica stops its projector
    # itself (SIGTERM), after its own shutdown, so the projector ignores SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with snapshot_lock(snapshot_path(args.data_dir, args.replica)):
        anyio.run(run_projector, args)


if __name__ == "__main__":
    main()
