"""The agent spool and the server's dedup index, on real files (no server needed)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from cryptography.fernet import Fernet, MultiFernet

from netmon.agent.offline_zip import seal_archive
from netmon.agent.spool import Spool, SpooledBatch
from netmon.agent.transport import full_jitter
from netmon.app.ingest.frames import DecodedBatch
from netmon.app.ingest.ingestor import Ingestor, stored_event_ids
from netmon.app.ingest.refusals import FrameRejected
from netmon.app.settings import IngestSettings
from netmon.storage.dedup import COMPACT_EVERY, DedupIndex
from netmon.storage.eventlog import EventLog
from tests.transport.conftest import make_flow


def batch(seq: int, size: int = 1000, cursor: int = -1, boot: str = "boot1") -> SpooledBatch:
    return SpooledBatch(boot, seq, 10, 1000.0 + seq, b"f" * size, cursor)


def test_spool_survives_a_restart_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**6)
    for seq in range(5):
        spool.put(batch(seq, cursor=seq * 10))
    spool.remove("boot1", 1)
    torn = [  # crashes mid-write: write_atomically's temp names, and the spool's earlier one
        tmp_path / "batches" / ".0000001000000004-boot1-0000000005-10.batch.41.42.tmp",
        tmp_path / ".cursor.41.42.tmp",
        tmp_path / "outbox" / ".a1-0-boot1-0.zip.41.42.tmp",
        tmp_path / "batches" / ".tmp-torn.batch",
    ]
    for path in torn:
        path.write_bytes(b"half")
    again = Spool(tmp_path, 10**6)
    assert [entry.seq for entry in again.entries()] == [0, 2, 3, 4]
    assert again.read(again.entries()[0]).frame == b"f" * 1000  # type: ignore[union-attr]
    assert again.cursor() == 40
    assert not any(path.exists() for path in torn)
    assert not again.outbox()
    written = [*(tmp_path / "batches").iterdir(), tmp_path / "cursor"]
    assert {path.stat().st_mode & 0o777 for path in written} == {0o600}  # events stay private


def test_cursor_outlives_the_acknowledged_batches(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**6)
    spool.put(batch(0, cursor=99))
    spool.remove("boot1", 0)
    assert Spool(tmp_path, 10**6).cursor() == 99


def test_cap_drops_the_oldest_and_remembers_the_gap(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 5_500)
    for seq in range(8):
        spool.put(batch(seq))
    assert [entry.seq for entry in spool.entries()] == [3, 4, 5, 6, 7]
    assert spool.total_bytes <= 5_500
    gaps = Spool(tmp_path, 5_500).gaps()  # persisted
    assert [(g.boot_id, g.first_seq, g.last_seq, g.batches, g.events) for g in gaps] == [
        ("boot1", 0, 2, 3, 30)
    ]
    spool.clear_gaps(gaps)
    assert Spool(tmp_path, 5_500).gaps() == []


def seal(spool: Spool) -> Path | None:
    fernet = MultiFernet([Fernet(Fernet.generate_key())])
    entries = spool.entries()
    return seal_archive(
        spool, entries, agent_id="a1", fernet=fernet, hour_start=0.0, hour_end=3600.0, now=1.0
    )


def test_cap_drops_a_sealed_archive_and_counts_its_batches_as_a_gap(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**6)
    for seq in range(3):
        spool.put(batch(seq))
    archive = seal(spool)
    assert archive is not None and spool.outbox() == [archive] and len(spool) == 0
    spool.max_bytes = archive.stat().st_size + 500  # the next batch does not fit beside it
    spool.put(batch(3))
    assert not archive.exists() and [entry.seq for entry in spool.entries()] == [3]
    assert [(g.boot_id, g.first_seq, g.last_seq, g.batches, g.events) for g in spool.gaps()] == [
        ("boot1", 0, 2, 3, 30)
    ]


def test_sealing_batches_acknowledged_meanwhile_leaves_no_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**6)
    spool.put(batch(0))
    entries = spool.entries()
    spool.remove("boot1", 0)
    assert (
        seal_archive(
            spool,
            entries,
            agent_id="a1",
            fernet=MultiFernet([Fernet(Fernet.generate_key())]),
            hour_start=0.0,
            hour_end=3600.0,
            now=1.0,
        )
        is None
    )
    assert list((tmp_path / "outbox").iterdir()) == []


def test_full_jitter_stays_within_the_capped_exponential() -> None:
    delays = [full_jitter(attempt, 0.5, 8.0) for attempt in range(12) for _ in range(50)]
    assert all(0.0 <= delay <= 8.0 for delay in delays)
    assert max(full_jitter(0, 0.5, 8.0) for _ in range(200)) <= 0.5
    assert max(delays) > 4.0  # the cap, not the base, bounds later attempts


def test_claims_are_exclusive_across_replicas(tmp_path: Path) -> None:
    one, two = DedupIndex(tmp_path, "r1"), DedupIndex(tmp_path, "r2")
    assert one.claim("a1", "b", 0, "id0", 1) == "new"
    assert two.claim("a1", "b", 0, "id0", 1) == "busy"  # r1 is appending it
    one.mark_done("a1", "b", 0)
    assert two.claim("a1", "b", 0, "id0", 1) == "duplicate"
    assert two.claim("a1", "b", 1, "id1", 1) == "new"
    two.release("a1", "b", 1)  # its append failed
    assert one.claim("a1", "b", 1, "id1", 1) == "new"
    one.close()
    two.close()


def test_compaction_keeps_answering_duplicates(tmp_path: Path) -> None:
    index = DedupIndex(tmp_path, "r1")
    for seq in range(COMPACT_EVERY + 10):
        assert index.claim("a1", "b", seq, f"id{seq}", 1) == "new"
        index.mark_done("a1", "b", seq)
    index.compact()
    rows = index._db.execute("SELECT count(*) FROM claims").fetchone()[0]
    assert rows == 0
    assert all(
        index.claim("a1", "b", seq, "", 1) == "duplicate" for seq in range(COMPACT_EVERY + 10)
    )
    assert index.claim("a1", "b", COMPACT_EVERY + 10, "", 1) == "new"
    index.close()


def test_pending_claims_are_resolved_against_the_log_after_a_crash(tmp_path: Path) -> None:
    """kill -9 between append and mark: the log decides whether the batch is stored."""
    stored, lost = [make_flow("a1", 1)], [make_flow("a1", 2)]
    index = DedupIndex(tmp_path, "r1")
    index.claim("a1", "b", 0, stored[-1].id, 1)
    index.claim("a1", "b", 1, lost[-1].id, 1)
    with EventLog(tmp_path, "r1") as log:
        log.append([msgspec.structs.replace(event, branch="b1") for event in stored])
    index.close()
    restarted = DedupIndex(tmp_path, "r1")
    ingestor = Ingestor(IngestSettings(), None, None, restarted)  # type: ignore[arg-type]
    assert ingestor.recover(lambda ids: stored_event_ids(tmp_path, ids)) == (1, 1)
    assert restarted.is_stored("a1", "b", 0)
    assert restarted.claim("a1", "b", 0, "", 1) == "duplicate"
    assert restarted.claim("a1", "b", 1, lost[-1].id, 1) == "new"  # sent again, stored once
    restarted.close()


def test_gaps_counted_while_reporting_stay_for_the_next_report(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 5_500)
    for seq in range(8):
        spool.put(batch(seq))
    reported = spool.gaps()  # 0..2 dropped
    spool.put(batch(8))  # the cap drops seq 3 before the report is spooled
    spool.clear_gaps(reported)
    left = spool.gaps()
    assert [(g.first_seq, g.last_seq, g.batches, g.events) for g in left] == [(3, 3, 1, 10)]


def test_an_oversized_batch_is_split_not_refused(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    from netmon.agent.transport import AgentTransport, TransportConfig
    from tests.transport.conftest import make_flow

    config = TransportConfig(
        key=Fernet.generate_key().decode(),
        spool_dir=str(tmp_path),
        batch_max_events=10_000,
        max_frame_bytes=20_000,
        compression="zlib",
        zlib_level=0,  # stored, not compressed: 400 flows must outgrow the frame limit
    )
    transport = AgentTransport("a1", "ws://127.0.0.1:9", config)
    for index in range(400):
        transport.emit(make_flow("a1", index), cursor=index)
    transport.flush()
    entries = transport.spool.entries()
    assert len(entries) > 1 and sum(entry.count for entry in entries) == 400
    assert all(entry.size < 21_000 for entry in entries)
    assert [entry.seq for entry in entries] == list(range(len(entries)))
    assert transport.resume_cursor() == 399


def test_heartbeats_carry_the_spool_state(tmp_path: Path) -> None:
    import zstandard
    from cryptography.fernet import Fernet

    from netmon.agent.transport import AgentTransport, TransportConfig
    from netmon.storage.contract import wire
    from netmon.storage.contract.events import AgentHeartbeat
    from tests.transport.conftest import make_flow

    key = Fernet.generate_key().decode()
    now = [5000.0]
    transport = AgentTransport(
        "a1",
        "ws://127.0.0.1:9",
        TransportConfig(key=key, spool_dir=str(tmp_path)),
        clock=lambda: now[0],
    )
    transport.emit(make_flow("a1", 1))
    transport.flush()
    now[0] += 42.0
    transport.emit(AgentHeartbeat(id="h", ts=now[0], branch="", agent_id="a1", boot_id="p"))
    transport.flush()
    newest = transport.spool.entries()[-1]
    frame = wire.batch_frame_decoder.decode(transport.spool.read(newest).frame)  # type: ignore[union-attr]
    inflated = zstandard.ZstdDecompressor().decompress(Fernet(key).decrypt(frame.token))
    body = wire.batch_body_decoder.decode(inflated)
    beat = body.events[0]
    assert isinstance(beat, AgentHeartbeat)
    assert (beat.spool_batches, beat.lag_s) == (1, 42.0) and beat.spool_bytes > 0


def _ingestor(tmp_path: Path, log: EventLog, writer: str) -> Ingestor:
    return Ingestor(IngestSettings(), log, None, DedupIndex(tmp_path, writer), tmp_path)  # type: ignore[arg-type]


def test_a_stopped_replicas_pending_claim_is_settled_from_the_log(tmp_path: Path) -> None:
    stored = [msgspec.structs.replace(make_flow("a1", 1), branch="b1")]
    lost = [msgspec.structs.replace(make_flow("a1", 2), branch="b1")]
    gone = DedupIndex(tmp_path, "r9")  # r9 claimed two batches, appended one, then died
    gone.claim("a1", "b", 0, stored[-1].id, 1)
    gone.claim("a1", "b", 1, lost[-1].id, 1)
    with EventLog(tmp_path, "r9") as r9_log:
        r9_log.append(stored)
        with EventLog(tmp_path, "r1") as log:
            ingestor = _ingestor(tmp_path, log, "r1")
            ingestor.busy_wait_s = 0.1
            with pytest.raises(FrameRejected, match="another connection"):  # r9 still runs
                ingestor.store("a1", DecodedBatch("b", 1, lost))
    with EventLog(tmp_path, "r1") as log:  # r9 is gone now
        ingestor = _ingestor(tmp_path, log, "r1")
        assert ingestor.store("a1", DecodedBatch("b", 0, stored)).duplicate
        assert ingestor.store("a1", DecodedBatch("b", 1, lost)).stored == 1
    from tests.transport.conftest import stored_events

    assert sorted(e.id for e in stored_events(tmp_path)) == sorted([stored[0].id, lost[0].id])


def test_a_batch_being_stored_by_another_connection_waits_and_is_a_duplicate(
    tmp_path: Path,
) -> None:
    import threading

    events = [msgspec.structs.replace(make_flow("a1", 1), branch="b1")]
    with EventLog(tmp_path, "r1") as log:
        ingestor = _ingestor(tmp_path, log, "r1")
        assert ingestor.dedup.claim("a1", "b", 0, events[-1].id, 1) == "new"  # connection A
        log.append(events)
        # Connection A marks its claim done while connection B's copy is waiting for it.
        finisher = threading.Timer(0.2, ingestor.dedup.mark_done, ("a1", "b", 0))
        finisher.start()
        try:
            assert ingestor.store("a1", DecodedBatch("b", 0, events)).duplicate
        finally:
            finisher.join()
