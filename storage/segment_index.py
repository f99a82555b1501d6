"""Sidecar indexes of sealed segments: what a search needs to skip a segment unopened.

When a segment is sealed (rolled by size, by midnight, on close, or after a crash) the writer
writes ``WRITER-NNNNNNNN.jsonl.idx`` next to it: the time range, counts per event type, and the
sorted sets of IPs, ports and domains of its flows and detections. Sets are exact (not Bloom
filters): a segment of 64 MiB holds ~120k flows but rarely more than a few thousand distinct
values, and an exact set also answers "which segments mention X" without false positives.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import msgspec

from storage.events import DetectionRaised, Event, FlowObserved, json_decoder
from storage.segments import INDEX_SUFFIX

log = logging.getLogger("netmon.storage")

INDEX_VERSION = 1


class SegmentIndex(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The sidecar of one sealed segment."""

    segment: str  # relative to DATA/events
    size: int  # bytes of the sealed segment
    events: int
    min_ts: float = 0.0
    max_ts: float = 0.0
    types: dict[str, int] = {}
    ips: list[str] = []
    ports: list[int] = []
    domains: list[str] = []
    malformed_lines: int = 0
    version: int = INDEX_VERSION


index_encoder = msgspec.json.Encoder()
index_decoder = msgspec.json.Decoder(SegmentIndex)


class IndexBuilder:
    """Accumulates the index of an open segment as batches are appended to it."""

    __slots__ = ("events", "min_ts", "max_ts", "types", "ips", "ports", "domains", "malformed")

    def __init__(self) -> None:
        self.events = 0
        self.min_ts = float("inf")
        self.max_ts = float("-inf")
        self.types: dict[str, int] = {}
        self.ips: set[str] = set()
        self.ports: set[int] = set()
        self.domains: set[str] = set()
        self.malformed = 0

    def add(self, events: Iterable[Event]) -> None:
        """Count ``events`` into the index."""
        types = self.types
        ips, ports, domains = self.ips, self.ports, self.domains
        count = 0
        low, high = self.min_ts, self.max_ts
        for event in events:
            count += 1
            ts = event.ts
            if ts < low:
                low = ts
            if ts > high:
                high = ts
            name = type(event).__name__
            types[name] = types.get(name, 0) + 1
            if isinstance(event, FlowObserved | DetectionRaised):
                ips.add(event.src_ip)
                ips.add(event.dst_ip)
                ports.add(event.src_port)
                ports.add(event.dst_port)
                if event.domain:
                    domains.add(event.domain)
        self.events += count
        self.min_ts, self.max_ts = low, high

    def build(self, segment: str, size: int) -> SegmentIndex:
        """The frozen index of the segment sealed at ``size`` bytes."""
        empty = self.events == 0
        return SegmentIndex(
            segment=segment,
            size=size,
            events=self.events,
            min_ts=0.0 if empty else self.min_ts,
            max_ts=0.0 if empty else self.max_ts,
            types=dict(sorted(self.types.items())),
            ips=sorted(self.ips),
            ports=sorted(self.ports),
            domains=sorted(self.domains),
            malformed_lines=self.malformed,
        )


def index_path(segment_path: Path) -> Path:
    """The sidecar file of a segment."""
    return segment_path.with_name(segment_path.name + INDEX_SUFFIX)


def build_index_from_file(segment_path: Path, segment: str) -> SegmentIndex:
    """Index a segment by decoding it (used when a crash left it unsealed)."""
    builder = IndexBuilder()
    data = segment_path.read_bytes()
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            builder.add((json_decoder.decode(line),))
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            builder.malformed += 1
            log.error("malformed line %s:%d while indexing: %s", segment_path, number, error)
    return builder.build(segment, len(data))


def write_index(segment_path: Path, index: SegmentIndex, *, fsync: bool) -> None:
    """Write the sidecar atomically (temp file + rename), so a reader never sees half of it."""
    final = index_path(segment_path)
    temp = final.with_name(final.name + ".tmp")
    with temp.open("wb") as handle:
        handle.write(index_encoder.encode(index))
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
    os.replace(temp, final)


def read_index(segment_path: Path) -> SegmentIndex | None:
    """The sidecar of a segment, or None when it is unsealed or the sidecar is unreadable."""
    try:
        data = index_path(segment_path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return index_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        log.error("ignoring unreadable index %s: %s", index_path(segment_path), error)
        return None
