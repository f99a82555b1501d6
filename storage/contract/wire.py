"""Messages between an agent and the server, as msgpack-encoded msgspec Structs.

One WebSocket connection (``/ws/agent``) carries, in order:

    server -> agent   Challenge   a fresh random nonce for this connection only
    agent  -> server  Hello       agent id, boot id and a Fernet token over (agent, boot, nonce)
    server -> agent   Welcome     the branch the server stamps, the frame size limit
    agent  -> server  BatchFrame  (boot_id, seq, token); token = Fernet(zstd(msgpack(BatchBody)))
    server -> agent   Ack / Error one per frame, by (boot_id, seq), after the append is durable

The batch number (agent id, boot id, sequence) is repeated inside the encrypted body so a frame
cannot be relabelled without the key. The codec has no field: the server tells zstd from zlib
(what agents before zstd sent, still accepted) by the zstd frame magic inside the token. The
offline ZIP carries the same ``BatchFrame`` bytes. Close codes are listed here and in
docs/transport.md.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from netmon.storage.contract.events import AgentEvent

PROTOCOL_VERSION = 1

# WebSocket close codes (4000-4999 are for applications; see docs/transport.md).
CLOSE_PROTOCOL_ERROR = 4400  # the handshake was not a valid Hello
CLOSE_AUTH_FAILED = 4401  # unknown agent, wrong key, stale or replayed handshake
CLOSE_AGENT_DISABLED = 4403  # the agent exists but an operator disabled it
CLOSE_HANDSHAKE_TIMEOUT = 4408  # no Hello within the handshake timeout
CLOSE_FORGED_FRAME = 4410  # a frame that the agent's keys do not authenticate
CLOSE_STORE_FAILED = 1011  # the event store refused an append; reconnect later


class Message(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", forbid_unknown_fields=True
):
    """Base of every wire message (``kind`` names the type)."""


class Challenge(Message, frozen=True, tag="challenge"):
    """The server's first message: sign this nonce to prove you hold your key."""

    nonce: bytes
    server_time: float
    replica: str = ""
    protocol: int = PROTOCOL_VERSION


class Hello(Message, frozen=True, tag="hello"):
    """The agent's answer: ``proof`` = Fernet(agent key) token over a ``HelloProof``."""

    agent_id: str
    boot_id: str
    proof: bytes
    version: str = ""


class HelloProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the handshake token encrypts: binds the token to one agent, boot and connection."""

    agent_id: str
    boot_id: str
    nonce: bytes


class Welcome(Message, frozen=True, tag="welcome"):
    """The handshake succeeded."""

    agent_id: str
    branch: str
    max_frame_bytes: int


class BatchFrame(Message, frozen=True, tag="batch"):
    """One numbered batch. ``token`` = Fernet(zstd or zlib(msgpack(BatchBody)))."""

    boot_id: str
    seq: int
    count: int
    token: bytes


class BatchBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The decrypted content of a batch."""

    agent_id: str
    boot_id: str
    seq: int
    events: list[AgentEvent]


class Ack(Message, frozen=True, tag="ack"):
    """The batch is durably stored (or was already: ``duplicate``)."""

    boot_id: str
    seq: int
    stored: int = 0
    duplicate: bool = False


class Error(Message, frozen=True, tag="error"):
    """A batch (or the connection) was refused; ``code`` is stable, ``message`` says why.

    ``retry`` False means the same bytes will always be refused: the agent sets the batch aside
    instead of sending it again.
    """

    code: str
    message: str
    boot_id: str = ""
    seq: int = -1
    retry: bool = False


ServerMessage = Challenge | Welcome | Ack | Error
AgentMessage = Hello | BatchFrame

T = TypeVar("T")


class Decoder(Generic[T]):
    """A msgspec decoder whose every failure is a ``msgspec.DecodeError``: msgspec raises a bare
    UnicodeDecodeError for invalid UTF-8 in a string, which the callers' ``except DecodeError``
    missed (a frame or hello with such a string killed the connection; found by tests/fuzz)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def decode(self, data: bytes) -> T:
        try:
            result: T = self._inner.decode(data)
        except UnicodeDecodeError as error:
            raise msgspec.DecodeError(f"invalid UTF-8 in a string: {error}") from None
        return result


# Created once and reused.
encoder = msgspec.msgpack.Encoder()
server_message_decoder: Decoder[ServerMessage] = Decoder(msgspec.msgpack.Decoder(ServerMessage))
agent_message_decoder: Decoder[AgentMessage] = Decoder(msgspec.msgpack.Decoder(AgentMessage))
hello_proof_decoder: Decoder[HelloProof] = Decoder(msgspec.msgpack.Decoder(HelloProof))
batch_body_decoder: Decoder[BatchBody] = Decoder(msgspec.msgpack.Decoder(BatchBody))
batch_frame_decoder: Decoder[BatchFrame] = Decoder(msgspec.msgpack.Decoder(BatchFrame))


def encode(message: msgspec.Struct) -> bytes:
    """Any wire message or body as msgpack bytes."""
    return encoder.encode(message)


# --- Offline archives (hourly ZIPs) ------------------------------------------------------------


class ArchiveBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of an offline archive: a ``BatchFrame`` stored as ``name``."""

    name: str
    boot_id: str
    seq: int
    count: int
    size: int
    sha256: str


class SeqRange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Consecutive sequence numbers of one boot held by an archive."""

    boot_id: str
    first_seq: int
    last_seq: int


class ArchiveManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``manifest.json`` of an offline archive; ``manifest.sig`` is a Fernet token over its
    SHA-256, so only the agent's key can vouch for it."""

    agent_id: str
    hour_start: float
    hour_end: float
    created: float
    batches: list[ArchiveBatch]
    ranges: list[SeqRange]
    protocol: int = PROTOCOL_VERSION


class ArchiveResult(msgspec.Struct, frozen=True, kw_only=True):
    """The server's answer to an archive upload."""

    batches: int
    stored_batches: int
    duplicate_batches: int
    events_stored: int


manifest_decoder: Decoder[ArchiveManifest] = Decoder(msgspec.json.Decoder(ArchiveManifest))
archive_result_decoder: Decoder[ArchiveResult] = Decoder(msgspec.json.Decoder(ArchiveResult))


def seq_ranges(numbers: list[tuple[str, int]]) -> list[SeqRange]:
    """Collapse (boot_id, seq) pairs into sorted ranges of consecutive numbers."""
    ranges: list[SeqRange] = []
    for boot_id, seq in sorted(numbers):
        last = ranges[-1] if ranges else None
        if last is not None and last.boot_id == boot_id and last.last_seq + 1 == seq:
            ranges[-1] = SeqRange(boot_id, last.first_seq, seq)
        else:
            ranges.append(SeqRange(boot_id, seq, seq))
    return ranges
