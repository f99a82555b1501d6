"""Bad input against a real server process: each gets a clear error, a log line, and nothing is
stored; a forged frame closes only that agent's connection."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from cryptography.fernet import Fernet
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from netmon.agent.offline_zip import seal_archive
from netmon.agent.transport import AgentTransport, TransportConfig
from netmon.storage.agents import AgentRegistry
from netmon.storage.contract import wire
from tests.transport.conftest import ServerProcess, make_flow, stored_events

MAX_FRAME = 300_000


class Env:
    """One server shared by this module, with three agents."""

    def __init__(
        self, server: ServerProcess, keys: dict[str, str], root: Path, registry: AgentRegistry
    ) -> None:
        self.server, self.keys, self.root, self.registry = server, keys, root, registry

    def stored(self) -> int:
        return len(stored_events(self.server.data_dir))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("bad_input")
    secret = Fernet.generate_key().decode()
    registry = AgentRegistry(root / "data", secret)
    keys = {
        name: registry.add(name, branch)
        for name, branch in (("a1", "b1"), ("a2", "b2"), ("a3", "b3"))
    }
    registry.set_enabled("a3", False)
    server = ServerProcess(
        root,
        secret,
        max_frame_bytes=MAX_FRAME,
        handshake_timeout_s=1.0,
        max_archive_entries=50,
        max_archive_bytes=2_000_000,
    )
    server.start()
    yield Env(server, keys, root, registry)
    server.stop()


def sealed_frame(
    key: str,
    agent_id: str,
    seq: int,
    events: list | None = None,
    *,  # type: ignore[type-arg]
    body: bytes | None = None,
    boot_id: str = "boot1",
) -> bytes:
    events = [make_flow(agent_id, seq)] if events is None else events
    if body is None:
        body = wire.encode(wire.BatchBody(agent_id, boot_id, seq, events))
    token = Fernet(key).encrypt(zlib.compress(body))
    return wire.encode(wire.BatchFrame(boot_id=boot_id, seq=seq, count=len(events), token=token))


async def open_agent(
    env: Env, agent_id: str, key: str | None = None
) -> tuple[ClientConnection, bytes]:
    """Connect and answer the challenge; return the socket and the Hello that was sent."""
    ws = await connect(env.server.url + "/ws/agent", compression=None, max_size=2**24, proxy=None)
    challenge = wire.server_message_decoder.decode(await ws.recv())
    assert isinstance(challenge, wire.Challenge)
    proof = Fernet(key or env.keys[agent_id]).encrypt(
        wire.encode(wire.HelloProof(agent_id, "boot1", challenge.nonce))
    )
    hello = wire.encode(wire.Hello(agent_id=agent_id, boot_id="boot1", proof=proof))
    await ws.send(hello)
    return ws, hello


async def welcomed(env: Env, agent_id: str) -> ClientConnection:
    ws, _ = await open_agent(env, agent_id)
    assert isinstance(wire.server_message_decoder.decode(await ws.recv()), wire.Welcome)
    return ws


async def refusal(ws: ClientConnection) -> tuple[wire.Error, int | None]:
    """The Error the server sent, and the close code if it then closed the connection."""
    error = wire.server_message_decoder.decode(await ws.recv())
    assert isinstance(error, wire.Error), error
    try:
        await asyncio.wait_for(ws.recv(), 0.5)
    except ConnectionClosed as closed:
        return error, closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        return error, None
    raise AssertionError("unexpected message after the error")


async def expect_ack(ws: ClientConnection, seq: int) -> wire.Ack:
    ack = wire.server_message_decoder.decode(await ws.recv())
    assert isinstance(ack, wire.Ack) and ack.seq == seq, ack
    return ack


# --- handshake ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent_id", "key_of", "code", "close_code"),
    [
        ("a1", "a2", "auth_failed", wire.CLOSE_AUTH_FAILED),  # another agent's key
        ("nobody", "a1", "auth_failed", wire.CLOSE_AUTH_FAILED),  # not enrolled
        ("a3", "a3", "agent_disabled", wire.CLOSE_AGENT_DISABLED),
    ],
)
async def test_handshake_refused(
    env: Env, agent_id: str, key_of: str, code: str, close_code: int
) -> None:
    ws, _ = await open_agent(env, agent_id, env.keys[key_of])
    error, closed = await refusal(ws)
    assert (error.code, closed) == (code, close_code)
    assert f"refused {code} from agent '{agent_id}'" in env.server.log_text()


async def test_replayed_handshake_is_refused(env: Env) -> None:
    first, hello = await open_agent(env, "a1")
    assert isinstance(wire.server_message_decoder.decode(await first.recv()), wire.Welcome)
    await first.close()
    replay = await connect(env.server.url + "/ws/agent", compression=None, proxy=None)
    await replay.recv()  # a fresh challenge the old Hello cannot answer
    await replay.send(hello)
    error, closed = await refusal(replay)
    assert (error.code, closed) == ("auth_failed", wire.CLOSE_AUTH_FAILED)
    assert "replayed handshake" in error.message


async def test_stale_handshake_proof_is_refused(env: Env) -> None:
    ws = await connect(env.server.url + "/ws/agent", compression=None, proxy=None)
    challenge = wire.server_message_decoder.decode(await ws.recv())
    old = int(time.time()) - 3600  # made an hour ago: outside the handshake TTL
    proof = Fernet(env.keys["a1"]).encrypt_at_time(
        wire.encode(wire.HelloProof("a1", "boot1", challenge.nonce)), old
    )
    await ws.send(wire.encode(wire.Hello(agent_id="a1", boot_id="boot1", proof=proof)))
    error, closed = await refusal(ws)
    assert (error.code, closed) == ("auth_failed", wire.CLOSE_AUTH_FAILED)


async def test_silent_client_is_closed_after_the_handshake_timeout(env: Env) -> None:
    ws = await connect(env.server.url + "/ws/agent", compression=None, proxy=None)
    await ws.recv()
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == wire.CLOSE_HANDSHAKE_TIMEOUT


async def test_rotation_accepts_both_keys_until_finished(env: Env) -> None:
    old = env.registry.add("rot", "b1")
    new = env.registry.rotate("rot")
    for key in (old, new):
        ws, _ = await open_agent(env, "rot", key)
        assert isinstance(wire.server_message_decoder.decode(await ws.recv()), wire.Welcome)
        await ws.close()
    env.registry.retire_old_keys("rot")
    ws, _ = await open_agent(env, "rot", old)
    error, closed = await refusal(ws)
    assert (error.code, closed) == ("auth_failed", wire.CLOSE_AUTH_FAILED)
    ws, _ = await open_agent(env, "rot", new)
    assert isinstance(wire.server_message_decoder.decode(await ws.recv()), wire.Welcome)
    await ws.close()


# --- frames ------------------------------------------------------------------------------------


async def test_forged_frame_closes_only_that_connection(env: Env) -> None:
    before = env.stored()
    victim, bystander = await welcomed(env, "a1"), await welcomed(env, "a2")
    frame = bytearray(sealed_frame(env.keys["a1"], "a1", 1000))
    frame[-40] ^= 0x01  # one bit of the token's ciphertext
    await victim.send(bytes(frame))
    error, closed = await refusal(victim)
    assert (error.code, closed, error.seq) == ("forged_frame", wire.CLOSE_FORGED_FRAME, 1000)
    # Another key on a1's connection is forged too.
    victim = await welcomed(env, "a1")
    await victim.send(sealed_frame(env.keys["a2"], "a1", 1001))
    error, closed = await refusal(victim)
    assert (error.code, closed) == ("forged_frame", wire.CLOSE_FORGED_FRAME)
    assert env.stored() == before
    await bystander.send(sealed_frame(env.keys["a2"], "a2", 7))
    assert (await expect_ack(bystander, 7)).stored == 1
    await bystander.close()


def _alert_body() -> bytes:
    alert = {
        "type": "AlertOpened",
        "id": "x",
        "ts": 1.0,
        "branch": "b1",
        "alert_id": "x",
        "rule": "r",
        "entity": "e",
        "severity": "high",
        "title": "t",
    }
    return msgspec.msgpack.encode(
        {"agent_id": "a1", "boot_id": "boot1", "seq": 2000, "events": [alert]}
    )


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("malformed_msgpack", "malformed_batch"),
        ("unknown_event_type", "event_type_refused"),
        ("oversized_frame", "frame_too_large"),
        ("other_agents_events", "agent_id_mismatch"),
    ],
)
async def test_bad_frame_gets_an_error_and_the_connection_goes_on(
    env: Env, name: str, code: str
) -> None:
    before = env.stored()
    ws = await welcomed(env, "a1")
    key = env.keys["a1"]
    if name == "malformed_msgpack":
        frame = sealed_frame(key, "a1", 2000, body=b"\xc1 this is not msgpack")
    elif name == "unknown_event_type":
        frame = sealed_frame(key, "a1", 2000, [make_flow("a1", 0)], body=_alert_body())
    elif name == "oversized_frame":
        frame = wire.encode(
            wire.BatchFrame(boot_id="boot1", seq=2000, count=1, token=b"x" * (MAX_FRAME + 1))
        )
    else:
        frame = sealed_frame(key, "a1", 2000, [make_flow("a2", 0)])
    await ws.send(frame)
    error, closed = await refusal(ws)
    assert (error.code, closed, error.seq, error.retry) == (code, None, 2000, False)
    assert env.stored() == before
    assert f"refused {code} from agent 'a1'" in env.server.log_text()
    await ws.send(sealed_frame(key, "a1", 2001, boot_id=f"ok-{name}"))  # still served
    await expect_ack(ws, 2001)
    await ws.close()


async def test_branch_comes_from_the_registry_not_the_agent(env: Env) -> None:
    ws = await welcomed(env, "a1")
    flow = msgspec.structs.replace(make_flow("a1", 424242), branch="b2")
    await ws.send(sealed_frame(env.keys["a1"], "a1", 0, [flow], boot_id="branchtest"))
    await expect_ack(ws, 0)
    await ws.close()
    stored = [e for e in stored_events(env.server.data_dir) if e.id == flow.id]
    assert [e.branch for e in stored] == ["b1"]


# --- offline archives --------------------------------------------------------------------------


def agent_archive(env: Env, tmp_path: Path, count: int = 3) -> bytes:
    transport = AgentTransport(
        "a1",
        env.server.url,
        TransportConfig(key=env.keys["a1"], spool_dir=str(tmp_path / "spool"), batch_max_events=10),
    )
    now = time.time()
    for index in range(count * 10):
        transport.emit(make_flow("a1", 900_000 + index, now))
    transport.flush()
    path = seal_archive(
        transport.spool,
        transport.spool.entries(),
        agent_id="a1",
        fernet=transport._fernet,
        hour_start=0.0,
        hour_end=3600.0,
        now=now,
    )
    assert path is not None
    return path.read_bytes()


def rewrite(archive: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    """A copy of ``archive`` where the manifest entry becomes ``change(info, data)``'s entries."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            entries = (
                change(info, source.read(info))
                if info.filename == "manifest.json"
                else [(info, source.read(info))]
            )
            for new_info, data in entries:
                target.writestr(new_info, data)
    return out.getvalue()


def zip_slip(archive: bytes) -> bytes:
    def change(info, data):  # type: ignore[no-untyped-def]
        return [(info, data), (zipfile.ZipInfo("../../etc/evil.bin"), data)]

    return rewrite(archive, change)


def symlink_entry(archive: bytes) -> bytes:
    def change(info, data):  # type: ignore[no-untyped-def]
        link = zipfile.ZipInfo("batches/link-0000000001.bin")
        link.external_attr = 0o120777 << 16
        return [(info, data), (link, b"/etc/passwd")]

    return rewrite(archive, change)


def zip_bomb(archive: bytes) -> bytes:
    def change(info, data):  # type: ignore[no-untyped-def]
        bomb = zipfile.ZipInfo("batches/bomb-0000000001.bin")
        bomb.compress_type = zipfile.ZIP_DEFLATED
        return [(info, data), (bomb, b"\0" * 20_000_000)]

    return rewrite(archive, change)


def too_many_entries(archive: bytes) -> bytes:
    def change(info, data):  # type: ignore[no-untyped-def]
        return [(info, data)] + [
            (zipfile.ZipInfo(f"batches/x-{n:010d}.bin"), b"") for n in range(60)
        ]

    return rewrite(archive, change)


def encrypted_entry(archive: bytes) -> bytes:
    data = bytearray(archive)
    at = data.find(b"PK\x01\x02")  # the first central directory record: set "encrypted"
    flags = struct.unpack_from("<H", data, at + 8)[0]
    struct.pack_into("<H", data, at + 8, flags | 0x1)
    return bytes(data)


def overlapping_entries(archive: bytes) -> bytes:
    data = bytearray(archive)
    first = data.find(b"PK\x01\x02")
    second = data.find(b"PK\x01\x02", first + 4)
    offset = struct.unpack_from("<L", data, first + 42)[0]
    struct.pack_into("<L", data, second + 42, offset)  # the second entry reuses the first's bytes
    return bytes(data)


def truncated(archive: bytes) -> bytes:
    return archive[: len(archive) // 2]


@pytest.mark.parametrize(
    ("hostile", "status", "code"),
    [
        (zip_bomb, 400, "compression_ratio"),
        (zip_slip, 400, "unsafe_path"),
        (symlink_entry, 400, "symlink_entry"),
        (truncated, 400, "bad_archive"),
        (encrypted_entry, 400, "encrypted_entry"),
        (overlapping_entries, 400, "overlapping_entries"),
        (too_many_entries, 400, "too_many_entries"),
        (lambda archive: archive + b"\0" * 2_000_000, 413, "body_too_large"),
    ],
)
def test_hostile_archive_is_refused_and_stores_nothing(
    env: Env, tmp_path: Path, hostile, status: int, code: str
) -> None:  # type: ignore[no-untyped-def]
    before = env.stored()
    body = hostile(agent_archive(env, tmp_path))
    response = httpx.post(
        f"{env.server.http_url}/api/v1/ingest/archive",
        content=body,
        headers={"X-Netmon-Agent": "a1"},
        timeout=30,
    )
    assert (response.status_code, response.json()["error"]) == (status, code), response.text
    assert response.json()["detail"]
    assert env.stored() == before
    assert f"archive from agent 'a1' (127.0.0.1) refused: {code}" in env.server.log_text()


@pytest.mark.parametrize(
    ("agent_id", "status", "code"),
    [("a2", 403, "bad_signature"), ("nobody", 401, "auth_failed"), ("a3", 403, "agent_disabled")],
)
def test_archive_of_another_agent_is_refused(
    env: Env, tmp_path: Path, agent_id: str, status: int, code: str
) -> None:
    before = env.stored()
    response = httpx.post(
        f"{env.server.http_url}/api/v1/ingest/archive",
        content=agent_archive(env, tmp_path),
        headers={"X-Netmon-Agent": agent_id},
        timeout=30,
    )
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert env.stored() == before
