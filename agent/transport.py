"""Agent -> server transport: batches, durable spool, WebSocket with acks, offline archives.

The pipeline calls ``emit(event)`` from its own thread. Events collect in the current batch,
which is sealed when it is full, 1 s after its first event, or 50 ms after a DetectionRaised
(critical findings leave within 200 ms). Sealing = msgpack, zstd (or zlib), Fernet with this
agent's key, numbered (agent id, boot id, seq), and written durably to the spool. ``run()``
(asyncio) keeps a WebSocket to ``/ws/agent``: it proves the key over the server's nonce, sends
spooled batches with at most ``window`` unacknowledged, and removes each only when its Ack
arrives.

Reconnects use full-jitter backoff (``uniform(0, min(cap, base * 2**attempt))``). While the
server is unreachable, at the top of each hour (by the injectable ``clock``) the batches of the
past hours are sealed into an archive (offline_zip) that is uploaded when the server answers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec
import zstandard
from cryptography.fernet import Fernet, MultiFernet

from netmon.agent import offline_zip
from netmon.agent.spool import Spool, SpooledBatch
from netmon.storage.contract import wire
from netmon.storage.contract.events import (
    AGENT_EVENT_TYPES,
    AgentHeartbeat,
    DetectionRaised,
    Event,
    GapReported,
    new_event_id,
)

log = logging.getLogger(__name__)

WS_PATH = "/ws/agent"


class TransportConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[transport]`` section of agent.toml (documented in docs/transport.md)."""

    key: str = ""  # this agent's Fernet key from `netmon agents add` (secret: no default)
    spool_dir: str = "./spool"
    spool_max_bytes: int = 512 * 1024 * 1024
    batch_max_events: int = 2000
    batch_max_delay_s: float = 1.0
    critical_delay_s: float = 0.05
    window: int = 8  # unacknowledged batches in flight
    max_frame_bytes: int = 4 * 1024 * 1024  # larger batches are split (server default: 8 MiB)
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    ping_interval_s: float | None = 20.0  # None: no keepalive pings
    ping_timeout_s: float | None = 20.0
    handshake_timeout_s: float = 10.0
    ack_timeout_s: float = 60.0  # a batch unacknowledged this long: reconnect and resend
    offline_archives: bool = True
    # The server tells the codecs apart by the zstd frame magic inside the token; zlib is what
    # agents before zstd sent (docs/transport.md, "Sealing").
    compression: Literal["zstd", "zlib"] = "zstd"
    zstd_level: int = 1
    zlib_level: int = 1
    hour_check_s: float = 1.0  # how often the hourly-archive clock is looked at


class TransportError(Exception):
    """The transport cannot start or the server refused it; the message says why."""


class HandshakeRefused(TransportError):
    """The server refused this agent (unknown, wrong key, disabled)."""


class TransportStats:
    """Counters for heartbeats, tests and the benchmark (mutated on the event loop)."""

    def __init__(self) -> None:
        self.batches_sealed = 0
        self.events_sealed = 0
        self.batches_acked = 0
        self.events_acked = 0
        self.duplicates = 0
        self.rejected = 0
        self.connects = 0
        self.archives_sealed = 0
        self.archives_uploaded = 0
        self.ack_latencies: collections.deque[float] = collections.deque(maxlen=20_000)


def _compressor(config: TransportConfig) -> Callable[[bytes], bytes]:
    """The batch codec; a bad level is refused here rather than at the first seal."""
    if config.compression == "zlib":
        if not -1 <= config.zlib_level <= 9:
            raise TransportError(f"transport.zlib_level must be -1..9, not {config.zlib_level}")
        level = config.zlib_level
        return lambda body: zlib.compress(body, level)
    try:
        # One compressor, reused: only ever called under the transport's batch lock. The frame
        # header carries the content size, so the server allocates exactly that much.
        zstd = zstandard.ZstdCompressor(level=config.zstd_level, write_content_size=True)
    except ValueError as error:
        raise TransportError(f"transport.zstd_level {config.zstd_level}: {error}") from None
    return zstd.compress


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """AWS-style full jitter backoff delay for the given attempt (0-based)."""
    return random.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


class AgentTransport:
    """One agent's connection to the server; ``emit`` is thread-safe, ``run`` is a coroutine."""

    def __init__(
        self,
        agent_id: str,
        server_url: str,
        config: TransportConfig,
        *,
        clock: Callable[[], float] = time.time,
        boot_id: str | None = None,
    ) -> None:
        if not config.key:
            raise TransportError(
                "transport.key is not set: enrol the agent with `netmon agents add NAME "
                "--branch B` on the server and copy the printed [transport] section"
            )
        try:
            self._fernet = MultiFernet([Fernet(config.key)])
        except ValueError:
            raise TransportError("transport.key is not a valid Fernet key") from None
        if not server_url.startswith(("ws://", "wss://")):
            raise TransportError(f"server_url must start with ws:// or wss://, not {server_url!r}")
        self.agent_id = agent_id
        self.server_url = server_url.rstrip("/")
        self.config = config
        self.clock = clock
        self.boot_id = boot_id or uuid.uuid4().hex[:16]
        self.spool = Spool(Path(config.spool_dir), config.spool_max_bytes)
        self.stats = TransportStats()
        self.connected = False
        self._seq = 0
        self._lock = threading.Lock()
        self._pending: list[Event] = []  # only AGENT_EVENT_TYPES (checked by emit)
        self._pending_cursor = -1
        self._due: float | None = None  # monotonic time the current batch must be sealed by
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._new_batch = asyncio.Event()
        self._window_free = asyncio.Event()
        self._inflight: dict[tuple[str, int], float] = {}
        self._last_hour = int(clock() // 3600)
        self._encoder = msgspec.msgpack.Encoder()
        self._compress = _compressor(config)

    # --- producing batches (any thread) -------------------------------------------------------

    def resume_cursor(self) -> int:
        """Where a resumable source should continue (-1: from the start)."""
        return self.spool.cursor()

    def emit(self, event: Event, cursor: int | None = None) -> None:
        """Add one event to the current batch (``cursor``: source position after it)."""
        if not isinstance(event, AGENT_EVENT_TYPES):
            raise TypeError(f"agents may not send {type(event).__name__} events")
        if isinstance(event, AgentHeartbeat):
            event = self._with_spool_status(event)
        with self._lock:
            self._pending.append(event)
            if cursor is not None:
                self._pending_cursor = cursor
            now = time.monotonic()
            if len(self._pending) >= self.config.batch_max_events:
                self._seal_locked()
                return
            due = now + (
                self.config.critical_delay_s
                if isinstance(event, DetectionRaised)
                else self.config.batch_max_delay_s
            )
            if self._due is None or due < self._due:
                self._due = due
                self._notify(self._wake)

    def _with_spool_status(self, beat: AgentHeartbeat) -> AgentHeartbeat:
        """Heartbeats carry the spool's state: only the transport knows it."""
        entries = self.spool.entries()
        lag = max(0.0, self.clock() - entries[0].created) if entries else 0.0
        return msgspec.structs.replace(
            beat, spool_batches=len(entries), spool_bytes=self.spool.total_bytes, lag_s=lag
        )

    def flush(self) -> None:
        """Seal the current batch now (if it has events)."""
        with self._lock:
            if self._pending:
                self._seal_locked()

    def _seal_locked(self) -> None:
        events, self._pending, self._due = self._pending, [], None
        self._seal_events(events, self._pending_cursor)
        self._notify(self._new_batch)

    def _seal_events(self, events: list[Event], cursor: int) -> None:
        seq = self._seq
        body = self._encoder.encode(
            wire.BatchBody(self.agent_id, self.boot_id, seq, events)  # type: ignore[arg-type]
        )
        token = self._fernet.encrypt(self._compress(body))
        if len(token) > self.config.max_frame_bytes and len(events) > 1:
            # The server would refuse it for good: split rather than lose it. Only the second
            # half carries the source cursor (the first half's resume point is not known).
            half = len(events) // 2
            self._seal_events(events[:half], -1)
            self._seal_events(events[half:], cursor)
            return
        self._seq += 1
        frame = wire.encode(
            wire.BatchFrame(boot_id=self.boot_id, seq=seq, count=len(events), token=token)
        )
        self.spool.put(SpooledBatch(self.boot_id, seq, len(events), self.clock(), frame, cursor))
        self.stats.batches_sealed += 1
        self.stats.events_sealed += len(events)

    def _notify(self, event: asyncio.Event) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is stopping
                loop.call_soon_threadsafe(event.set)

    # --- the connection (event loop) ----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keep connected and deliver batches until ``stop`` is set; then seal what is left."""
        self._loop = asyncio.get_running_loop()
        for event in (self._wake, self._new_batch):
            event.set()  # pick up whatever was emitted before the loop started
        tasks = [
            asyncio.create_task(self._flusher(), name="flusher"),
            asyncio.create_task(self._hourly(), name="hourly"),
            asyncio.create_task(self._connect_forever(), name="connection"),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.flush()
            self.connected = False

    async def drain(self, within_s: float) -> bool:
        """Seal the current batch and wait until every batch and archive is acknowledged."""
        self.flush()
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if len(self.spool) == 0 and not self.spool.outbox():
                return True
            await asyncio.sleep(0.05)
        return False

    async def _flusher(self) -> None:
        while True:
            with self._lock:
                due = self._due
            timeout = None if due is None else max(0.0, due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            with self._lock:
                if self._pending and self._due is not None and time.monotonic() >= self._due:
                    self._seal_locked()

    async def _hourly(self) -> None:
        while True:
            await asyncio.sleep(self.config.hour_check_s)
            self.check_hour()

    def check_hour(self) -> None:
        """At the top of an hour while offline, seal the past hours' batches into an archive."""
        hour = int(self.clock() // 3600)
        if hour <= self._last_hour:
            return
        boundary = hour * 3600.0
        if not self.connected and self.config.offline_archives:
            entries = [entry for entry in self.spool.entries() if entry.created < boundary]
            if entries:
                path = offline_zip.seal_archive(
                    self.spool,
                    entries,
                    agent_id=self.agent_id,
                    fernet=self._fernet,
                    hour_start=(self._last_hour * 3600.0),
                    hour_end=boundary,
                    now=self.clock(),
                )
                if path is not None:
                    self.stats.archives_sealed += 1
        self._last_hour = hour

    async def _connect_forever(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except HandshakeRefused as error:
                log.error("transport: %s", error)
            except Exception as error:  # network errors of every kind: retry with backoff
                log.info("transport: disconnected: %r", error)
                if self.connected:
                    attempt = 0
            finally:
                self.connected = False
                self._inflight.clear()
            delay = full_jitter(attempt, self.config.backoff_base_s, self.config.backoff_cap_s)
            attempt += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        from websockets.asyncio.client import connect

        async with connect(
            self.server_url + WS_PATH,
            compression=None,  # encrypted frames do not compress; deflate costs 4x throughput
            ping_interval=self.config.ping_interval_s,
            ping_timeout=self.config.ping_timeout_s,
            open_timeout=self.config.handshake_timeout_s,
            close_timeout=2.0,
            max_size=1024 * 1024,
            proxy=None,
        ) as ws:
            await self._handshake(ws)
            self.connected = True
            self.stats.connects += 1
            self._report_gaps()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._sender(ws))
                group.create_task(self._receiver(ws))
                group.create_task(self._upload_archives())

    async def _handshake(self, ws) -> None:  # type: ignore[no-untyped-def]
        timeout = self.config.handshake_timeout_s
        challenge = wire.server_message_decoder.decode(await asyncio.wait_for(ws.recv(), timeout))
        if not isinstance(challenge, wire.Challenge):
            raise TransportError(f"expected a challenge, got {challenge!r}")
        proof = self._fernet.encrypt(
            wire.encode(wire.HelloProof(self.agent_id, self.boot_id, challenge.nonce))
        )
        await ws.send(
            wire.encode(wire.Hello(agent_id=self.agent_id, boot_id=self.boot_id, proof=proof))
        )
        try:
            reply = wire.server_message_decoder.decode(await asyncio.wait_for(ws.recv(), timeout))
        except Exception as error:
            reason = getattr(getattr(error, "rcvd", None), "reason", "") or repr(error)
            raise HandshakeRefused(f"handshake refused: {reason}") from None
        if isinstance(reply, wire.Error):
            raise HandshakeRefused(f"handshake refused: {reply.code}: {reply.message}")
        if not isinstance(reply, wire.Welcome):
            raise TransportError(f"expected welcome, got {reply!r}")
        log.info("transport: connected as %s (branch %s)", reply.agent_id, reply.branch)

    def _report_gaps(self) -> None:
        gaps = self.spool.gaps()
        if not gaps:
            return
        now = self.clock()
        with self._lock:
            for gap in gaps:
                self._pending.append(
                    GapReported(
                        id=new_event_id(now),
                        ts=now,
                        branch="",
                        agent_id=self.agent_id,
                        boot_id=gap.boot_id,
                        first_seq=gap.first_seq,
                        last_seq=gap.last_seq,
                        batches_dropped=gap.batches,
                        events_dropped=gap.events,
                    )
                )
            self._seal_locked()
        self.spool.clear_gaps(gaps)

    async def _sender(self, ws) -> None:  # type: ignore[no-untyped-def]
        while True:
            self._new_batch.clear()
            todo = [e for e in self.spool.entries() if (e.boot_id, e.seq) not in self._inflight]
            if not todo:
                await self._new_batch.wait()
                continue
            for entry in todo:
                while len(self._inflight) >= self.config.window:
                    self._window_free.clear()
                    await self._window_free.wait()
                batch = (
                    self.spool.read(entry)
                    if self.spool.contains(entry.boot_id, entry.seq)
                    else None
                )
                if batch is None:
                    continue  # acknowledged or archived meanwhile
                self._inflight[(entry.boot_id, entry.seq)] = time.monotonic()
                await ws.send(batch.frame)

    async def _receiver(self, ws) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                # Cancelling recv() loses nothing (websockets docs); it lets us notice a
                # server that keeps the connection (and its pings) alive but stopped acking.
                raw = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                oldest = min(self._inflight.values(), default=None)
                if oldest is not None and time.monotonic() - oldest > self.config.ack_timeout_s:
                    raise ConnectionError(
                        f"no acknowledgement within {self.config.ack_timeout_s} s"
                    ) from None
                continue
            message = wire.server_message_decoder.decode(raw)
            if isinstance(message, wire.Ack):
                self._on_ack(message)
            elif isinstance(message, wire.Error):
                self._on_error(message)

    def _on_ack(self, ack: wire.Ack) -> None:
        sent = self._inflight.pop((ack.boot_id, ack.seq), None)
        if sent is not None:
            self.stats.ack_latencies.append(time.monotonic() - sent)
        self.spool.remove(ack.boot_id, ack.seq)
        self.stats.batches_acked += 1
        self.stats.events_acked += ack.stored
        self.stats.duplicates += int(ack.duplicate)
        self._window_free.set()

    def _on_error(self, error: wire.Error) -> None:
        log.error(
            "transport: server error %s for batch %s/%d: %s",
            error.code,
            error.boot_id,
            error.seq,
            error.message,
        )
        if error.seq < 0 or error.retry:
            raise ConnectionError(f"server error {error.code}: {error.message}")
        self._inflight.pop((error.boot_id, error.seq), None)
        self.spool.reject(error.boot_id, error.seq, f"{error.code}: {error.message}")
        self.stats.rejected += 1
        self._window_free.set()

    async def _upload_archives(self) -> None:
        import httpx

        archives = self.spool.outbox()
        if not archives:
            return
        base = offline_zip.http_base_url(self.server_url)
        async with httpx.AsyncClient(timeout=60.0) as client:
            for path in archives:
                try:
                    result = await offline_zip.upload_archive(client, base, self.agent_id, path)
                except offline_zip.UploadError as error:
                    log.error("transport: %s", error)
                    if not error.permanent:
                        return
                    path.replace(self.spool.rejected_dir / path.name)
                    continue
                log.info(
                    "transport: archive %s uploaded: %d batches stored, %d duplicates",
                    path.name,
                    result.stored_batches,
                    result.duplicate_batches,
                )
                path.unlink(missing_ok=True)
                self.stats.archives_uploaded += 1
