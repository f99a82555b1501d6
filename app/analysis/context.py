"""A flow's context: what its source address did in the last minute, as features for the model.

Per flow, a connect-scan probe and a refused connection are the same few packets; what tells
them apart is the source's recent behaviour: how many ports and hosts it touched, how many of
its connection attempts failed, how fast it opens flows. ``ContextTracker`` keeps, per
(branch, source address), the flows of the last ``window_s`` seconds (by ``last_seen``, in the
order the flows arrive) and gives every new flow those figures, the flow itself included.

The same tracker runs in training (each capture's flows replayed in ``ts`` order through a
fresh tracker) and in the worker (the Classifier's own tracker, fed batch by batch in log
order), so the model sees in production what it was trained on. It is transient: after a
restart it starts empty and refills within one window; until then a source's context is
under-counted, as if its first flows were its only ones.

Bounded: at most ``max_flows_per_source`` flows per source (the oldest leave first, so the counts
saturate there) and ``max_sources`` sources (the least recently seen is forgotten first).
"""

from __future__ import annotations

from collections import deque
from typing import TypeVar

import msgspec

from netmon.app.analysis.behaviour.probes import is_failed_probe, is_unanswered_udp
from netmon.storage.contract.events import FlowObserved

CONTEXT_NAMES: tuple[str, ...] = (
    "ctx_flows",  # the source's flows in the window, this one included
    "ctx_dst_ports",  # distinct destination ports among them
    "ctx_dst_hosts",  # distinct destination addresses among them
    "ctx_failed_share",  # share that failed: SYN refused or unanswered (no data), UDP unanswered
    "ctx_empty_share",  # share that carried no payload either way
    "ctx_flows_per_s",  # flows per second over the span their last_seen covers (>= 1 s)
    "ctx_names_share",  # distinct names per flow that carries one (many unique names: tunnel)
)


class ContextSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The window and the caps of a ContextTracker (saved in the model file: the window must be
    the one the model was trained with)."""

    window_s: float = 60.0
    # Each remembered flow costs ~290 bytes at worst (every flow to a new host and port), so
    # the defaults hold at most 320,000 flows, ~95 MB; a busy source (a scanner, a flood) is
    # always recent and never the one forgotten.
    max_sources: int = 5_000
    max_flows_per_source: int = 64


K = TypeVar("K")
# One remembered flow: (last_seen, destination port, destination address, failed, empty, name).
_Entry = tuple[float, int, str, int, int, str]


class _Source:
    """One source's flows in the window and their running counts."""

    __slots__ = ("empty", "entries", "failed", "hosts", "named", "names", "ports")

    def __init__(self) -> None:
        self.entries: deque[_Entry] = deque()
        self.ports: dict[int, int] = {}
        self.hosts: dict[str, int] = {}
        self.names: dict[str, int] = {}
        self.failed = 0
        self.empty = 0
        self.named = 0

    def add(self, entry: _Entry) -> None:
        _, port, host, failed, empty, name = entry
        self.entries.append(entry)
        self.ports[port] = self.ports.get(port, 0) + 1
        self.hosts[host] = self.hosts.get(host, 0) + 1
        self.failed += failed
        self.empty += empty
        if name:
            self.names[name] = self.names.get(name, 0) + 1
            self.named += 1

    def drop_oldest(self) -> None:
        _, port, host, failed, empty, name = self.entries.popleft()
        _decrement(self.ports, port)
        _decrement(self.hosts, host)
        self.failed -= failed
        self.empty -= empty
        if name:
            _decrement(self.names, name)
            self.named -= 1


def _decrement(counts: dict[K, int], key: K) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class ContextTracker:
    """Per-source sliding windows; ``observe`` adds a flow and returns its CONTEXT_NAMES values."""

    def __init__(self, settings: ContextSettings | None = None) -> None:
        self.settings = settings or ContextSettings()
        # A dict keeps insertion order: pop-and-reinsert on every flow makes it an LRU.
        self._sources: dict[tuple[str, str], _Source] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sources)

    def remembered_flows(self) -> int:
        """Flows held over all sources (the memory the tracker uses grows with this)."""
        return sum(len(source.entries) for source in self._sources.values())

    def observe(self, flow: FlowObserved) -> list[float]:
        """Add the flow to its source's window; the window's figures, the flow included."""
        settings = self.settings
        key = (flow.branch, flow.src_ip)
        sources = self._sources
        source = sources.pop(key, None)
        if source is None:
            source = _Source()
            if len(sources) >= settings.max_sources:
                del sources[next(iter(sources))]
                self.evicted += 1
        sources[key] = source
        now = flow.last_seen
        entries = source.entries
        horizon = now - settings.window_s
        while entries and (
            entries[0][0] < horizon or len(entries) >= settings.max_flows_per_source
        ):
            source.drop_oldest()
        failed = 1 if is_failed_probe(flow) or is_unanswered_udp(flow) else 0
        empty = 1 if flow.src2dst_payload_bytes == 0 and flow.dst2src_payload_bytes == 0 else 0
        source.add((now, flow.dst_port, flow.dst_ip, failed, empty, flow.domain))
        count = len(entries)
        span = now - entries[0][0]
        return [
            float(count),
            float(len(source.ports)),
            float(len(source.hosts)),
            source.failed / count,
            source.empty / count,
            count / span if span > 1.0 else float(count),
            len(source.names) / source.named if source.named else 0.0,
        ]
