"""Fuzz the agent-facing decoders: storage/contract/wire.py decoders and app/ingest/frames.py's
``decode_frame`` (the bytes of one WebSocket frame from an authenticated agent).

Whatever arrives, decoding ends in a ``DecodedBatch`` or a ``FrameRejected`` (the agent gets a
coded error and the server a log line); anything that decodes can be stored and read back.
Frames are generated at every layer: raw bytes, msgpack structures, Fernet tokens under the
agent's real key over arbitrary bytes, zlib and zstd data (and arbitrary bytes after the zstd
magic), and batch bodies of mutated real events in either codec.
"""

from __future__ import annotations

import contextlib
import zlib

import msgspec
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from netmon.app.ingest.frames import ZSTD_MAGIC
from netmon.app.ingest.refusals import FrameRejected
from netmon.storage.contract import wire
from netmon.storage.contract.events import json_decoder
from netmon.storage.segments import StoreError
from tests.fuzz.budget import fuzz
from tests.fuzz.conftest import Rig
from tests.fuzz.strategies import VALUES, flow_dict, mutated_event

AGENT = "fuzz-agent"
DECODERS = [
    wire.server_message_decoder,
    wire.agent_message_decoder,
    wire.hello_proof_decoder,
    wire.batch_body_decoder,
    wire.batch_frame_decoder,
]


def bad_utf8_string(tail: bytes) -> bytes:
    """A msgpack str (fixstr header) whose bytes are not UTF-8."""
    data = b"\x80" + tail[:30]
    return bytes([0xA0 | len(data)]) + data


RAW = st.one_of(
    st.binary(max_size=400),
    VALUES.map(msgspec.msgpack.encode),
    # a map whose values are strings of invalid UTF-8, under real field names
    st.lists(st.sampled_from(["kind", "agent_id", "boot_id", "nonce", "token"]), max_size=4)
    .flatmap(lambda keys: st.tuples(st.just(keys), st.binary(max_size=8)))
    .map(
        lambda kb: (
            bytes([0x80 | len(kb[0])])
            + b"".join(msgspec.msgpack.encode(k) + bad_utf8_string(kb[1]) for k in kb[0])
        )
    ),
)


@fuzz
@given(RAW)
def test_wire_decoders_raise_only_decode_errors(raw: bytes) -> None:
    for decoder in DECODERS:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            decoder.decode(raw)


# Finding: msgspec reports invalid UTF-8 as UnicodeDecodeError, which escaped the handshake's
# and decode_frame's `except DecodeError` and dropped the connection with no coded error.
@pytest.mark.parametrize(
    "raw",
    [
        b"\x81\xa4kind\xa1\x80",
        b"\x82\xa4kind\xa5hello\xa8agent_id\xa2\xff\xfe",
        b"\x82\xa4kind\xa5batch\xa7boot_id\xa1\x80",
    ],
)
def test_invalid_utf8_is_a_decode_error(raw: bytes) -> None:
    for decoder in DECODERS:
        with contextlib.suppress(msgspec.ValidationError), pytest.raises(msgspec.DecodeError):
            decoder.decode(raw)
            raise msgspec.DecodeError("decoded")  # a decoder that accepts it is fine too


def test_invalid_utf8_in_a_batch_body_is_refused_with_a_code(rig: Rig) -> None:
    body = b"\x84\xa8agent_id\xa1\x80\xa7boot_id\xa1a\xa3seq\x00\xa6events\x90"
    token = rig.fernet.encrypt(zlib.compress(body))
    raw = wire.encode(wire.BatchFrame(boot_id="boot1", seq=0, count=0, token=token))
    with pytest.raises(FrameRejected) as refused:
        rig.ingestor.decode_frame(rig.session, raw)
    assert refused.value.code == "malformed_batch"


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, int, str, int]:
    """(inflated body, count claimed by the frame, boot id, seq)."""
    boot = draw(st.sampled_from(["boot1", "boot2", ""]) | st.text(max_size=5))
    seq = draw(st.integers(-2, 2**63))
    events = draw(st.lists(mutated_event(AGENT), max_size=4))
    body = {"agent_id": AGENT, "boot_id": boot, "seq": seq, "events": events}
    if draw(st.booleans()):
        body[draw(st.sampled_from(sorted(body)))] = draw(VALUES)
    count = len(events) if draw(st.integers(0, 4)) else draw(st.integers(-1, 5))
    raw = msgspec.msgpack.encode(body) if draw(st.integers(0, 5)) else draw(st.binary())
    return raw, count, boot if isinstance(boot, str) else "", seq


@st.composite
def frames(draw: st.DrawFn, rig: Rig) -> bytes:
    layer = draw(st.sampled_from(["raw", "msgpack", "token", "zlib", "zstd", "body"]))
    if layer == "raw":
        return draw(st.binary(max_size=300))
    if layer == "msgpack":
        return msgspec.msgpack.encode(draw(VALUES | st.fixed_dictionaries({"kind": VALUES})))
    body, count, boot, seq = draw(bodies())
    if layer == "token":
        payload = draw(st.binary(max_size=200))
    elif layer == "zlib":
        payload = zlib.compress(draw(st.binary(max_size=200)))
    elif layer == "zstd":
        payload = draw(
            st.binary(max_size=200).map(zstandard.ZstdCompressor().compress)
            | st.binary(max_size=200).map(ZSTD_MAGIC.__add__)
        )
    else:
        codec = draw(st.sampled_from([zlib.compress, zstandard.ZstdCompressor().compress]))
        payload = codec(body)
    token = rig.fernet.encrypt(payload)
    if draw(st.integers(0, 9)) == 0:
        token = token[:-3] + b"AAA"  # tampered
    seq = seq if 0 <= seq < 2**63 else 0
    return wire.encode(wire.BatchFrame(boot_id=boot, seq=seq, count=max(count, 0), token=token))


@fuzz
@given(st.data())
def test_any_frame_decodes_or_is_rejected_and_decoded_batches_store(
    rig: Rig, data: st.DataObject
) -> None:
    raw = data.draw(frames(rig))
    try:
        batch = rig.ingestor.decode_frame(rig.session, raw)
    except FrameRejected as error:
        assert error.code and error.message
        return
    for event in batch.events:
        assert event.branch == "hq"  # the registry's branch, whatever the agent claimed
        assert event.agent_id == AGENT
    try:
        rig.ingestor.event_log.append(batch.events)
    except StoreError as error:
        raise AssertionError(f"a batch ingest accepted cannot be stored: {error}") from None
    for event in batch.events:
        line = msgspec.json.encode(event)
        assert json_decoder.decode(line) is not None


NONCE = b"n" * 32


@st.composite
def hellos(draw: st.DrawFn, rig: Rig) -> tuple[wire.Hello, bool]:
    """A Hello and whether it is the genuine answer to NONCE."""
    agent = draw(st.sampled_from([AGENT, "nobody", ""]) | st.text(max_size=10))
    boot = draw(st.sampled_from(["boot1"]) | st.text(max_size=8))
    kind = draw(st.sampled_from(["genuine", "raw", "token", "proof"]))
    genuine = False
    if kind == "raw":
        proof = draw(st.binary(max_size=120))
    elif kind == "token":
        proof = rig.fernet.encrypt(
            draw(st.binary(max_size=60) | VALUES.map(msgspec.msgpack.encode))
        )
    else:
        fields = {"agent_id": agent, "boot_id": boot, "nonce": NONCE}
        if kind == "proof":  # a well-formed proof with one field wrong or odd
            fields[draw(st.sampled_from(sorted(fields)))] = draw(VALUES)
        genuine = kind == "genuine" and agent == AGENT
        proof = rig.fernet.encrypt(msgspec.msgpack.encode(fields))
    return wire.Hello(agent_id=agent, boot_id=boot, proof=proof), genuine


@fuzz
@given(st.data())
def test_any_hello_authenticates_or_is_refused(rig: Rig, data: st.DataObject) -> None:
    hello, genuine = data.draw(hellos(rig))
    raw = wire.encode(hello)
    decoded = wire.agent_message_decoder.decode(raw)  # what the endpoint does first
    try:
        session = rig.ingestor.authenticate(decoded, NONCE)  # type: ignore[arg-type]
    except FrameRejected as error:
        assert error.code == "auth_failed" and not genuine, error.message
        return
    assert session.record.agent_id == AGENT
    assert genuine  # accepted only with the agent's proof for this very nonce


# Finding: a batch with an event ts out of range (NaN, negative, past year 9999) was decoded,
# then refused by the store as `store_failed` with retry: the agent resent it forever.
@pytest.mark.parametrize("ts", [float("nan"), -5.0, 1e300, float("inf")])
def test_an_event_time_out_of_range_is_refused_for_good(rig: Rig, ts: float) -> None:
    event = flow_dict(AGENT)
    event["ts"] = ts
    body = {"agent_id": AGENT, "boot_id": "boot1", "seq": 0, "events": [event]}
    token = rig.fernet.encrypt(zlib.compress(msgspec.msgpack.encode(body)))
    raw = wire.encode(wire.BatchFrame(boot_id="boot1", seq=0, count=1, token=token))
    with pytest.raises(FrameRejected) as refused:
        rig.ingestor.decode_frame(rig.session, raw)
    assert refused.value.code == "invalid_batch" and not refused.value.retry
