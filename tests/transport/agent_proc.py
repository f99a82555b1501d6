"""A real agent process for the kill -9 test: a resumable synthetic source -> AgentTransport.

    python -m tests.transport.agent_proc URL KEY AGENT_ID SPOOL_DIR TOTAL

Flow ``i`` is emitted with cursor ``i``; on start the source resumes after the spool's cursor,
so a killed and restarted agent neither skips nor repeats a spooled flow. Exits 0 once every
batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import sys
import time

from netmon.agent.transport import AgentTransport, TransportConfig
from tests.transport.conftest import make_flow

CHUNK = 250
PAUSE_S = 0.02  # keeps the stream going long enough to be killed in the middle


async def main(url: str, key: str, agent_id: str, spool_dir: str, total: int) -> int:
    config = TransportConfig(
        key=key, spool_dir=spool_dir, batch_max_events=200, backoff_base_s=0.05, backoff_cap_s=0.5
    )
    transport = AgentTransport(agent_id, url, config)
    stop = asyncio.Event()
    runner = asyncio.create_task(transport.run(stop))
    start = transport.resume_cursor() + 1
    print(f"resuming at {start}", flush=True)
    for chunk_start in range(start, total, CHUNK):
        now = time.time()
        for index in range(chunk_start, min(chunk_start + CHUNK, total)):
            transport.emit(make_flow(agent_id, index, now), cursor=index)
        await asyncio.sleep(PAUSE_S)
    drained = await transport.drain(60)
    stop.set()
    await runner
    print(f"drained={drained} acked={transport.stats.events_acked}", flush=True)
    return 0 if drained else 1


if __name__ == "__main__":
    url, key, agent_id, spool_dir, total = sys.argv[1:6]
    raise SystemExit(asyncio.run(main(url, key, agent_id, spool_dir, int(total))))
