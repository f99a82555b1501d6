"""The replica's ``Ingestor``: verifies agent batches and stores each exactly once.

Storing a verified batch: dedup claim -> ``EventLog.append`` (durable) -> claim marked done ->
Ack. A claim another connection holds is waited for a little (``busy``); one left pending by a
replica that is gone for good is settled from the log, as that replica's restart would. The
counters here are read by /metrics at scrape time (app/metrics.py).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from netmon.app.ingest.frames import DecodedBatch, decode_frame
from netmon.app.ingest.refusals import FrameRejected, StoreFailed
from netmon.app.ingest.sessions import AgentSession, authenticate
from netmon.app.settings import IngestSettings
from netmon.storage.agents import AgentRegistry
from netmon.storage.contract import wire
from netmon.storage.dedup import ClaimOutcome, DedupIndex, writer_alive
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader

log = logging.getLogger("netmon.ingest")

BUSY_WAIT_S = 5.0  # how long a batch waits for another connection's append of it


class Ingestor:
    """Verifies, deduplicates and stores agent batches for one replica (thread-safe)."""

    def __init__(
        self,
        settings: IngestSettings,
        event_log: EventLog,
        registry: AgentRegistry,
        dedup: DedupIndex,
        data_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir  # to settle claims of stopped replicas from the log
        self.busy_wait_s = BUSY_WAIT_S
        self.event_log = event_log
        self.registry = registry
        self.dedup = dedup
        # Plain counters read by /metrics at scrape time (app/metrics.py); never reset.
        self.counts: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()  # by refusal code
        self._count_lock = threading.Lock()

    def count(self, name: str, amount: int = 1, rejected: bool = False) -> None:
        """Add to a metrics counter (thread-safe: frames are handled in worker threads)."""
        with self._count_lock:
            (self.rejected if rejected else self.counts)[name] += amount

    def authenticate(self, hello: wire.Hello, nonce: bytes) -> AgentSession:
        """Check a Hello against this connection's nonce; raise FrameRejected (code = reason)."""
        return authenticate(self.registry, self.settings, hello, nonce)

    def decode_frame(self, session: AgentSession, raw: bytes) -> DecodedBatch:
        """Verify one frame completely (no side effects but a counter); raise FrameRejected."""
        self.count("bytes", len(raw))
        return decode_frame(self.settings, session, raw)

    def process(self, session: AgentSession, raw: bytes) -> wire.Ack:
        """Decode and store one frame (blocking)."""
        return self.store(session.record.agent_id, self.decode_frame(session, raw))

    def store(self, agent_id: str, batch: DecodedBatch) -> wire.Ack:
        """Append a verified batch exactly once; blocking (call from a worker thread)."""
        last_id = batch.events[-1].id if batch.events else ""
        outcome = self.dedup.claim(agent_id, batch.boot_id, batch.seq, last_id, len(batch.events))
        if outcome == "busy":
            outcome = self._settle_busy(agent_id, batch, last_id)
        if outcome == "duplicate":
            self.count("duplicates")
            return wire.Ack(boot_id=batch.boot_id, seq=batch.seq, duplicate=True)
        if outcome == "busy":
            raise FrameRejected(
                "busy",
                "another connection is storing this batch; retry",
                at=(batch.boot_id, batch.seq),
                retry=True,
            )
        self._append(agent_id, batch)
        self.dedup.mark_done(agent_id, batch.boot_id, batch.seq)
        self.count("events", len(batch.events))
        self.count("batches")
        return wire.Ack(boot_id=batch.boot_id, seq=batch.seq, stored=len(batch.events))

    def _append(self, agent_id: str, batch: DecodedBatch) -> None:
        """Append a claimed batch; on failure give the claim back and raise StoreFailed."""
        try:
            self.event_log.append(batch.events)
        except Exception as error:
            self.dedup.release(agent_id, batch.boot_id, batch.seq)
            log.error(
                "ingest: append of %s/%s/%d failed: %s", agent_id, batch.boot_id, batch.seq, error
            )
            raise StoreFailed(
                "store_failed",
                "the event store refused the batch; retry later",
                at=(batch.boot_id, batch.seq),
                retry=True,
            ) from None

    def _settle_busy(self, agent_id: str, batch: DecodedBatch, last_id: str) -> ClaimOutcome:
        """Another connection (an agent that reconnected, or another replica) is appending this
        batch: wait a little for that to finish rather than make the agent reconnect."""
        deadline = time.monotonic() + self.busy_wait_s
        while True:
            outcome = self._claim_from_dead_writer(agent_id, batch)
            if outcome != "busy" or time.monotonic() > deadline:
                return outcome
            time.sleep(0.02)  # polls a real condition (the claim's state) with a deadline
            if self.dedup.owner(agent_id, batch.boot_id, batch.seq) is None:
                outcome = self.dedup.claim(
                    agent_id, batch.boot_id, batch.seq, last_id, len(batch.events)
                )
                if outcome != "busy":
                    return outcome

    def _claim_from_dead_writer(self, agent_id: str, batch: DecodedBatch) -> ClaimOutcome:
        """A claim pending under a replica that is gone for good: settle it from the log, as
        that replica's restart would, instead of refusing the batch forever."""
        owner = self.dedup.owner(agent_id, batch.boot_id, batch.seq)
        if self.data_dir is None or owner is None or owner[0] == self.dedup.writer:
            return "busy"
        writer, last_id = owner
        if writer_alive(self.data_dir, writer):
            return "busy"
        if last_id and stored_event_ids(self.data_dir, {last_id}):
            self.dedup.mark_done(agent_id, batch.boot_id, batch.seq)
            return "duplicate"
        if self.dedup.take_over(agent_id, batch.boot_id, batch.seq, writer):
            log.warning(
                "ingest: took over batch %s/%s/%d from stopped replica %r",
                agent_id,
                batch.boot_id,
                batch.seq,
                writer,
            )
            return "new"
        return "busy"

    def recover(self, stored_ids: Callable[[set[str]], set[str]]) -> tuple[int, int]:
        """Resolve this writer's pending claims against the log; (marked done, released)."""
        pending = self.dedup.pending()
        if not pending:
            return 0, 0
        found = stored_ids({claim.last_event_id for claim in pending if claim.last_event_id})
        done = released = 0
        for claim in pending:
            if claim.last_event_id and claim.last_event_id in found:
                self.dedup.mark_done(claim.agent_id, claim.boot_id, claim.seq)
                done += 1
            else:
                self.dedup.release(claim.agent_id, claim.boot_id, claim.seq)
                released += 1
        log.warning(
            "ingest: resolved %d pending claims from an earlier run: %d stored, %d not",
            len(pending),
            done,
            released,
        )
        return done, released


def stored_event_ids(data_dir: Path, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` event ids are in the log (a scan; used only after a crash)."""
    found: set[str] = set()
    needles = [b'"' + event_id.encode() + b'"' for event_id in wanted]
    reader = EventLogReader(data_dir)
    for event in reader.scan(None, None, lambda event: event.id in wanted, needles=needles):
        found.add(event.id)
        if len(found) == len(wanted):
            break
    return found
