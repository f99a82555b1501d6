"""Batch codecs against a real server process: zstd (the default) and zlib (agents before zstd)
are both stored; hostile zstd inside an authentic token is refused within ``max_batch_bytes``."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard
from cryptography.fernet import Fernet

from netmon.agent.config import AgentConfigError, parse_agent_config
from netmon.agent.transport import AgentTransport, TransportConfig, TransportError
from netmon.app.ingest.frames import ZSTD_MAGIC
from netmon.storage.agents import AgentRegistry
from netmon.storage.contract import wire
from tests.conftest import REPO_ROOT
from tests.transport.conftest import ServerProcess, flow_counts, make_flow
from tests.transport.test_bad_input import Env, expect_ack, refusal, welcomed

MAX_BATCH = 1_000_000  # small, so a bomb past it is cheap to make and to refuse


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("codecs")
    secret = Fernet.generate_key().decode()
    registry = AgentRegistry(root / "data", secret)
    keys = {"a1": registry.add("a1", "b1")}
    server = ServerProcess(root, secret, max_batch_bytes=MAX_BATCH)
    server.start()
    yield Env(server, keys, root, registry)
    server.stop()


def spool_codecs(transport: AgentTransport, key: str) -> list[str]:
    """Which codec each spooled batch's (decrypted) payload uses, in spool order."""
    codecs = []
    for entry in transport.spool.entries():
        batch = transport.spool.read(entry)
        assert batch is not None
        token = wire.batch_frame_decoder.decode(batch.frame).token
        payload = Fernet(key).decrypt(token)
        codecs.append("zstd" if payload.startswith(ZSTD_MAGIC) else "zlib")
    return codecs


async def test_zlib_and_zstd_batches_from_one_agent_are_both_stored(
    env: Env, tmp_path: Path
) -> None:
    key, spool = env.keys["a1"], str(tmp_path / "spool")
    # An agent from before zstd spools a batch while offline; the upgraded agent, on the same
    # spool, adds a zstd batch and delivers both.
    old = AgentTransport(
        "a1", env.server.url, TransportConfig(key=key, spool_dir=spool, compression="zlib")
    )
    for index in range(0, 10):
        old.emit(make_flow("a1", 700_000 + index))
    old.flush()
    new = AgentTransport("a1", env.server.url, TransportConfig(key=key, spool_dir=spool))
    for index in range(10, 20):
        new.emit(make_flow("a1", 700_000 + index))
    new.flush()
    assert spool_codecs(new, key) == ["zlib", "zstd"]
    stop = asyncio.Event()
    runner = asyncio.create_task(new.run(stop))
    assert await new.drain(30), f"spool not drained: {len(new.spool)} batches left"
    stop.set()
    await runner
    counts = flow_counts(env.server.data_dir)
    assert [counts[700_000 + index] for index in range(20)] == [1] * 20


def zstd_frame(data: bytes, *, content_size: bool = True, window_log: int = 0) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(
        19, window_log=window_log, write_content_size=content_size, write_checksum=False
    )
    compressor = zstandard.ZstdCompressor(compression_params=params)
    if content_size:
        return compressor.compress(data)
    # Streamed: the size stays unknown, so zstd keeps the window asked for instead of fitting it.
    stream = compressor.compressobj()
    return stream.compress(data) + stream.flush()


def claiming(size: int, data: bytes) -> bytes:
    """A zstd frame of ``data`` whose header claims ``size`` bytes of content (a lie)."""
    frame = zstd_frame(data, content_size=False)
    descriptor = frame[4]
    assert descriptor & 0xE0 == 0  # no content size field, not single-segment: a window byte
    # Content size flag 2: a 4-byte little-endian size after the window descriptor.
    return frame[:4] + bytes([descriptor | 0x80]) + frame[5:6] + struct.pack("<I", size) + frame[6:]


BOMB = b"\0" * (MAX_BATCH + 1)
GOOD = wire.encode(wire.BatchBody("a1", "boot1", 3000, [make_flow("a1", 1)]))

HOSTILE: dict[str, tuple[Callable[[], bytes], str, str]] = {
    # name: (payload inside the token, refusal code, words of the message)
    "bomb": (lambda: zstd_frame(BOMB), "batch_too_large", "its zstd header says"),
    "bomb_without_size": (  # a window within the limit: only the read bound stops it
        lambda: zstd_frame(BOMB, content_size=False, window_log=19),
        "batch_too_large",
        "inflates to more than",
    ),
    "header_claims_4_gib": (lambda: claiming(2**32 - 1, GOOD), "batch_too_large", "header says"),
    "header_claims_100_bytes": (lambda: claiming(100, BOMB), "malformed_batch", "not zstd data"),
    "window_past_limit": (
        lambda: zstd_frame(BOMB[: MAX_BATCH // 2], content_size=False, window_log=23),
        "batch_too_large",
        "window",
    ),
    "garbage_after_magic": (lambda: ZSTD_MAGIC + b"not a zstd frame", "malformed_batch", ""),
    "truncated": (lambda: zstd_frame(GOOD)[:-4], "malformed_batch", "frame ends after"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_zstd_is_refused_and_the_connection_goes_on(env: Env, name: str) -> None:
    make, code, words = HOSTILE[name]
    before = sum(flow_counts(env.server.data_dir).values())
    ws = await welcomed(env, "a1")
    token = Fernet(env.keys["a1"]).encrypt(make())  # authentic: only the inflate can refuse it
    await ws.send(wire.encode(wire.BatchFrame(boot_id="boot1", seq=3000, count=1, token=token)))
    error, closed = await refusal(ws)
    assert (error.code, closed, error.seq, error.retry) == (code, None, 3000, False), error
    assert words in error.message
    if code == "malformed_batch":
        assert error.message.startswith("batch is not zstd data: ")
    assert sum(flow_counts(env.server.data_dir).values()) == before
    assert f"refused {code} from agent 'a1'" in env.server.log_text()
    boot = f"ok-{name}"  # still served, in either codec
    for seq, compress in enumerate((zstandard.ZstdCompressor().compress, zlib.compress)):
        body = wire.encode(wire.BatchBody("a1", boot, seq, [make_flow("a1", 800_000 + seq)]))
        token = Fernet(env.keys["a1"]).encrypt(compress(body))
        await ws.send(wire.encode(wire.BatchFrame(boot_id=boot, seq=seq, count=1, token=token)))
        assert (await expect_ack(ws, seq)).stored == 1
    await ws.close()


def test_an_unknown_codec_or_level_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r"transport\.compression"):
        parse_agent_config({"transport": {"compression": "lz4"}})
    key = Fernet.generate_key().decode()
    for setting, message in (
        ({"zstd_level": 23}, "zstd_level 23"),
        ({"compression": "zlib", "zlib_level": 10}, "zlib_level must be"),
    ):
        config = TransportConfig(key=key, spool_dir=str(tmp_path), **setting)  # type: ignore[arg-type]
        with pytest.raises(TransportError, match=message):
            AgentTransport("a1", "ws://127.0.0.1:9", config)
    # `netmon agent run` says so and exits 2 before capturing anything.
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'server_url = "ws://127.0.0.1:9"\n[transport]\nkey = "{key}"\nzstd_level = 99\n'
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "netmon.app.cli",
            "agent",
            "run",
            "--config",
            str(toml),
            "--pcap",
            "none.pcap",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2 and "transport.zstd_level 99" in run.stderr, run.stderr
