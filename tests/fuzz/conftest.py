"""A real Ingestor (registry, dedup index, event log on tmp files) and one enrolled agent's
session, shared by the frame, handshake and archive fuzz targets of a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography.fernet import Fernet, MultiFernet

from netmon.app.ingest.ingestor import Ingestor
from netmon.app.ingest.sessions import AgentSession
from netmon.app.settings import IngestSettings
from netmon.storage.agents import AgentRegistry
from netmon.storage.dedup import DedupIndex
from netmon.storage.eventlog import EventLog


class Rig(msgspec.Struct):
    ingestor: Ingestor
    session: AgentSession
    fernet: MultiFernet
    data_dir: Path
    key: str


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    registry = AgentRegistry(data_dir, Fernet.generate_key().decode())
    key = registry.add("fuzz-agent", "hq")
    record = registry.get("fuzz-agent")
    assert record is not None
    event_log = EventLog(data_dir, "fuzz")
    dedup = DedupIndex(data_dir, "fuzz")
    ingestor = Ingestor(IngestSettings(), event_log, registry, dedup)
    fernet = MultiFernet([Fernet(key)])
    yield Rig(ingestor, AgentSession(record, fernet, "boot1"), fernet, data_dir, key)
    dedup.close()
    event_log.close()
