"""Fuzz the offline-archive importer (app/ingest/uploads.py ``open_archive``): a real hourly ZIP
made by the agent's own code (agent/offline_zip.py), then damaged at random — bytes flipped,
cut short, spliced — and arbitrary bytes. The importer answers with the batches or an
``ArchiveRejected`` (a coded 4xx and a log line), never another exception."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmon.agent import offline_zip
from netmon.agent.transport import AgentTransport, TransportConfig
from netmon.app.ingest.uploads import ArchiveRejected, open_archive
from tests.fuzz.budget import fuzz
from tests.fuzz.conftest import Rig
from tests.fuzz.strategies import flow_dict

AGENT = "fuzz-agent"


@pytest.fixture(scope="module")
def archive_bytes(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A genuine three-batch archive, sealed the way an offline agent seals one."""
    spool = tmp_path_factory.mktemp("spool")
    transport = AgentTransport(
        AGENT, "ws://127.0.0.1:9", TransportConfig(key=rig.key, spool_dir=str(spool))
    )
    import msgspec

    from netmon.storage.contract.events import FlowObserved

    for _ in range(3):
        flow = flow_dict(AGENT)
        flow.pop("type")
        transport.emit(msgspec.convert(flow, FlowObserved))
        transport.flush()
    now = time.time()
    path = offline_zip.seal_archive(
        transport.spool,
        transport.spool.entries(),
        agent_id=AGENT,
        fernet=rig.fernet,
        hour_start=now - 3600,
        hour_end=now,
        now=now,
    )
    assert path is not None
    return Path(path).read_bytes()


def test_the_genuine_archive_imports(rig: Rig, archive_bytes: bytes) -> None:
    batches = open_archive(rig.ingestor, rig.session, io.BytesIO(archive_bytes), len(archive_bytes))
    assert [len(batch.events) for batch in batches] == [1, 1, 1]


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "splice", "zero"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        elif action == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at : at + 4] = b"\xff\xff\xff\xff"
        if not data:
            break
    return bytes(data)


def import_or_reject(rig: Rig, data: bytes) -> None:
    try:
        open_archive(rig.ingestor, rig.session, io.BytesIO(data), len(data))
    except ArchiveRejected as error:
        assert error.code and 400 <= error.status < 500
    except zipfile.LargeZipFile as error:  # pragma: no cover - would be a finding
        raise AssertionError(error) from None


@fuzz
@given(st.data())
def test_a_damaged_archive_imports_or_is_rejected(
    rig: Rig, archive_bytes: bytes, data: st.DataObject
) -> None:
    import_or_reject(rig, data.draw(damaged(archive_bytes)))


@fuzz
@given(st.binary(max_size=600) | st.binary(max_size=40).map(lambda b: b"PK\x03\x04" + b))
def test_arbitrary_bytes_are_rejected(rig: Rig, raw: bytes) -> None:
    import_or_reject(rig, raw)


def test_an_unreadable_zip_version_is_rejected(rig: Rig, archive_bytes: bytes) -> None:
    # Finding: a central directory entry claiming zip version 25.5 made zipfile raise
    # NotImplementedError, which escaped the importer (a 500 instead of bad_archive).
    at = archive_bytes.index(b"PK\x01\x02") + 4
    data = archive_bytes[:at] + b"\xff\xff\xff\xff" + archive_bytes[at + 4 :]
    with pytest.raises(ArchiveRejected) as rejected:
        open_archive(rig.ingestor, rig.session, io.BytesIO(data), len(data))
    assert rejected.value.code == "bad_archive" and rejected.value.status == 400


def damage(archive: bytes, at: int, replacement: bytes) -> bytes:
    return archive[:at] + replacement + archive[at + len(replacement) :]


def test_a_central_directory_pointing_before_the_file_is_rejected(
    rig: Rig, archive_bytes: bytes
) -> None:
    # Finding: a central directory offset 256 bytes too large gave an entry the header offset
    # -256, and the overlap check's seek raised ValueError (a 500).
    end = archive_bytes.rindex(b"PK\x05\x06")
    offset = int.from_bytes(archive_bytes[end + 16 : end + 20], "little")
    data = damage(archive_bytes, end + 16, (offset + 256).to_bytes(4, "little"))
    with pytest.raises(ArchiveRejected) as rejected:
        open_archive(rig.ingestor, rig.session, io.BytesIO(data), len(data))
    assert rejected.value.status == 400


def test_a_local_name_flagged_utf8_that_is_not_is_rejected(rig: Rig, archive_bytes: bytes) -> None:
    # Finding: zipfile decodes a local header name flagged UTF-8 (bit 11) and raised
    # UnicodeDecodeError out of the importer (a 500).
    flags = int.from_bytes(archive_bytes[6:8], "little") | 0x800
    data = damage(damage(archive_bytes, 6, flags.to_bytes(2, "little")), 30, b"\xff")
    with pytest.raises(ArchiveRejected) as rejected:
        open_archive(rig.ingestor, rig.session, io.BytesIO(data), len(data))
    assert rejected.value.status == 400
