"""Exactly-once delivery with real processes: a uvicorn server subprocess, the real transport."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from netmon.agent.offline_zip import seal_archive
from netmon.agent.transport import AgentTransport, TransportConfig
from netmon.storage.contract.events import Detection, DetectionRaised, GapReported, new_event_id
from tests.conftest import REPO_ROOT
from tests.polling import wait_until
from tests.transport.conftest import flow_counts, make_flow, stored_events


def transport_for(
    server_url: str, key: str, spool: Path, agent_id: str = "a1", **overrides: object
) -> AgentTransport:
    settings = {
        "batch_max_events": 500,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.3,
        "hour_check_s": 0.02,
        **overrides,
    }
    config = TransportConfig(key=key, spool_dir=str(spool), **settings)  # type: ignore[arg-type]
    return AgentTransport(agent_id, server_url, config, **({}))


async def poll(condition, within_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def emit_range(transport: AgentTransport, start: int, stop: int) -> None:
    now = time.time()
    for index in range(start, stop):
        transport.emit(make_flow(transport.agent_id, index, now))


async def test_server_killed_mid_stream_stores_every_flow_exactly_once(
    make_server, registry, tmp_path
):
    key = registry.add("a1", "b1")
    server = make_server().start()
    transport = transport_for(server.url, key, tmp_path / "spool", batch_max_events=1000)
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    total = 100_000
    emitter = asyncio.create_task(asyncio.to_thread(emit_range, transport, 0, total))
    await poll(
        lambda: transport.stats.events_acked >= total // 2, 60, "half the flows acknowledged"
    )
    server.kill9()
    acked_at_kill = transport.stats.events_acked
    await emitter
    server.start()
    transport.server_url = server.url  # in case the first start had to move port
    assert await transport.drain(90), f"spool not drained: {len(transport.spool)} batches left"
    stop.set()
    await runner
    counts = flow_counts(server.data_dir)
    assert acked_at_kill < total
    assert len(counts) == total and set(counts.values()) == {1}, (
        f"{total - len(counts)} flows missing, {sum(1 for c in counts.values() if c > 1)} doubled"
    )
    assert all(event.branch == "b1" for event in stored_events(server.data_dir))


async def test_two_offline_hours_become_two_archives_uploaded_when_back(
    make_server, registry, tmp_path
):
    key = registry.add("a1", "b1")
    server = make_server()  # not started: the server is unreachable
    hour = 3600.0 * int(time.time() // 3600)
    fake_now = [hour + 600.0]
    transport = AgentTransport(
        "a1",
        server.url,
        TransportConfig(
            key=key,
            spool_dir=str(tmp_path / "spool"),
            batch_max_events=100,
            backoff_base_s=0.05,
            backoff_cap_s=0.2,
            hour_check_s=0.02,
        ),
        clock=lambda: fake_now[0],
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    for part in range(2):
        emit_range(transport, part * 300, part * 300 + 300)
        transport.flush()
        assert len(transport.spool) == 3
        fake_now[0] += 3600.0  # the top of the next hour passes while offline
        await poll(
            lambda p=part: transport.stats.archives_sealed == p + 1, 10, f"archive {part + 1}"
        )
        assert len(transport.spool) == 0
    assert len(transport.spool.outbox()) == 2
    emit_range(transport, 600, 700)  # this hour's flows stay in the spool for the WebSocket
    transport.flush()
    server.start()
    transport.server_url = server.url  # in case the first start had to move port
    assert await transport.drain(30)
    stop.set()
    await runner
    assert transport.stats.archives_uploaded == 2
    counts = flow_counts(server.data_dir)
    assert sorted(counts) == list(range(700)) and set(counts.values()) == {1}
    assert not list((tmp_path / "spool" / "batches").iterdir())
    assert not transport.spool.outbox()
    assert server.log_text().count('POST /api/v1/ingest/archive HTTP/1.1" 200') == 2


async def test_same_archive_uploaded_twice_stores_nothing_the_second_time(
    make_server, registry, tmp_path
):
    key = registry.add("a1", "b1")
    server = make_server().start()
    transport = transport_for(server.url, key, tmp_path / "spool", batch_max_events=50)
    emit_range(transport, 0, 200)
    transport.flush()
    path = seal_archive(
        transport.spool,
        transport.spool.entries(),
        agent_id="a1",
        fernet=transport._fernet,
        hour_start=0.0,
        hour_end=3600.0,
        now=time.time(),
    )
    assert path is not None
    body = path.read_bytes()
    headers = {"X-Netmon-Agent": "a1"}
    async with httpx.AsyncClient() as client:
        first = await client.post(
            f"{server.http_url}/api/v1/ingest/archive", content=body, headers=headers
        )
        second = await client.post(
            f"{server.http_url}/api/v1/ingest/archive", content=body, headers=headers
        )
    assert first.status_code == 200, first.text
    assert first.json() == {
        "batches": 4,
        "stored_batches": 4,
        "duplicate_batches": 0,
        "events_stored": 200,
    }
    assert second.json() == {
        "batches": 4,
        "stored_batches": 0,
        "duplicate_batches": 4,
        "events_stored": 0,
    }
    counts = flow_counts(server.data_dir)
    assert len(counts) == 200 and set(counts.values()) == {1}


def test_agent_killed_mid_stream_loses_and_doubles_nothing(make_server, registry, tmp_path):
    key = registry.add("a1", "b1")
    server = make_server().start()
    total = 20_000
    command = [
        sys.executable,
        "-m",
        "tests.transport.agent_proc",
        server.url,
        key,
        "a1",
        str(tmp_path / "spool"),
        str(total),
    ]
    first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_until(
            lambda: len(stored_events(server.data_dir)) >= 3000,
            60,
            "the agent to be mid-stream",
            0.05,
        )
        first.kill()  # SIGKILL
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert len(flow_counts(server.data_dir)) < total
    second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=120)
    assert second.returncode == 0, second.stdout.decode()[-2000:]
    assert b"resuming at 0" not in second.stdout
    counts = flow_counts(server.data_dir)
    assert sorted(counts) == list(range(total)), f"{total - len(counts)} flows missing"
    assert set(counts.values()) == {1}, f"{sum(1 for c in counts.values() if c > 1)} flows doubled"


async def test_detection_leaves_without_waiting_for_the_batch(make_server, registry, tmp_path):
    key = registry.add("a1", "b1")
    server = make_server().start()
    # Flows alone would wait 60 s; the detection must take them along almost at once.
    transport = transport_for(server.url, key, tmp_path / "spool", batch_max_delay_s=60.0)
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    await poll(lambda: transport.connected, 10, "connection")
    emit_range(transport, 0, 5)
    now = time.time()
    transport.emit(
        DetectionRaised(
            id=new_event_id(now),
            ts=now,
            branch="",
            agent_id="a1",
            flow_id=new_event_id(now),
            src_ip="10.0.0.1",
            src_port=5555,
            dst_ip="10.0.0.2",
            dst_port=23,
            protocol=6,
            detection=Detection(
                kind="critical_port", detail="Telnet (23/tcp)", severity="critical"
            ),
        )
    )
    await poll(lambda: transport.stats.events_acked == 6, 10, "the detection's batch acknowledged")
    stop.set()
    await runner
    kinds = [type(event).__name__ for event in stored_events(server.data_dir)]
    assert kinds.count("DetectionRaised") == 1 and kinds.count("FlowObserved") == 5


async def test_spool_cap_drops_oldest_and_reports_the_gap(make_server, registry, tmp_path):
    key = registry.add("a1", "b1")
    server = make_server()
    transport = transport_for(
        server.url,
        key,
        tmp_path / "spool",
        batch_max_events=100,
        spool_max_bytes=20_000,
        offline_archives=False,
    )
    for part in range(10):  # server down: 10 batches, the cap keeps only the newest few
        emit_range(transport, part * 100, part * 100 + 100)
        transport.flush()
    dropped = transport.spool.dropped_batches
    assert 0 < dropped < 10
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    server.start()
    transport.server_url = server.url  # in case the first start had to move port
    assert await transport.drain(30)
    stop.set()
    await runner
    events = stored_events(server.data_dir)
    gaps = [event for event in events if isinstance(event, GapReported)]
    assert len(gaps) == 1
    assert (gaps[0].first_seq, gaps[0].last_seq, gaps[0].batches_dropped) == (
        0,
        dropped - 1,
        dropped,
    )
    assert gaps[0].events_dropped == dropped * 100 and gaps[0].branch == "b1"
    assert sorted(flow_counts(server.data_dir)) == list(range(dropped * 100, 1000))


async def test_batches_without_detection_leave_after_the_batch_delay(
    make_server, registry, tmp_path
):
    key = registry.add("a1", "b1")
    server = make_server().start()
    transport = transport_for(server.url, key, tmp_path / "spool", batch_max_delay_s=0.2)
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    emit_range(transport, 0, 3)  # far from a full batch, never flushed by hand
    await poll(lambda: transport.stats.events_acked == 3, 10, "the partial batch acknowledged")
    stop.set()
    await runner
    assert sorted(flow_counts(server.data_dir)) == [0, 1, 2]


async def test_replicas_sharing_a_data_dir_store_a_batch_once(make_server, registry, tmp_path):
    """The agent fails over from r1 to r2 and resends everything: r2 acknowledges duplicates."""
    from websockets.asyncio.client import connect

    from netmon.storage.contract import wire

    key = registry.add("a1", "b1")
    first, second = make_server("r1").start(), make_server("r2").start()
    transport = transport_for(first.url, key, tmp_path / "spool", batch_max_events=100)
    emit_range(transport, 0, 1000)
    transport.flush()
    frames = [transport.spool.read(entry).frame for entry in transport.spool.entries()]  # type: ignore[union-attr]
    acks: dict[str, list[wire.Ack]] = {}
    for server in (first, second):
        async with connect(server.url + "/ws/agent", compression=None, proxy=None) as ws:
            challenge = wire.server_message_decoder.decode(await ws.recv())
            proof = transport._fernet.encrypt(
                wire.encode(wire.HelloProof("a1", transport.boot_id, challenge.nonce))
            )
            await ws.send(
                wire.encode(wire.Hello(agent_id="a1", boot_id=transport.boot_id, proof=proof))
            )
            assert isinstance(wire.server_message_decoder.decode(await ws.recv()), wire.Welcome)
            for frame in frames:
                await ws.send(frame)
            acks[server.url] = [wire.server_message_decoder.decode(await ws.recv()) for _ in frames]
    assert [ack.duplicate for ack in acks[first.url]] == [False] * 10
    assert [ack.duplicate for ack in acks[second.url]] == [True] * 10
    counts = flow_counts(first.data_dir)
    assert len(counts) == 1000 and set(counts.values()) == {1}


async def test_a_refused_batch_is_set_aside_and_the_rest_delivered(make_server, registry, tmp_path):
    key = registry.add("a1", "b1")
    server = make_server().start()
    transport = transport_for(server.url, key, tmp_path / "spool", batch_max_events=10)
    emit_range(transport, 0, 10)
    for index in range(10, 20):  # a batch claiming another agent's events: refused for good
        transport.emit(make_flow("a2", index))
    emit_range(transport, 20, 30)
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    assert await transport.drain(30)
    stop.set()
    await runner
    assert transport.stats.rejected == 1
    assert sorted(flow_counts(server.data_dir)) == list(range(10)) + list(range(20, 30))
    rejected = sorted(path.name for path in (tmp_path / "spool" / "rejected").iterdir())
    assert len(rejected) == 2 and rejected[1].endswith(".reason")
    assert "agent_id_mismatch" in (tmp_path / "spool" / "rejected" / rejected[1]).read_text()


async def test_a_stalled_server_is_left_and_nothing_is_lost_or_doubled(
    make_server, registry, tmp_path
):
    """SIGSTOP: the TCP connection stays up but nothing answers; pings are off, so only the
    acknowledgement timeout can notice. After SIGCONT everything is stored exactly once."""
    import signal

    key = registry.add("a1", "b1")
    server = make_server().start()
    transport = transport_for(
        server.url,
        key,
        tmp_path / "spool",
        batch_max_events=200,
        ack_timeout_s=1.0,
        ping_interval_s=None,
        handshake_timeout_s=2.0,
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    emit_range(transport, 0, 2000)
    await poll(lambda: transport.stats.events_acked > 0, 30, "first acknowledgements")
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        emit_range(transport, 2000, 4000)
        transport.flush()
        await poll(
            lambda: not transport.connected, 30, "the agent to give up on the stalled server"
        )
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert await transport.drain(60)
    stop.set()
    await runner
    counts = flow_counts(server.data_dir)
    assert sorted(counts) == list(range(4000)) and set(counts.values()) == {1}
