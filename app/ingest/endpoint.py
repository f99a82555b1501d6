"""``/ws/agent``: the agent's WebSocket. Challenge, authenticate, then store and acknowledge
frames, with every refusal an ``Error`` to the agent and a log line (see ``refuse``)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import msgspec
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from netmon.app.ingest.frames import DecodedBatch
from netmon.app.ingest.ingestor import Ingestor
from netmon.app.ingest.refusals import ForgedFrame, FrameRejected, StoreFailed
from netmon.app.ingest.sessions import AgentSession
from netmon.app.state import opened, server_state
from netmon.storage.contract import wire

log = logging.getLogger("netmon.ingest")


async def agent_socket(websocket: WebSocket) -> None:
    """``/ws/agent``: challenge, authenticate, then store and acknowledge frames."""
    ingestor = opened(server_state(websocket).ingestor, "the ingestor")
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


async def refuse(
    send: Callable[[bytes], Awaitable[None]],
    error: FrameRejected,
    sender: tuple[str, str],
    counter: Ingestor | None,
) -> None:
    """Refuse agent input: count it by code (when a ``counter`` is given), log it with the
    ``sender`` (agent id, peer address), and ``send`` the agent its coded ``Error``."""
    if counter is not None:
        counter.count(error.code, rejected=True)
    agent_id, peer = sender
    log.warning(
        "ingest: refused %s from agent %r (%s) batch %s/%d: %s",
        error.code,
        agent_id,
        peer,
        error.boot_id,
        error.seq,
        error.message,
    )
    await send(wire.encode(error.to_wire()))


# --- the handshake -----------------------------------------------------------------------------


async def _handshake(websocket: WebSocket, ingestor: Ingestor, peer: str) -> AgentSession | None:
    """The agent's session; None when it left or was refused (the socket is closed then)."""
    nonce = await _challenge(websocket)
    message = await _receive_hello(websocket, ingestor.settings.handshake_timeout_s, peer)
    if message is None:
        return None
    hello = await _decode_hello(websocket, message, peer)
    if hello is None:
        return None
    return await _authenticate(websocket, ingestor, hello, nonce, peer)


async def _challenge(websocket: WebSocket) -> bytes:
    """Send this connection's nonce, which the agent's Hello proof must name."""
    nonce = os.urandom(32)
    await websocket.send_bytes(
        wire.encode(
            wire.Challenge(
                nonce=nonce,
                server_time=time.time(),
                replica=server_state(websocket).settings.server.replica,
            )
        )
    )
    return nonce


async def _receive_hello(websocket: WebSocket, timeout_s: float, peer: str) -> Message | None:
    try:
        with anyio.fail_after(timeout_s):
            message = await websocket.receive()
    except TimeoutError:
        log.warning("ingest: %s sent no hello within %.0f s", peer, timeout_s)
        await websocket.close(wire.CLOSE_HANDSHAKE_TIMEOUT, "handshake timeout")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    return message


async def _decode_hello(websocket: WebSocket, message: Message, peer: str) -> wire.Hello | None:
    try:
        hello = wire.agent_message_decoder.decode(message.get("bytes") or b"")
        if not isinstance(hello, wire.Hello):
            raise msgspec.ValidationError("expected a hello message")
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        refused = FrameRejected("protocol_error", f"expected a hello: {error}")
        # Not counted in the rejection metrics, unlike every other refusal: no agent spoke yet.
        await refuse(websocket.send_bytes, refused, ("?", peer), None)
        await websocket.close(wire.CLOSE_PROTOCOL_ERROR, "protocol error")
        return None
    return hello


async def _authenticate(
    websocket: WebSocket, ingestor: Ingestor, hello: wire.Hello, nonce: bytes, peer: str
) -> AgentSession | None:
    try:
        return await anyio.to_thread.run_sync(ingestor.authenticate, hello, nonce)
    except FrameRejected as error:
        await refuse(websocket.send_bytes, error, (hello.agent_id, peer), ingestor)
        code = (
            wire.CLOSE_AGENT_DISABLED if error.code == "agent_disabled" else wire.CLOSE_AUTH_FAILED
        )
        await websocket.close(code, error.code)
        return None


# --- frames ------------------------------------------------------------------------------------


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
        while (message := await self._next_message()) is not None:
            try:
                batch = await self._verify(message.get("bytes"))
            except FrameRejected as error:
                await refuse(self._send, error, (self.agent_id, self.peer), self.ingestor)
                if isinstance(error, ForgedFrame):
                    self.close_code, self.close_reason = wire.CLOSE_FORGED_FRAME, "forged frame"
                    return
                continue
            await queue.send(batch)

    async def _next_message(self) -> Message | None:
        """The agent's next message; None once it disconnected."""
        try:
            message = await self.websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        return message

    async def _verify(self, raw: bytes | None) -> DecodedBatch:
        if raw is None:
            raise FrameRejected("malformed_frame", "frames must be binary")
        return await anyio.to_thread.run_sync(self.ingestor.decode_frame, self.session, raw)

    async def _store(
        self, queue: anyio.abc.ObjectReceiveStream[DecodedBatch], scope: anyio.CancelScope
    ) -> None:
        async with queue:
            async for batch in queue:
                try:
                    ack = await anyio.to_thread.run_sync(self.ingestor.store, self.agent_id, batch)
                except FrameRejected as error:  # busy (another connection is storing it) or failed
                    await refuse(self._send, error, (self.agent_id, self.peer), self.ingestor)
                    if isinstance(error, StoreFailed):
                        self.close_code, self.close_reason = wire.CLOSE_STORE_FAILED, "store failed"
                        scope.cancel()
                        return
                    continue
                await self._send(wire.encode(ack))

    async def _send(self, data: bytes) -> None:
        async with self.send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.websocket.send_bytes(data)
