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
replica restarts it if it dies (the replica's side: app/projector_link.py).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

from netmon.app.follower import FileFeed
from netmon.app.live import LiveHub
from netmon.app.live_service import LiveService
from netmon.app.projections.runner import ProjectionRunner, snapshot_path
from netmon.storage.segment_index import SealedSegmentIndexer
from netmon.storage.segments import EVENTS_DIR

log = logging.getLogger(__name__)

PARENT_CHECK_S = 0.5  # how often the projector looks whether its replica is still there
LOCK_RETRY_S = 0.1
INDEX_CHECK_S = 1.0  # how often the projector looks for segments sealed without a sidecar


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
    parent = os.getppid()
    runner = ProjectionRunner(snapshot_path(args.data_dir, args.replica))
    await anyio.to_thread.run_sync(runner.load)
    service = LiveService(
        FileFeed(args.data_dir, poll_interval=args.poll_interval),
        runner,
        LiveHub(),  # no dashboards here: the replica pushes
        None,  # nor a renderer
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
