"""Sidecar indexes of sealed segments: what a search needs to skip a segment unopened.

When a segment is sealed (rolled by size, by midnight, on close, or after a crash) the writer
writes ``WRITER-NNNNNNNN.jsonl.idx`` next to it: the time range, counts per event type, and the
sorted sets of IPs, ports and domains of its flows and detections. Sets are exact (not Bloom
filters): a segment of 64 MiB holds ~80k flows but rarely more than a few thousand distinct
values, and an exact set also answers "which segments mention X" without false positives.

It also holds, per IP, the byte offsets of the lines that mention it (``ip_lines``, little-endian
unsigned integers of ``line_offset_bytes`` each, base64 in the JSON): a search for an IP that is
in every segment then reads just those lines instead of scanning the whole file (about 1% of the
segment's size for two IPs per flow).
"""

from __future__ import annotations

import logging
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any, Union

import msgspec

from netmon.storage.contract.events import EVENT_TYPES, DetectionRaised, Event, FlowObserved
from netmon.storage.contract.files import write_atomically
from netmon.storage.segments import INDEX_SUFFIX, manifest_path, parse_manifest_lines

log = logging.getLogger("netmon.storage")

INDEX_VERSION = 2  # 2: ip_lines added
INDEX_CHUNK = 8 * 1024 * 1024  # bytes decoded at once when indexing a file (bounds memory)
# msgspec reports invalid UTF-8 (a corrupted byte) as UnicodeDecodeError
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


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
    # {ip: packed offsets}, left undecoded (msgspec skips it at memory speed) until a search
    # for one IP needs it: most sidecars are read only to be ruled out.
    ip_lines: msgspec.Raw = msgspec.Raw(b"{}")
    line_offset_bytes: int = 4

    @property
    def has_line_offsets(self) -> bool:
        """Whether ``lines_of`` can be trusted (sidecars of version 1 did not record them)."""
        return self.version >= 2

    def lines_of(self, ip: str) -> list[int]:
        """Start offsets of the lines mentioning ``ip`` (empty when none or not recorded)."""
        packed = ip_lines_decoder.decode(self.ip_lines).get(ip)
        if not packed:
            return []
        offsets = array("I" if self.line_offset_bytes == 4 else "Q")
        offsets.frombytes(packed)
        if sys.byteorder == "big":
            offsets.byteswap()
        return offsets.tolist()


_INDEXED_FIELDS = frozenset(("ts", "src_ip", "dst_ip", "src_port", "dst_port", "domain"))


def _lean(kind: type[Event]) -> type[msgspec.Struct]:
    """``kind`` with only the fields an index reads, under the same name and tag: a line
    decodes into it about twice as fast as into the full event (msgspec skips the rest)."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        (f.name, f.type) if f.required else (f.name, f.type, f.default)
        for f in msgspec.structs.fields(kind)
        if f.name in _INDEXED_FIELDS
    ]
    config = kind.__struct_config__
    return msgspec.defstruct(
        kind.__name__, fields, tag=config.tag, tag_field=config.tag_field, kw_only=True, gc=False
    )


_LEAN = {kind: _lean(kind) for kind in EVENT_TYPES}
# Lines of a file being indexed: a line is malformed when its JSON, its type or one of the
# indexed fields does not decode (a reader decoding the full event logs any other fault).
_lean_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[tuple(_LEAN.values())])  # noqa: UP007
# The events that carry IPs and ports, appended (full) or read back from a file (lean)
_FLOW_TYPES = frozenset(
    (FlowObserved, DetectionRaised, _LEAN[FlowObserved], _LEAN[DetectionRaised])
)
_TS = attrgetter("ts")
_SRC_IP, _DST_IP = attrgetter("src_ip"), attrgetter("dst_ip")
_SRC_PORT, _DST_PORT = attrgetter("src_port"), attrgetter("dst_port")
_DOMAIN = attrgetter("domain")

index_encoder = msgspec.json.Encoder()
index_decoder = msgspec.json.Decoder(SegmentIndex)
ip_lines_decoder = msgspec.json.Decoder(dict[str, bytes])


class IndexBuilder:
    """Accumulates the index of an open segment as batches are appended to it."""

    __slots__ = ("events", "min_ts", "max_ts", "types", "ip_lines", "ports", "domains", "malformed")

    def __init__(self) -> None:
        self.events = 0
        self.min_ts = float("inf")
        self.max_ts = float("-inf")
        self.types: dict[str, int] = {}
        self.ip_lines: dict[str, list[int]] = {}
        self.ports: set[int] = set()
        self.domains: set[str] = set()
        self.malformed = 0

    def add(self, events: Sequence[Any], lines: bytes, start: int) -> None:
        """Count ``events``, encoded as ``lines`` written at offset ``start``, into the index.

        Runs on every append, so the per-event work is left to C where it can be (map,
        Counter, set.update); only line offsets and the IP -> lines grouping are Python loops.
        """
        if not events:
            return
        self.events += len(events)
        stamps = list(map(_TS, events))
        self.min_ts = min(self.min_ts, min(stamps))
        self.max_ts = max(self.max_ts, max(stamps))
        kinds = Counter(map(type, events))
        for kind, count in kinds.items():
            self.types[kind.__name__] = self.types.get(kind.__name__, 0) + count
        starts = _line_starts(lines, start, len(events))
        if all(kind in _FLOW_TYPES for kind in kinds):
            flows: Sequence[Event] = events
        else:
            picked = [
                (e, at) for e, at in zip(events, starts, strict=True) if type(e) in _FLOW_TYPES
            ]
            flows = [e for e, _ in picked]
            starts = [at for _, at in picked]
        if not flows:
            return
        self.ports.update(map(_SRC_PORT, flows))
        self.ports.update(map(_DST_PORT, flows))
        self.domains.update(map(_DOMAIN, flows))
        self.domains.discard("")
        ip_lines = self.ip_lines
        get = ip_lines.get
        for src, dst, at in zip(map(_SRC_IP, flows), map(_DST_IP, flows), starts, strict=False):
            offsets = get(src)
            if offsets is None:
                ip_lines[src] = [at]
            else:
                offsets.append(at)
            if dst != src:
                offsets = get(dst)
                if offsets is None:
                    ip_lines[dst] = [at]
                else:
                    offsets.append(at)

    def build(self, segment: str, size: int) -> SegmentIndex:
        """The frozen index of the segment sealed at ``size`` bytes."""
        empty = self.events == 0
        width = 4 if size < 2**32 else 8
        ips = sorted(self.ip_lines)
        return SegmentIndex(
            segment=segment,
            size=size,
            events=self.events,
            min_ts=0.0 if empty else self.min_ts,
            max_ts=0.0 if empty else self.max_ts,
            types=dict(sorted(self.types.items())),
            ips=ips,
            ports=sorted(self.ports),
            domains=sorted(self.domains),
            malformed_lines=self.malformed,
            version=INDEX_VERSION,
            ip_lines=msgspec.Raw(
                index_encoder.encode({ip: _pack(self.ip_lines[ip], width) for ip in ips})
            ),
            line_offset_bytes=width,
        )


def _line_starts(lines: bytes, start: int, count: int) -> list[int]:
    """Offsets of the ``count`` lines in ``lines`` once written at ``start`` (a ``find`` loop
    beats splitting: it copies nothing)."""
    starts = []
    find = lines.find
    cursor = 0
    for _ in range(count):
        starts.append(start + cursor)
        cursor = find(b"\n", cursor) + 1
    return starts


def _pack(offsets: list[int], width: int) -> bytes:
    packed = array("I" if width == 4 else "Q", offsets)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def index_path(segment_path: Path) -> Path:
    """The sidecar file of a segment."""
    return segment_path.with_name(segment_path.name + INDEX_SUFFIX)


def build_index_from_file(segment_path: Path, segment: str) -> SegmentIndex:
    """Index a segment by decoding it (a crash left it unsealed, or its writer sealed it
    without a sidecar). Chunks of whole lines are decoded in one call each; a chunk with a
    malformed line is decoded line by line, so that line is logged and counted."""
    builder = IndexBuilder()
    data = segment_path.read_bytes()
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + INDEX_CHUNK) + 1 or data.find(b"\n", start) + 1
        if end == 0:
            break  # a torn last line: not part of the segment
        chunk = data[start:end]
        try:
            events = _lean_decoder.decode_lines(chunk)
        except _DECODE_ERRORS:
            events = []
        if events and len(events) == chunk.count(b"\n"):
            builder.add(events, chunk, start)
        else:
            _add_line_by_line(builder, chunk, start, segment_path, data)
        start = end
    return builder.build(segment, len(data))


def _add_line_by_line(
    builder: IndexBuilder, chunk: bytes, start: int, segment_path: Path, data: bytes
) -> None:
    offset = start
    for line in chunk.split(b"\n")[:-1]:
        at, offset = offset, offset + len(line) + 1
        try:
            builder.add((_lean_decoder.decode(line),), line + b"\n", at)
        except _DECODE_ERRORS as error:
            builder.malformed += 1
            number = data.count(b"\n", 0, at) + 1
            log.error("malformed line %s:%d while indexing: %s", segment_path, number, error)


class SealedSegmentIndexer:
    """Writes the sidecar of each segment ``writer`` sealed without one (an ``EventLog`` made
    with ``index_on_seal=False``): a replica's projector runs it, so indexing costs the
    replica's ingest nothing. Until then a search scans the segment (correct, slower); an
    archive run writes the sidecars still missing for old dates itself (archive/eligibility.py)."""

    def __init__(
        self,
        events_dir: Path,
        writer: str,
        *,
        durable: bool = True,
        wanted: Callable[[str], bool] = lambda segment: True,
    ) -> None:
        self.events_dir = events_dir
        self.manifest = manifest_path(events_dir, writer)
        self.durable = durable
        self.wanted = wanted  # which sealed segments to look at (all, for a projector)
        self._read = 0  # manifest bytes looked at so far
        self._waiting: list[str] = []  # sealed segments whose sidecar is still to be checked

    def index_new(self) -> list[str]:
        """Index what was sealed since the last call (everything sealed, the first time) and
        lacks a sidecar; return those segments. A failure is logged and retried next call."""
        try:
            data = self.manifest.read_bytes()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        if end > self._read:
            entries = parse_manifest_lines(data[self._read : end], self.manifest)
            self._waiting.extend(
                entry.seg for entry in entries if entry.op == "seal" and self.wanted(entry.seg)
            )
            self._read = end
        indexed: list[str] = []
        while self._waiting:
            segment = self._waiting[0]
            path = self.events_dir / segment
            try:
                if path.exists() and not index_path(path).exists():
                    write_index(path, build_index_from_file(path, segment), durable=self.durable)
                    indexed.append(segment)
                    log.info("indexed sealed segment %s", segment)
            except OSError as error:  # e.g. disk full: the next call tries again
                log.error("could not index %s, will retry: %s", path, error)
                break
            self._waiting.pop(0)
        return indexed


def write_index(segment_path: Path, index: SegmentIndex, *, durable: bool) -> None:
    """Write the sidecar atomically (``write_atomically``), so a reader never sees half of it.
    The temp name is this process's and thread's: a projector and an archive run that index
    the same segment at once each rename a whole file (the same content)."""
    write_atomically(index_path(segment_path), index_encoder.encode(index), durable=durable)


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
