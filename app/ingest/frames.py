"""One batch frame from an authenticated agent, verified completely into a ``DecodedBatch``.

Decoding has no side effects: size check -> Fernet decrypt with the agent's keys -> bounded
inflate (zstd or zlib) -> msgspec validation (agent event types only) -> branch stamped from the
registry. Every failure is a coded ``FrameRejected``; a token the keys do not verify is a
``ForgedFrame`` (the endpoint then closes the connection).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from operator import attrgetter

import msgspec
import zstandard
from cryptography.fernet import InvalidToken

from netmon.app.ingest.refusals import ForgedFrame, FrameRejected
from netmon.app.ingest.sessions import AgentSession
from netmon.app.settings import IngestSettings
from netmon.storage.agents import AgentRecord
from netmon.storage.contract import wire
from netmon.storage.contract.events import AGENT_EVENT_TYPES, Event
from netmon.storage.segments import MAX_TS

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # starts every zstd frame; a zlib stream starts 0x78
AGENT_TYPE_NAMES = ", ".join(kind.__name__ for kind in AGENT_EVENT_TYPES)

Where = tuple[str, int]  # (boot_id, seq) of the batch being decoded, for its refusal


class DecodedBatch(msgspec.Struct, frozen=True):
    """A verified batch, stamped and ready to append."""

    boot_id: str
    seq: int
    events: list[Event]


def decode_frame(limits: IngestSettings, session: AgentSession, raw: bytes) -> DecodedBatch:
    """Verify one frame completely; raise FrameRejected / ForgedFrame."""
    frame = _read_frame(raw, limits.max_frame_bytes)
    where = (frame.boot_id, frame.seq)
    compressed = _decrypt(session, frame.token, where)
    body = _read_body(_inflate(compressed, limits.max_batch_bytes, where), where)
    _check_numbering(body, frame, session.record.agent_id, where)
    return DecodedBatch(frame.boot_id, frame.seq, _stamp(session.record, body.events, where))


def _read_frame(raw: bytes, max_frame_bytes: int) -> wire.BatchFrame:
    try:
        frame = wire.batch_frame_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise FrameRejected("malformed_frame", f"not a batch frame: {error}") from None
    if len(raw) > max_frame_bytes:
        raise FrameRejected(
            "frame_too_large",
            f"frame of {len(raw)} bytes is over the limit of {max_frame_bytes}; "
            "send smaller batches",
            at=(frame.boot_id, frame.seq),
        )
    return frame


def _decrypt(session: AgentSession, token: bytes, where: Where) -> bytes:
    try:
        return session.fernet.decrypt(token)
    except InvalidToken:
        raise ForgedFrame(
            "forged_frame",
            "the batch token does not verify with this agent's "
            "keys (tampered, forged or encrypted with another key)",
            at=where,
        ) from None


def _read_body(body_bytes: bytes, where: Where) -> wire.BatchBody:
    try:
        return wire.batch_body_decoder.decode(body_bytes)
    except msgspec.ValidationError as error:
        text = str(error)
        if text.endswith(".type`"):
            raise FrameRejected(
                "event_type_refused",
                f"agents may send only {AGENT_TYPE_NAMES}: {text}",
                at=where,
            ) from None
        raise FrameRejected("invalid_batch", f"batch failed validation: {text}", at=where) from None
    except msgspec.DecodeError as error:
        raise FrameRejected(
            "malformed_batch", f"batch is not valid msgpack: {error}", at=where
        ) from None


def _check_numbering(
    body: wire.BatchBody, frame: wire.BatchFrame, agent_id: str, where: Where
) -> None:
    """The batch inside the token is the one the frame announces, from this agent."""
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


# --- codecs ------------------------------------------------------------------------------------


def _inflate(compressed: bytes, limit: int, where: Where) -> bytes:
    """The batch's msgpack bytes, never more than ``limit`` of them."""
    # The codec is read from the authenticated bytes, not from a wire field: a field outside
    # the token could be altered, and old spools and archives carry none.
    if compressed.startswith(ZSTD_MAGIC):
        return _inflate_zstd(compressed, limit, where)
    return _inflate_zlib(compressed, limit, where)


def _inflate_zstd(compressed: bytes, limit: int, where: Where) -> bytes:
    try:
        declared = zstandard.frame_content_size(compressed)  # -1: not in the header
    except zstandard.ZstdError as error:
        raise _not_zstd(error, where) from None
    if declared > limit:
        raise _too_large(limit, where, f" (its zstd header says {declared})")
    # A header that lies is caught by zstd itself (output past the declared size is an
    # error), so nothing past min(declared, limit) + 1 bytes is ever produced or allocated;
    # the window bound refuses frames that would make the decoder allocate more.
    decompressor = zstandard.ZstdDecompressor(max_window_size=_window_bound(limit))
    try:
        with decompressor.stream_reader(compressed, read_across_frames=False) as reader:
            data = reader.read((limit if declared < 0 else declared) + 1)
    except zstandard.ZstdError as error:
        if "too much memory" in str(error):
            raise _too_large(limit, where, " (its zstd window is larger)") from None
        raise _not_zstd(error, where) from None
    if len(data) > limit:
        raise _too_large(limit, where)
    if declared >= 0 and len(data) != declared:  # a truncated frame reads short, silently
        raise _not_zstd(f"frame ends after {len(data)} of its {declared} bytes", where)
    return data


def _inflate_zlib(compressed: bytes, limit: int, where: Where) -> bytes:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(compressed, limit)
    except zlib.error as error:
        raise FrameRejected(
            "malformed_batch", f"batch is not zlib data: {error}", at=where
        ) from None
    if inflater.unconsumed_tail:
        raise _too_large(limit, where)
    return data


def _not_zstd(why: object, where: Where) -> FrameRejected:
    return FrameRejected("malformed_batch", f"batch is not zstd data: {why}", at=where)


def _too_large(limit: int, where: Where, why: str = "") -> FrameRejected:
    return FrameRejected(
        "batch_too_large", f"batch inflates to more than {limit} bytes{why}", at=where
    )


def _window_bound(limit: int) -> int:
    """zstd's largest decoding window for a batch limit (zstd accepts 1 KiB to 2 GiB)."""
    return max(1 << 10, min(limit, 1 << 31))


# --- branch stamping ---------------------------------------------------------------------------

_AGENT_ID, _BRANCH, _TS = attrgetter("agent_id"), attrgetter("branch"), attrgetter("ts")


def _stamp(record: AgentRecord, events: Sequence[Event], where: Where) -> list[Event]:
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
