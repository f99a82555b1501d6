"""The flow table: bidirectional flows keyed by the canonical 5-tuple + VLAN, with timeouts.

``FlowTable.packet`` is the hot path. Both directions' keys map to the same ``Flow`` in one dict,
so a packet costs one lookup and no canonicalisation. Flows end on:
- TCP teardown: FIN seen both ways, or RST. The flow stays open ``tcp_close_grace`` seconds so
  the last ACK still joins it; a new SYN after teardown starts a new flow at once;
- idle timeout (no packet for ``idle_timeout``) and active timeout (``active_timeout`` after the
  first packet, the flow is exported and a new one starts with the next packet);
- eviction, when the table holds ``max_flows`` and a new flow arrives: the flow with the earliest
  scheduled deadline goes first.
Deadlines sit in a heap checked lazily on each tick (at most ``expiry_scan_per_tick`` entries), so
packets never touch the heap. All times are packet times.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Sequence

from agent.appnames import PassiveDns, is_ip_literal, parse_dns, parse_http_host, sni_from_segments
from agent.config import AgentConfig
from agent.decode import FRAG_FIRST, Decoded
from agent.detectors import Detector
from agent.flowrecord import Flow
from storage.events import Detection

log = logging.getLogger(__name__)

INSPECT_SEGMENTS = 4  # initiator payload segments searched for a TLS/HTTP name
_DNS_PORTS = frozenset({53, 5353, 5355})
_FRAG_CACHE = 4096

Finding = Callable[[Flow, Detection, float], None]
Export = Callable[[Flow, str, float], None]


def _reverse(key: bytes) -> bytes:
    half = (len(key) - 7) // 2
    a = key[3 : 3 + half]
    b = key[3 + half : 3 + 2 * half]
    p = key[3 + 2 * half :]
    return key[:3] + b + a + p[2:] + p[:2]


def _port(key: bytes, which: int) -> int:
    pos = len(key) - 4 + 2 * which
    return (key[pos] << 8) | key[pos + 1]


class FlowTable:
    """Bounded table of active flows; calls ``export`` for each ended flow."""

    def __init__(
        self,
        config: AgentConfig,
        detectors: Sequence[Detector],
        export: Export,
        finding: Finding,
    ) -> None:
        self.config = config
        self.detectors = tuple(detectors)
        self.export = export
        self.finding = finding
        self.flows: dict[bytes, Flow] = {}
        self.active = 0
        self.evicted = 0
        self.exported = 0
        self.pdns = PassiveDns(config.pdns_cache_size)
        self._heap: list[tuple[float, int, Flow]] = []
        self._seq = 0
        self._fragments: dict[bytes, bytes] = {}

    # --- hot path ------------------------------------------------------------------------------

    def packet(self, ts: float, wirelen: int, data: bytes, decoded: Decoded) -> None:
        """Account one decoded packet to its flow."""
        key, flags, win, seq, poff, plen, frag, frag_id = decoded
        if frag:
            key = self._fragment_key(key, frag, frag_id)
        flow = self.flows.get(key)
        if flow is None:
            flow = self._create(key, ts, seq)
        elif (
            ts - flow.last > self.config.idle_timeout
            or ts - flow.first >= self.config.active_timeout
            or (
                flow.closed_at
                and (flags & 0x12 == 0x02 or ts - flow.closed_at > self.config.tcp_close_grace)
            )
        ):
            self._end(flow, self._due_reason(flow, ts), ts)
            flow = self._create(key, ts, seq)
        if key is flow.key or key == flow.key:
            stats = flow.fwd
            fwd = True
        else:
            stats = flow.bwd
            fwd = False
        n = stats.packets + 1
        stats.packets = n
        stats.bytes += wirelen
        stats.payload += plen
        if n == 1:
            stats.len_min = stats.len_max = wirelen
            stats.len_mean = float(wirelen)
            stats.init_win = win
        else:
            if wirelen < stats.len_min:
                stats.len_min = wirelen
            elif wirelen > stats.len_max:
                stats.len_max = wirelen
            delta = wirelen - stats.len_mean
            mean = stats.len_mean + delta / n
            stats.len_mean = mean
            stats.len_m2 += delta * (wirelen - mean)
            iat = ts - stats.last
            if n == 2:
                stats.iat_min = stats.iat_max = stats.iat_mean = iat
            else:
                if iat < stats.iat_min:
                    stats.iat_min = iat
                elif iat > stats.iat_max:
                    stats.iat_max = iat
                delta = iat - stats.iat_mean
                mean = stats.iat_mean + delta / (n - 1)
                stats.iat_mean = mean
                stats.iat_m2 += delta * (iat - mean)
        stats.last = ts
        total = flow.fwd.packets + flow.bwd.packets - 1
        if total:
            gap = ts - flow.last
            delta = gap - flow.iat_mean
            mean = flow.iat_mean + delta / total
            flow.iat_mean = mean
            flow.iat_m2 += delta * (gap - mean)
            if gap > self.config.activity_threshold:
                flow.active_sum += flow.last - flow.active_start
                flow.active_n += 1
                flow.idle_sum += gap
                flow.idle_n += 1
                flow.active_start = ts
            flow.last = ts
        counts = flow.tcp_counts
        if counts is not None:
            stats.flags |= flags
            self._tcp(flow, counts, flags, fwd, ts)
        if flow.inspect and plen:
            self._inspect(flow, fwd, data[poff : poff + plen], seq, plen, ts)

    def _tcp(self, flow: Flow, counts: list[int], flags: int, fwd: bool, ts: float) -> None:
        if flags & 0x02:
            counts[0] += 1
            if fwd and not flags & 0x10 and not flow.syn_ts:
                flow.syn_ts = ts
        elif fwd and flags & 0x10 and flow.syn_ts and not flow.handshake and flow.bwd.packets:
            flow.handshake = ts - flow.syn_ts
        if flags & 0x01:
            counts[1] += 1
            flow.fin_dirs |= 1 if fwd else 2
            if flow.fin_dirs == 3 and not flow.closed_at:
                self._close(flow, "fin", ts)
        if flags & 0x04:
            counts[2] += 1
            if not flow.closed_at:
                self._close(flow, "rst", ts)
        if flags & 0x08:
            counts[3] += 1
        if flags & 0x10:
            counts[4] += 1
        if flags & 0x20:
            counts[5] += 1

    # --- flow life cycle -----------------------------------------------------------------------

    def _create(self, key: bytes, ts: float, seq: int) -> Flow:
        if self.active >= self.config.max_flows:
            self._evict_one(ts)
        proto = key[0]
        rkey = _reverse(key)
        inspect = 0
        if proto == 6:
            inspect = INSPECT_SEGMENTS
        elif proto == 17 and (_port(key, 0) in _DNS_PORTS or _port(key, 1) in _DNS_PORTS):
            inspect = -1  # every DNS packet: answers feed passive DNS
        flow = Flow(key, rkey, ts, inspect)
        if proto == 6:
            flow.tcp_counts = [0, 0, 0, 0, 0, 0]
        elif proto == 1 or proto == 58:
            flow.icmp = seq
        self.flows[key] = flow
        self.flows[rkey] = flow
        self.active += 1
        self._schedule(flow, ts + min(self.config.idle_timeout, self.config.active_timeout))
        half = (len(key) - 7) // 2
        name = self.pdns.lookup(key[3 + half : 3 + 2 * half])
        if name is not None:
            flow.domain = name
            flow.domain_source = "pdns"
        for detector in self.detectors:
            self._record(flow, detector.on_init(flow), ts)
        if name is not None:
            self._domain_learned(flow, ts)
        return flow

    def _close(self, flow: Flow, reason: str, ts: float) -> None:
        flow.closed_at = ts
        flow.end_reason = reason
        self._schedule(flow, ts + self.config.tcp_close_grace)

    def _schedule(self, flow: Flow, deadline: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, flow))

    def _deadline(self, flow: Flow) -> tuple[float, str]:
        config = self.config
        if flow.closed_at:
            return flow.closed_at + config.tcp_close_grace, flow.end_reason
        idle = flow.last + config.idle_timeout
        active = flow.first + config.active_timeout
        return (idle, "idle") if idle <= active else (active, "active")

    def _due_reason(self, flow: Flow, ts: float) -> str:
        """Why a flow that a new packet cannot join ends."""
        if flow.closed_at:
            return flow.end_reason
        return "idle" if ts - flow.last > self.config.idle_timeout else "active"

    def _end(self, flow: Flow, reason: str, ts: float) -> None:
        if flow.done:
            return
        flow.done = True
        flows = self.flows
        if flows.get(flow.key) is flow:
            del flows[flow.key]
        if flows.get(flow.rkey) is flow:
            del flows[flow.rkey]
        self.active -= 1
        self.exported += 1
        for detector in self.detectors:
            self._record(flow, detector.on_expire(flow), ts)
        self.export(flow, reason, ts)

    def _evict_one(self, ts: float) -> None:
        heap = self._heap
        while heap:
            flow = heapq.heappop(heap)[2]
            if not flow.done:
                self.evicted += 1
                self._end(flow, "evicted", ts)
                return

    def tick(self, now: float) -> int:
        """Expire due flows (at most ``expiry_scan_per_tick`` heap entries); returns how many."""
        heap = self._heap
        budget = self.config.expiry_scan_per_tick
        ended = 0
        while heap and budget and heap[0][0] <= now:
            budget -= 1
            flow = heapq.heappop(heap)[2]
            if flow.done:
                continue
            deadline, reason = self._deadline(flow)
            if deadline <= now:
                self._end(flow, reason, now)
                ended += 1
            else:
                self._schedule(flow, deadline)
        for detector in self.detectors:
            detector.tick(now)
        return ended

    def flush(self, now: float) -> None:
        """End every flow (shutdown or end of a capture file)."""
        for flow in list(self.flows.values()):
            if not flow.done:
                self._end(flow, flow.end_reason or "shutdown", max(now, flow.last))
        self._heap.clear()

    # --- names and findings --------------------------------------------------------------------

    def _fragment_key(self, key: bytes, frag: int, frag_id: bytes) -> bytes:
        fragments = self._fragments
        if frag == FRAG_FIRST:
            if len(fragments) >= _FRAG_CACHE:
                del fragments[next(iter(fragments))]
            fragments[frag_id] = key
            return key
        return fragments.get(frag_id, key)

    def _inspect(
        self, flow: Flow, fwd: bool, payload: bytes, seq: int, plen: int, ts: float
    ) -> None:
        if flow.inspect < 0:
            self._dns(flow, payload, ts)
            return
        if not fwd:
            return
        if flow.tls_seq >= 0:  # continuing a ClientHello: in-order segments only
            if seq != flow.tls_seq:
                return
            payload = flow.tls_buf + payload
        flow.inspect -= 1
        done, name = sni_from_segments(payload)
        if not done:
            flow.tls_buf = payload
            flow.tls_seq = (seq + plen) & 0xFFFFFFFF
            if not flow.inspect:
                flow.tls_buf = b""
            return
        flow.tls_buf = b""
        flow.tls_seq = -1
        source = "sni"
        if name is None:
            name = parse_http_host(payload)
            source = "http"
        if name and not is_ip_literal(name):
            flow.inspect = 0
            self._set_domain(flow, name, source, ts)

    def _dns(self, flow: Flow, payload: bytes, ts: float) -> None:
        message = parse_dns(payload)
        if message is None:
            return
        for address, name in message.addresses:
            self.pdns.learn(address, name)
        if flow.domain_source != "dns":
            self._set_domain(flow, message.qname, "dns", ts)

    def _set_domain(self, flow: Flow, name: str, source: str, ts: float) -> None:
        if flow.domain == name and flow.domain_source == source:
            return
        flow.domain = name
        flow.domain_source = source
        self._domain_learned(flow, ts)

    def _domain_learned(self, flow: Flow, ts: float) -> None:
        for detector in self.detectors:
            self._record(flow, detector.on_update(flow), ts)

    def _record(self, flow: Flow, findings: Sequence[Detection] | None, ts: float) -> None:
        if not findings:
            return
        if flow.detections is None:
            flow.detections = []
        for detection in findings:
            if detection not in flow.detections:
                flow.detections.append(detection)
                self.finding(flow, detection, ts)
