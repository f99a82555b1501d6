"""Server side of the agent transport: the ``/ws/agent`` WebSocket and the batch pipeline shared
with the archive upload (app/zip_import.py). Protocol and guarantees: docs/transport.md.

A batch goes: size check -> Fernet decrypt with the agent's keys -> bounded inflate (zstd when the
decrypted bytes start with the zstd frame magic, else zlib, as agents before zstd sent) ->
msgspec validation (agent event types only) -> branch stamped from the registry -> dedup claim
-> ``EventLog.append`` (durable) -> claim marked done -> Ack. Any refusal happens before the
claim, so a bad batch never touches the store; each refusal is an ``Error`` to that agent and a
log line. A frame the agent's keys do not authenticate closes that connection (4410).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from operator import attrgetter
from pathlib import Path

import anyio
import anyio.abc
import msgspec
import zstandard
from cryptography.fernet import InvalidToken, MultiFernet
from starlette.applications import Starlette
from starlette.websockets import WebSocket, WebSocketDisconnect

from netmon.app.access import SecuredRoute, SecuredWebSocketRoute
from netmon.app.settings import IngestSettings, Settings
from netmon.storage.agents import AgentRecord, AgentRegistry
from netmon.storage.contract import wire
from netmon.storage.contract.events import AGENT_EVENT_TYPES, Event
from netmon.storage.dedup import ClaimOutcome, DedupIndex, writer_alive
from netmon.storage.eventlog import EventLog
from netmon.storage.segments import MAX_TS

log = logging.getLogger("netmon.ingest")

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # starts every zstd frame; a zlib stream starts 0x78
BUSY_WAIT_S = 5.0  # how long a batch waits for another connection's append of it
AGENT_TYPE_NAMES = ", ".join(kind.__name__ for kind in AGENT_EVENT_TYPES)


class FrameRejected(Exception):
    """An authentic-or-not-yet-known batch that cannot be stored; becomes a wire ``Error``."""

    def __init__(
        self, code: str, message: str, *, at: tuple[str, int] = ("", -1), retry: bool = False
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.retry = code, message, retry
        self.boot_id, self.seq = at  # the batch refused, when it is known

    def to_wire(self) -> wire.Error:
        """The message sent to the agent."""
        return wire.Error(
            code=self.code,
            message=self.message,
            boot_id=self.boot_id,
            seq=self.seq,
            retry=self.retry,
        )


class ForgedFrame(FrameRejected):
    """The token does not verify with this agent's keys (forged, tampered or another key)."""


class StoreFailed(FrameRejected):
    """The event store refused the append; nothing was acknowledged."""


class DecodedBatch(msgspec.Struct, frozen=True):
    """A verified batch, stamped and ready to append."""

    boot_id: str
    seq: int
    events: list[Event]


class AgentSession(msgspec.Struct, frozen=True):
    """An authenticated agent: its record and keys."""

    record: AgentRecord
    fernet: MultiFernet
    boot_id: str


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

    # --- decoding (no side effects) -----------------------------------------------------------

    def decode_frame(self, session: AgentSession, raw: bytes) -> DecodedBatch:
        """Verify one frame completely; raise FrameRejected / ForgedFrame."""
        agent_id = session.record.agent_id
        self.count("bytes", len(raw))
        try:
            frame = wire.batch_frame_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise FrameRejected("malformed_frame", f"not a batch frame: {error}") from None
        where = (frame.boot_id, frame.seq)
        if len(raw) > self.settings.max_frame_bytes:
            raise FrameRejected(
                "frame_too_large",
                f"frame of {len(raw)} bytes is over the limit of {self.settings.max_frame_bytes}; "
                "send smaller batches",
                at=where,
            )
        try:
            compressed = session.fernet.decrypt(frame.token)
        except InvalidToken:
            raise ForgedFrame(
                "forged_frame",
                "the batch token does not verify with this agent's "
                "keys (tampered, forged or encrypted with another key)",
                at=where,
            ) from None
        body_bytes = self._inflate(compressed, where)
        try:
            body = wire.batch_body_decoder.decode(body_bytes)
        except msgspec.ValidationError as error:
            text = str(error)
            if text.endswith(".type`"):
                raise FrameRejected(
                    "event_type_refused",
                    f"agents may send only {AGENT_TYPE_NAMES}: {text}",
                    at=where,
                ) from None
            raise FrameRejected(
                "invalid_batch", f"batch failed validation: {text}", at=where
            ) from None
        except msgspec.DecodeError as error:
            raise FrameRejected(
                "malformed_batch", f"batch is not valid msgpack: {error}", at=where
            ) from None
        if (body.agent_id, body.boot_id, body.seq) != (agent_id, frame.boot_id, frame.seq):
            raise FrameRejected(
                "batch_mismatch",
                "the batch number inside the token does not match the frame",
                at=where,
            )
        if len(body.events) != frame.count:
            raise FrameRejected(
                "batch_mismatch",
                f"frame says {frame.count} events, batch has {len(body.events)}",
                at=where,
            )
        return DecodedBatch(
            frame.boot_id, frame.seq, self._stamp(session.record, body.events, where)
        )

    def _inflate(self, compressed: bytes, where: tuple[str, int]) -> bytes:
        # The codec is read from the authenticated bytes, not from a wire field: a field outside
        # the token could be altered, and old spools and archives carry none.
        if compressed.startswith(ZSTD_MAGIC):
            return self._inflate_zstd(compressed, where)
        return self._inflate_zlib(compressed, where)

    def _inflate_zstd(self, compressed: bytes, where: tuple[str, int]) -> bytes:
        limit = self.settings.max_batch_bytes
        try:
            declared = zstandard.frame_content_size(compressed)  # -1: not in the header
        except zstandard.ZstdError as error:
            raise FrameRejected(
                "malformed_batch", f"batch is not zstd data: {error}", at=where
            ) from None
        if declared > limit:
            raise self._too_large(where, f" (its zstd header says {declared})")
        # A header that lies is caught by zstd itself (output past the declared size is an
        # error), so nothing past min(declared, limit) + 1 bytes is ever produced or allocated;
        # the window bound refuses frames that would make the decoder allocate more.
        decompressor = zstandard.ZstdDecompressor(max_window_size=_window_bound(limit))
        try:
            with decompressor.stream_reader(compressed, read_across_frames=False) as reader:
                data = reader.read((limit if declared < 0 else declared) + 1)
        except zstandard.ZstdError as error:
            if "too much memory" in str(error):
                raise self._too_large(where, " (its zstd window is larger)") from None
            raise FrameRejected(
                "malformed_batch", f"batch is not zstd data: {error}", at=where
            ) from None
        if len(data) > limit:
            raise self._too_large(where)
        if declared >= 0 and len(data) != declared:  # a truncated frame reads short, silently
            raise FrameRejected(
                "malformed_batch",
                f"batch is not zstd data: frame ends after {len(data)} of its {declared} bytes",
                at=where,
            )
        return data

    def _too_large(self, where: tuple[str, int], why: str = "") -> FrameRejected:
        return FrameRejected(
            "batch_too_large",
            f"batch inflates to more than {self.settings.max_batch_bytes} bytes{why}",
            at=where,
        )

    def _inflate_zlib(self, compressed: bytes, where: tuple[str, int]) -> bytes:
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(compressed, self.settings.max_batch_bytes)
        except zlib.error as error:
            raise FrameRejected(
                "malformed_batch", f"batch is not zlib data: {error}", at=where
            ) from None
        if inflater.unconsumed_tail:
            raise self._too_large(where)
        return data

    def _stamp(
        self, record: AgentRecord, events: Sequence[Event], where: tuple[str, int]
    ) -> list[Event]:
        if _all_stamped(record, events):
            return list(events)  # the usual batch, checked in C: nothing to refuse or re-stamp
        stamped: list[Event] = []
        replace = msgspec.structs.replace
        for index, event in enumerate(events):
            if event.agent_id != record.agent_id:  # type: ignore[attr-defined]
                raise FrameRejected(
                    "agent_id_mismatch",
                    f"event {index} claims agent {event.agent_id!r}; this connection is "  # type: ignore[attr-defined]
                    f"{record.agent_id!r}",
                    at=where,
                )
            if not 0.0 <= event.ts < MAX_TS:  # NaN too; the store would refuse it on every retry
                raise FrameRejected(
                    "invalid_batch",
                    f"event {index} has ts {event.ts!r}, not a Unix time in years 1970-9999",
                    at=where,
                )
            # The registry decides the branch: an agent cannot write into another branch.
            stamped.append(
                event if event.branch == record.branch else replace(event, branch=record.branch)
            )
        return stamped

    # --- storing ------------------------------------------------------------------------------

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
        self.dedup.mark_done(agent_id, batch.boot_id, batch.seq)
        self.count("events", len(batch.events))
        self.count("batches")
        return wire.Ack(boot_id=batch.boot_id, seq=batch.seq, stored=len(batch.events))

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

    def process(self, session: AgentSession, raw: bytes) -> wire.Ack:
        """Decode and store one frame (blocking)."""
        return self.store(session.record.agent_id, self.decode_frame(session, raw))

    # --- handshake ----------------------------------------------------------------------------

    def authenticate(self, hello: wire.Hello, nonce: bytes) -> AgentSession:
        """Check a Hello against this connection's nonce; raise FrameRejected (code = reason)."""
        record = self.registry.get(hello.agent_id)
        if record is None:
            raise FrameRejected("auth_failed", f"unknown agent {hello.agent_id!r}")
        fernet = self.registry.fernet(record.agent_id)
        try:
            proof_bytes = fernet.decrypt(hello.proof, ttl=int(self.settings.handshake_ttl_s))
            proof = wire.hello_proof_decoder.decode(proof_bytes)
        except InvalidToken:
            raise FrameRejected(
                "auth_failed",
                "handshake proof does not verify with this "
                "agent's keys, or is older than the handshake TTL",
            ) from None
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise FrameRejected("auth_failed", "handshake proof is malformed") from None
        if proof.nonce != nonce:
            raise FrameRejected(
                "auth_failed",
                "handshake proof was made for another connection (replayed handshake)",
            )
        if (proof.agent_id, proof.boot_id) != (hello.agent_id, hello.boot_id):
            raise FrameRejected("auth_failed", "handshake proof names another agent or boot")
        if not record.enabled:
            raise FrameRejected("agent_disabled", f"agent {record.agent_id!r} is disabled")
        return AgentSession(record, fernet, hello.boot_id)

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


_AGENT_ID, _BRANCH, _TS = attrgetter("agent_id"), attrgetter("branch"), attrgetter("ts")


def _all_stamped(record: AgentRecord, events: Sequence[Event]) -> bool:
    """Every event claims this agent and its branch and has a storable ts (no NaN: a sum
    with one is NaN, which ``isfinite`` refuses); else ``_stamp`` looks at each event."""
    if not events:
        return True
    stamps = list(map(_TS, events))
    return (
        set(map(_AGENT_ID, events)) == {record.agent_id}
        and set(map(_BRANCH, events)) == {record.branch}
        and math.isfinite(sum(stamps))
        and min(stamps) >= 0.0
        and max(stamps) < MAX_TS
    )


def _window_bound(limit: int) -> int:
    """zstd's largest decoding window for a batch limit (zstd accepts 1 KiB to 2 GiB)."""
    return max(1 << 10, min(limit, 1 << 31))


# --- the WebSocket endpoint --------------------------------------------------------------------


async def agent_socket(websocket: WebSocket) -> None:
    """``/ws/agent``: challenge, authenticate, then store and acknowledge frames."""
    ingestor: Ingestor = websocket.app.state.ingestor
    peer = websocket.client.host if websocket.client else "?"
    await websocket.accept()
    session = await _handshake(websocket, ingestor, peer)
    if session is None:
        return
    agent_id = session.record.agent_id
    await websocket.send_bytes(
        wire.encode(
            wire.Welcome(
                agent_id=agent_id,
                branch=session.record.branch,
                max_frame_bytes=ingestor.settings.max_frame_bytes,
            )
        )
    )
    log.info("ingest: agent %r (%s) connected, boot %s", agent_id, peer, session.boot_id)
    await _FrameLoop(websocket, ingestor, session, peer).run()


class _FrameLoop:
    """Two stages so decoding frame N+1 overlaps the durable append of frame N: the receiver
    verifies frames (worker thread) and queues them; the storer appends and acknowledges."""

    QUEUE = 2  # verified batches waiting for the store (bounded: backpressure to the agent)

    def __init__(
        self, websocket: WebSocket, ingestor: Ingestor, session: AgentSession, peer: str
    ) -> None:
        self.websocket, self.ingestor, self.session, self.peer = websocket, ingestor, session, peer
        self.agent_id = session.record.agent_id
        self.send_lock = anyio.Lock()
        self.close_code: int | None = None
        self.close_reason = ""

    async def run(self) -> None:
        sender, receiver = anyio.create_memory_object_stream[DecodedBatch](self.QUEUE)
        async with anyio.create_task_group() as group:
            group.start_soon(self._store, receiver, group.cancel_scope)
            async with sender:
                await self._receive(sender)
        if self.close_code is not None:
            with contextlib.suppress(Exception):  # the agent may be gone already
                await self.websocket.close(self.close_code, self.close_reason)

    async def _receive(self, queue: anyio.abc.ObjectSendStream[DecodedBatch]) -> None:
        while True:
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("bytes")
            try:
                if raw is None:
                    raise FrameRejected("malformed_frame", "frames must be binary")
                batch = await anyio.to_thread.run_sync(
                    self.ingestor.decode_frame, self.session, raw
                )
            except ForgedFrame as error:
                await self._refuse(error)
                self.close_code, self.close_reason = wire.CLOSE_FORGED_FRAME, "forged frame"
                return
            except FrameRejected as error:
                await self._refuse(error)
                continue
            await queue.send(batch)

    async def _store(
        self, queue: anyio.abc.ObjectReceiveStream[DecodedBatch], scope: anyio.CancelScope
    ) -> None:
        async with queue:
            async for batch in queue:
                try:
                    ack = await anyio.to_thread.run_sync(self.ingestor.store, self.agent_id, batch)
                except StoreFailed as error:
                    await self._refuse(error)
                    self.close_code, self.close_reason = wire.CLOSE_STORE_FAILED, "store failed"
                    scope.cancel()
                    return
                except FrameRejected as error:  # busy: another connection is storing it
                    await self._refuse(error)
                    continue
                await self._send(wire.encode(ack))

    async def _send(self, data: bytes) -> None:
        async with self.send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.websocket.send_bytes(data)

    async def _refuse(self, error: FrameRejected) -> None:
        self.ingestor.count(error.code, rejected=True)
        log.warning(
            "ingest: refused %s from agent %r (%s) batch %s/%d: %s",
            error.code,
            self.agent_id,
            self.peer,
            error.boot_id,
            error.seq,
            error.message,
        )
        await self._send(wire.encode(error.to_wire()))


async def _handshake(websocket: WebSocket, ingestor: Ingestor, peer: str) -> AgentSession | None:
    nonce = os.urandom(32)
    await websocket.send_bytes(
        wire.encode(
            wire.Challenge(
                nonce=nonce,
                server_time=time.time(),
                replica=websocket.app.state.settings.server.replica,
            )
        )
    )
    try:
        with anyio.fail_after(ingestor.settings.handshake_timeout_s):
            message = await websocket.receive()
    except TimeoutError:
        log.warning(
            "ingest: %s sent no hello within %.0f s", peer, ingestor.settings.handshake_timeout_s
        )
        await websocket.close(wire.CLOSE_HANDSHAKE_TIMEOUT, "handshake timeout")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    try:
        hello = wire.agent_message_decoder.decode(message.get("bytes") or b"")
        if not isinstance(hello, wire.Hello):
            raise msgspec.ValidationError("expected a hello message")
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        await _refuse(
            websocket, FrameRejected("protocol_error", f"expected a hello: {error}"), "?", peer
        )
        await websocket.close(wire.CLOSE_PROTOCOL_ERROR, "protocol error")
        return None
    try:
        return await anyio.to_thread.run_sync(ingestor.authenticate, hello, nonce)
    except FrameRejected as error:
        ingestor.count(error.code, rejected=True)
        await _refuse(websocket, error, hello.agent_id, peer)
        code = (
            wire.CLOSE_AGENT_DISABLED if error.code == "agent_disabled" else wire.CLOSE_AUTH_FAILED
        )
        await websocket.close(code, error.code)
        return None


async def _refuse(websocket: WebSocket, error: FrameRejected, agent_id: str, peer: str) -> None:
    log.warning(
        "ingest: refused %s from agent %r (%s) batch %s/%d: %s",
        error.code,
        agent_id,
        peer,
        error.boot_id,
        error.seq,
        error.message,
    )
    await websocket.send_bytes(wire.encode(error.to_wire()))


def ingest_routes() -> list[SecuredRoute | SecuredWebSocketRoute]:
    """The agent-facing routes (agents authenticate themselves: access="agent")."""
    from netmon.app.zip_import import archive_upload

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


def stored_event_ids(data_dir: Path, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` event ids are in the log (a scan; used only after a crash)."""
    from netmon.storage.log_reader import EventLogReader

    found: set[str] = set()
    needles = [b'"' + event_id.encode() + b'"' for event_id in wanted]
    reader = EventLogReader(data_dir)
    for event in reader.scan(None, None, lambda event: event.id in wanted, needles=needles):
        found.add(event.id)
        if len(found) == len(wanted):
            break
    return found


@contextlib.asynccontextmanager
async def open_ingest(app: Starlette, settings: Settings) -> AsyncIterator[Ingestor]:
    """Lifespan part: the replica's event log (shared via ``app.state.event_log``) and ingestor."""
    event_log = getattr(app.state, "event_log", None)
    owned = None
    if event_log is None:
        owned = event_log = EventLog(
            Path(settings.store.data_dir),
            settings.server.replica,
            durability=settings.store.durability,
            segment_max_bytes=settings.store.segment_max_bytes,
            # The projector writes sealed segments' sidecar indexes, off the ingest path.
            index_on_seal=not settings.live.projector,
        )
        app.state.event_log = event_log
    try:
        ingestor = await anyio.to_thread.run_sync(open_ingestor, settings, event_log)
        app.state.ingestor = ingestor
        try:
            yield ingestor
        finally:
            ingestor.dedup.close()
    finally:
        if owned is not None:
            await anyio.to_thread.run_sync(owned.close)
