"""Builders shared by the store tests: small valid events with predictable ids."""

from __future__ import annotations

from pathlib import Path

from netmon.storage.contract.events import FlowObserved
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from netmon.storage.segment_index import read_index

DAY = 86_400.0
T0 = 1_763_683_200.0  # 2025-11-21T00:00:00Z


def flow(
    event_id: str,
    *,
    ts: float = T0 + 3600,
    branch: str = "main",
    src_ip: str = "10.0.0.1",
    dst_ip: str = "192.0.2.10",
    dst_port: int = 443,
    domain: str = "",
) -> FlowObserved:
    """A FlowObserved with just enough fields to be told apart."""
    return FlowObserved(
        id=event_id,
        ts=ts,
        branch=branch,
        agent_id="agent-1",
        first_seen=ts - 1.0,
        last_seen=ts,
        src_ip=src_ip,
        src_port=40_000,
        dst_ip=dst_ip,
        dst_port=dst_port,
        protocol=6,
        src2dst_packets=3,
        src2dst_bytes=180,
        domain=domain,
    )


def assert_postings_match_lines(segment: Path) -> None:
    """Every IP's line offsets in the sidecar point at exactly the lines that mention it."""
    index = read_index(segment)
    assert index is not None, f"{segment} is not sealed"
    data = segment.read_bytes()
    assert index.size == len(data)
    starts = [0] + [i + 1 for i, byte in enumerate(data[:-1]) if byte == 0x0A]
    for ip in index.ips:
        needle = b'"' + ip.encode() + b'"'
        expected = [start for start in starts if needle in data[start : data.index(b"\n", start)]]
        assert index.lines_of(ip) == expected, ip


def read_all(
    reader: EventLogReader, position: Position, max_events: int = 1_000
) -> tuple[list[object], Position]:
    """Every event after ``position`` by repeated ``read_new``, and the position at the end."""
    events: list[object] = []
    while True:
        batch, position = reader.read_new(position, max_events)
        if not batch:
            return events, position
        events.extend(batch)
