"""The agent pipeline: packets from a source -> decode -> flow table + detectors -> events.

``run_pipeline(source, config, emit)`` is the one entry point: ``netmon agent replay`` and
``capture`` write the events as JSON lines, ``netmon agent run`` (transport) streams them.
``emit`` receives, in order of occurrence:
- ``DetectionRaised`` at once, on the packet that made a critical finding;
- ``FlowObserved`` when a flow ends (teardown, timeout, eviction, end of input);
- ``AgentHeartbeat`` every ``heartbeat_interval`` seconds (wall time) and once at the end.
Flow times are packet times; heartbeats use the wall clock (they report the agent's health).
A run without a domain policy says so once in the log and in every heartbeat (``domain_rules``
0), so the dashboard and ``netmon agents list`` can tell that unapproved-domain detection is off.
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
from netmon.agent.detectors import Detector
from netmon.agent.detectors.critical_ports import CriticalPortDetector
from netmon.agent.detectors.domains import DomainDetector
from netmon.agent.detectors.suspicious_ips import SuspiciousIpDetector
from netmon.agent.flowrecord import Flow, flow_event, ip_text
from netmon.agent.flows import FlowTable
from netmon.storage.contract.events import (
    AgentHeartbeat,
    Detection,
    DetectionRaised,
    Event,
    new_event_id,
)
from netmon.storage.contract.versions import netmon_version

log = logging.getLogger(__name__)

MALFORMED_LOG_LIMIT = 10  # individual log lines; the rest are counted and summarised
NO_DOMAIN_POLICY = (
    "no domain policy configured: unapproved-domain detection is off; "
    "see docs/agent.md#domain-policy"
)


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


def build_detectors(config: AgentConfig) -> list[Detector]:
    """The detectors the configuration enables, in a fixed order."""
    detectors: list[Detector] = [CriticalPortDetector(config.critical_ports)]
    if config.threat_lists:
        detectors.append(SuspiciousIpDetector(config.threat_lists, config.list_reload_interval))
    policy = config.domains
    if policy.approved or policy.approved_files or policy.denied or policy.denied_files:
        detectors.append(DomainDetector(policy))
    return detectors


def domain_rules(detectors: list[Detector]) -> int:
    """How many approved and denied domains the detectors judge names by (0: no policy)."""
    return sum(d.rules for d in detectors if isinstance(d, DomainDetector))


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
    return Pipeline(source, config, emit, stop).run()


def _never() -> bool:
    """The ``stop`` of a run nobody stops."""
    return False


class Pipeline:
    """One run of the pipeline over one source: the counters and timers it keeps as it goes.

    ``run()`` once; each step of the run is one method: ``_step`` (one frame), ``_run_batches``
    (runs of pcap records), ``_beat``/``_heartbeat`` (health) and ``_finish`` (flush, totals).
    """

    def __init__(
        self,
        source: PacketSource,
        config: AgentConfig,
        emit: Callable[[Event], None],
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.source = source
        self.config = config
        self.emit = emit
        self.stop = _never if stop is None else stop
        self.version = netmon_version()
        self.emitter = _Emitter(config, emit)
        detectors = build_detectors(config)
        self.domain_rules = domain_rules(detectors)
        if not self.domain_rules:
            log.warning(NO_DOMAIN_POLICY)
        self.table = FlowTable(config, detectors, self.emitter.flow_ended, self.emitter.finding)
        self.frame = self.table.frame
        self.stats = PipelineStats()
        self.boot_id = uuid.uuid4().hex
        self.started = time.monotonic()
        self.next_beat = self.started + config.heartbeat_interval
        self.tick_interval = config.tick_interval
        self.next_tick = 0.0
        self.seen = self.malformed = self.not_ip = self.volume = 0
        self.last_ts = 0.0

    def run(self) -> PipelineStats:
        """Meter the whole source (or until stopped), flush, and return the counters."""
        source = self.source
        try:
            if isinstance(source, FileSource) and source.batchable():
                with source.open_pcap(progress=source.progress) as reader:
                    self._run_batches(reader)
            else:
                self._run_frames()
        except KeyboardInterrupt:
            log.info("interrupted: flushing %d active flows", self.table.active)
        finally:
            source.close()
        return self._finish()

    def _run_frames(self) -> None:
        """The frame-by-frame path (live captures, pcapng, paced replays)."""
        step, stop, table = self._step, self.stop, self.table
        for item in self.source:
            if item is None:  # a quiet live source: keep timers running on the wall clock
                table.tick(time.time())
                self._beat()
                if stop():
                    return
                continue
            if step(*item):
                return

    def _run_batches(self, reader: PcapReader) -> None:
        """The batch path: runs of common frames metered in one call, the rest by ``_step``."""
        meter, stop = self.table.meter_records, self.stop
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
            budget = 4096 - (self.seen & 4095)  # stop() is polled every 4096 frames
            pos, count, size, latest = meter(
                buf, pos, end, unpack, resolution, self.next_tick, budget
            )
            self.seen += count
            self.volume += size
            if latest > self.last_ts:
                self.last_ts = latest
            if count == budget:
                if stop():
                    return
                continue
            if pos + 16 <= end:
                sec, frac, caplen, wirelen = unpack(buf, pos)
                if pos + 16 + caplen <= end:
                    data = buf[pos + 16 : pos + 16 + caplen]
                    pos += 16 + caplen
                    if self._step(sec + frac * resolution, data, wirelen, linktype):
                        return

    def _step(self, ts: float, data: bytes, wirelen: int, linktype: int) -> bool:
        """Meter one frame, tick when its time has come; True when ``stop()`` says so."""
        self.seen = seen = self.seen + 1
        self.volume += wirelen
        try:
            metered = self.frame(ts, data, wirelen, linktype)
            if metered < 0:
                self.malformed += 1
                if self.malformed <= MALFORMED_LOG_LIMIT:
                    log.warning(
                        "frame %d: truncated or malformed (%d bytes, linktype %d), skipped",
                        seen,
                        len(data),
                        linktype,
                    )
            elif not metered:
                self.not_ip += 1
        except (IndexError, ValueError, struct_error) as error:
            self.malformed += 1
            log.warning("frame %d: cannot be decoded (%s), skipped", seen, error)
        if ts >= self.next_tick:
            if ts > self.last_ts:
                self.last_ts = ts
            self.next_tick = ts + self.tick_interval
            self.table.tick(ts)
            self._beat()
            if self.stop():  # slow steady traffic never goes quiet
                return True
        elif ts > self.last_ts:
            self.last_ts = ts
        return not seen & 4095 and self.stop()

    def _beat(self) -> None:
        """A heartbeat when one is due (wall clock)."""
        if time.monotonic() >= self.next_beat:
            self._heartbeat()
            self.next_beat = time.monotonic() + self.config.heartbeat_interval

    def _heartbeat(self) -> None:
        """Emit an ``AgentHeartbeat`` with the counters as they are now."""
        stats, emitter, table = self.stats, self.emitter, self.table
        stats.packets_seen, stats.packets_malformed = self.seen, self.malformed
        stats.packets_dropped = self.source.dropped()
        elapsed = time.monotonic() - self.started
        emitter.events += 1
        self.emit(
            AgentHeartbeat(
                id=new_event_id(),
                ts=time.time(),
                branch=self.config.branch,
                agent_id=emitter.agent_id,
                boot_id=self.boot_id,
                version=self.version,
                uptime_s=elapsed,
                packets_seen=self.seen,
                packets_dropped=stats.packets_dropped,
                packets_malformed=self.malformed,
                flows_active=table.active,
                flows_evicted=table.evicted,
                events_per_s=emitter.events / elapsed if elapsed > 0 else 0.0,
                domain_rules=self.domain_rules,
            )
        )

    def _finish(self) -> PipelineStats:
        """Flush the remaining flows, send the last heartbeat and fill in the totals."""
        table, stats = self.table, self.stats
        table.flush(self.last_ts)
        if self.malformed > MALFORMED_LOG_LIMIT:
            log.warning("%d malformed frames skipped in total", self.malformed)
        self._heartbeat()
        stats.packets_not_ip = self.not_ip
        stats.bytes_seen = self.volume
        stats.flows_exported = table.exported
        stats.flows_evicted = table.evicted
        stats.flows_active = table.active
        stats.detections_raised = self.emitter.raised
        stats.events_emitted = self.emitter.events
        stats.elapsed_s = time.monotonic() - self.started
        return stats
