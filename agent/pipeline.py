"""The agent pipeline: packets from a source -> decode -> flow table + detectors -> events.

``run_pipeline(source, config, emit)`` is the one entry point: ``netmon agent replay`` and
``capture`` write the events as JSON lines, ``netmon agent run`` (transport) streams them.
``emit`` receives, in order of occurrence:
- ``DetectionRaised`` at once, on the packet that made a critical finding;
- ``FlowObserved`` when a flow ends (teardown, timeout, eviction, end of input);
- ``AgentHeartbeat`` every ``heartbeat_interval`` seconds (wall time) and once at the end.
Flow times are packet times; heartbeats use the wall clock (they report the agent's health).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from struct import error as struct_error

import msgspec

from netmon.agent.capture import FileSource, PacketSource, PcapReader
from netmon.agent.config import AgentConfig
from netmon.agent.detectors import build_detectors
from netmon.agent.flowrecord import Flow, flow_event, ip_text
from netmon.agent.flows import FlowTable
from netmon.storage.contract.events import (
    AgentHeartbeat,
    Detection,
    DetectionRaised,
    Event,
    new_event_id,
)

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
MALFORMED_LOG_LIMIT = 10  # individual log lines; the rest are counted and summarised


class PipelineStats(msgspec.Struct):
    """Counters of one pipeline run."""

    packets_seen: int = 0
    packets_malformed: int = 0
    packets_not_ip: int = 0
    packets_dropped: int = 0
    bytes_seen: int = 0
    flows_exported: int = 0
    flows_evicted: int = 0
    flows_active: int = 0
    detections_raised: int = 0
    events_emitted: int = 0
    elapsed_s: float = 0.0


class _Emitter:
    """Turns flow-table callbacks into events."""

    def __init__(self, config: AgentConfig, emit: Callable[[Event], None]) -> None:
        self.config = config
        self.agent_id = config.resolved_agent_id()
        self.emit = emit
        self.events = 0
        self.raised = 0

    def flow_ended(self, flow: Flow, reason: str, now: float) -> None:
        config = self.config
        event = flow_event(flow, now, reason, self.agent_id, config.branch)
        self.events += 1
        self.emit(event)

    def finding(self, flow: Flow, detection: Detection, now: float) -> None:
        if detection.severity != "critical":
            return
        src, dst, sport, dport = flow.endpoints()
        event = DetectionRaised(
            id=new_event_id(now),
            ts=now,
            branch=self.config.branch,
            agent_id=self.agent_id,
            flow_id=flow.id(now),
            src_ip=ip_text(src),
            src_port=sport,
            dst_ip=ip_text(dst),
            dst_port=dport,
            protocol=flow.protocol,
            detection=detection,
            domain=flow.domain,
        )
        self.raised += 1
        self.events += 1
        self.emit(event)


def run_pipeline(
    source: PacketSource,
    config: AgentConfig,
    emit: Callable[[Event], None],
    stop: Callable[[], bool] | None = None,
) -> PipelineStats:
    """Meter every frame of ``source`` into flows and emit events; returns the counters.

    Returns when the source is exhausted, when ``stop()`` is true (checked while the source
    is quiet, on every tick and every 4096 frames) or on KeyboardInterrupt; remaining flows
    are flushed.
    """
    emitter = _Emitter(config, emit)
    table = FlowTable(config, build_detectors(config), emitter.flow_ended, emitter.finding)
    stats = PipelineStats()
    boot_id = uuid.uuid4().hex
    started = time.monotonic()
    next_beat = started + config.heartbeat_interval
    tick_interval = config.tick_interval
    next_tick = 0.0
    seen = malformed = not_ip = volume = 0
    last_ts = 0.0
    frame = table.frame

    def heartbeat() -> None:
        stats.packets_seen, stats.packets_malformed = seen, malformed
        stats.packets_dropped = source.dropped()
        elapsed = time.monotonic() - started
        emitter.events += 1
        emit(
            AgentHeartbeat(
                id=new_event_id(),
                ts=time.time(),
                branch=config.branch,
                agent_id=emitter.agent_id,
                boot_id=boot_id,
                version=AGENT_VERSION,
                uptime_s=elapsed,
                packets_seen=seen,
                packets_dropped=stats.packets_dropped,
                packets_malformed=malformed,
                flows_active=table.active,
                flows_evicted=table.evicted,
                events_per_s=emitter.events / elapsed if elapsed > 0 else 0.0,
            )
        )

    def step(ts: float, data: bytes, wirelen: int, linktype: int) -> bool:
        """Meter one frame, tick when its time has come; True when ``stop()`` says so."""
        nonlocal seen, malformed, not_ip, volume, next_tick, last_ts
        seen += 1
        volume += wirelen
        try:
            metered = frame(ts, data, wirelen, linktype)
            if metered < 0:
                malformed += 1
                if malformed <= MALFORMED_LOG_LIMIT:
                    log.warning(
                        "frame %d: truncated or malformed (%d bytes, linktype %d), skipped",
                        seen,
                        len(data),
                        linktype,
                    )
            elif not metered:
                not_ip += 1
        except (IndexError, ValueError, struct_error) as error:
            malformed += 1
            log.warning("frame %d: cannot be decoded (%s), skipped", seen, error)
        if ts >= next_tick:
            if ts > last_ts:
                last_ts = ts
            next_tick = ts + tick_interval
            table.tick(ts)
            beat()
            if stop is not None and stop():  # slow steady traffic never goes quiet
                return True
        elif ts > last_ts:
            last_ts = ts
        return not seen & 4095 and stop is not None and stop()

    def beat() -> None:
        nonlocal next_beat
        if time.monotonic() >= next_beat:
            heartbeat()
            next_beat = time.monotonic() + config.heartbeat_interval

    def run_batches(reader: PcapReader) -> None:
        """The batch path: runs of common frames metered in one call, the rest by ``step``."""
        nonlocal seen, volume, last_ts
        meter = table.meter_records
        unpack, resolution, linktype = reader.unpack, reader.resolution, reader.linktype
        buf = b""
        pos = end = 0
        while True:
            if pos + 16 > end or pos + 16 + unpack(buf, pos)[2] > end:  # not one whole record
                more = reader.refill(buf, pos)
                if more is None:
                    return
                buf, pos, end = more, 0, len(more)
                continue
            budget = 4096 - (seen & 4095)  # stop() is polled every 4096 frames
            pos, count, size, latest = meter(buf, pos, end, unpack, resolution, next_tick, budget)
            seen += count
            volume += size
            if latest > last_ts:
                last_ts = latest
            if count == budget:
                if stop is not None and stop():
                    return
                continue
            if pos + 16 <= end:
                sec, frac, caplen, wirelen = unpack(buf, pos)
                if pos + 16 + caplen <= end:
                    data = buf[pos + 16 : pos + 16 + caplen]
                    pos += 16 + caplen
                    if step(sec + frac * resolution, data, wirelen, linktype):
                        return

    try:
        if isinstance(source, FileSource) and source.batchable():
            with source.open_pcap(progress=source.progress) as reader:
                run_batches(reader)
        else:
            for item in source:
                if item is None:  # a quiet live source: keep timers running on the wall clock
                    table.tick(time.time())
                    beat()
                    if stop is not None and stop():
                        break
                    continue
                if step(*item):
                    break
    except KeyboardInterrupt:
        log.info("interrupted: flushing %d active flows", table.active)
    finally:
        source.close()
    table.flush(last_ts)
    if malformed > MALFORMED_LOG_LIMIT:
        log.warning("%d malformed frames skipped in total", malformed)
    heartbeat()
    stats.packets_not_ip = not_ip
    stats.bytes_seen = volume
    stats.flows_exported = table.exported
    stats.flows_evicted = table.evicted
    stats.flows_active = table.active
    stats.detections_raised = emitter.raised
    stats.events_emitted = emitter.events
    stats.elapsed_s = time.monotonic() - started
    return stats
