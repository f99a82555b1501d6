"""How ingest is plugged into the server: its routes, and its part of the lifespan (the
replica's event log and its ``Ingestor``, which the lifespan puts in the ``ServerState``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from netmon.app.access import SecuredRoute, SecuredWebSocketRoute
from netmon.app.ingest.endpoint import agent_socket
from netmon.app.ingest.ingestor import Ingestor, stored_event_ids
from netmon.app.ingest.uploads import archive_upload
from netmon.app.settings import Settings
from netmon.storage.agents import AgentRegistry
from netmon.storage.dedup import DedupIndex
from netmon.storage.eventlog import EventLog


def ingest_routes() -> list[SecuredRoute | SecuredWebSocketRoute]:
    """The agent-facing routes (agents authenticate themselves: access="agent")."""
    return [
        SecuredWebSocketRoute("/ws/agent", agent_socket, access="agent"),
        SecuredRoute("/api/v1/ingest/archive", archive_upload, methods=["POST"], access="agent"),
    ]


def open_ingestor(settings: Settings, event_log: EventLog) -> Ingestor:
    """Build the replica's Ingestor and resolve claims a crash left pending."""
    data_dir = Path(settings.store.data_dir)
    registry = AgentRegistry(data_dir, settings.server.secret_key)
    dedup = DedupIndex(data_dir, settings.server.replica)
    ingestor = Ingestor(settings.ingest, event_log, registry, dedup, data_dir)
    ingestor.recover(lambda ids: stored_event_ids(data_dir, ids))
    return ingestor


@contextlib.asynccontextmanager
async def open_ingest(settings: Settings) -> AsyncIterator[Ingestor]:
    """Lifespan part: the replica's event log (``ingestor.event_log``) and its ingestor."""
    event_log = _open_event_log(settings)
    try:
        ingestor = await anyio.to_thread.run_sync(open_ingestor, settings, event_log)
        try:
            yield ingestor
        finally:
            ingestor.dedup.close()
    finally:
        await anyio.to_thread.run_sync(event_log.close)


def _open_event_log(settings: Settings) -> EventLog:
    return EventLog(
        Path(settings.store.data_dir),
        settings.server.replica,
        durability=settings.store.durability,
        segment_max_bytes=settings.store.segment_max_bytes,
        # The projector writes sealed segments' sidecar indexes, off the ingest path.
        index_on_seal=not settings.live.projector,
    )
