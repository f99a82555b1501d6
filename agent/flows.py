"""The flow table: bidirectional flows keyed by the canonical 5-tuple + VLAN, with timeouts.

``FlowTable.frame`` is the hot path. Both directions' keys map to the same ``Flow`` in one dict,
so a packet costs one lookup and no canonicalisation. Flows end on:
- TCP teardown: FIN seen both ways, or RST. The flow stays open ``tcp_close_grace`` seconds so
  the last ACK still joins it; a new SYN after teardown starts a new flow at once;
- idle timeout (no packet for ``idle_timeout``) and active timeout (``active_timeout`` after the
  first packet, the flow is exported and a new one starts with the next packet; on a DNS port
  the shorter ``dns_active_timeout``, so a busy DNS tunnel reaches the server as it goes);
- eviction, when the table holds ``max_flows`` and a new flow arrives: the flow with the earliest
  scheduled deadline goes first.
A new flow's initiator is decided by agent/orientation.py: the first packet's sender, unless the
flow continues one cut by a timeout (it keeps that one's orientation) or the ports say the
sender is the server.
Deadlines sit in a timing wheel (agent/timers.py) checked lazily on each tick (at most
``expiry_scan_per_tick`` entries), so packets never touch it. All times are packet times.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence

from netmon.agent.appnames import (
    PassiveDns,
    is_ip_literal,
    parse_dns,
    parse_http_host,
    sni_from_segments,
)
from netmon.agent.config import AgentConfig
from netmon.agent.decode import FRAG_FIRST, decode
from netmon.agent.detectors import Detector
from netmon.agent.dns_queries import DnsTally, query_name, wire_text
from netmon.agent.dns_tcp import DnsStreams
from netmon.agent.flowrecord import DirStats, Flow
from netmon.agent.login_text import FTP_PORT, TELNET_PORT, TextLoginObserver
from netmon.agent.orientation import Orientation
from netmon.agent.ssh_auth import SshAuthObserver
from netmon.agent.timers import DeadlineWheel
from netmon.storage.contract.events import Detection

log = logging.getLogger(__name__)

INSPECT_SEGMENTS = 4  # initiator payload segments searched for a TLS/HTTP name
INSPECT_SSH = -2  # both directions go to the flow's SshAuthObserver (agent/ssh_auth.py)
INSPECT_LOGIN = -3  # FTP/Telnet: the server's replies go to a TextLoginObserver (login_text.py)
_SSH_PORT = 22
_DNS_PORTS = frozenset({53, 5353, 5355})  # UDP datagrams, or length-prefixed over TCP
# Ends after which the same 5-tuple may carry on the same connection: remember who served it.
_TIMED_OUT = frozenset({"idle", "active", "evicted"})
_FRAG_CACHE = 4096
_WINDOWS: dict[int, int] = {}
_TCP4 = bytes((6, 0, 0))  # key prefix: protocol, VLAN 0
_UDP4 = bytes((17, 0, 0))
_unpack_seq = struct.Struct("!I").unpack_from
# From the ethertype to the TCP window: ethertype, version/IHL, total length, fragment field,
# protocol, addresses and ports, TCP sequence number, data offset, flags, window.
_unpack_eth_ip4 = struct.Struct("!HBxHxxHxBxx12sI4xBBH").unpack_from

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
        self.orientation = Orientation(
            config.orientation_cache_size, config.active_timeout, config.critical_ports
        )
        self._wheel: DeadlineWheel[Flow] = DeadlineWheel()
        self._fragments: dict[bytes, bytes] = {}
        # Copies of the timeouts: one attribute lookup per use on the hot path instead of two.
        self._idle = config.idle_timeout
        self._active = config.active_timeout
        self._dns_active = config.dns_flow_timeout()
        self._grace = config.tcp_close_grace
        self._threshold = config.activity_threshold

    # --- hot path ------------------------------------------------------------------------------

    def frame(self, ts: float, data: bytes, wirelen: int, linktype: int) -> int:
        """Meter one captured frame; returns 1 when metered, 0 when not IP, -1 when malformed.

        The common case (Ethernet, IPv4 without options or fragments, TCP or UDP) is decoded
        inline, saving a call and an 8-tuple per packet; ``decode`` handles everything else
        and gives the same result for these frames (tests/agent/test_flow_table.py checks it).
        """
        if (
            linktype == 1
            and len(data) >= 54
            and data[12] == 8
            and data[13] == 0
            and data[14] == 0x45
            and not data[20] & 0x3F
            and not data[21]
            and (data[16] or data[17] >= 20)  # total length covers the IP header
            and (data[23] == 17 or (data[23] == 6 and data[46] >= 0x50))
        ):
            end = 14 + ((data[16] << 8) | data[17])
            if end > len(data):
                end = len(data)
            if data[23] == 6:
                key = _TCP4 + data[26:38]
                flags = data[47]
                win = (data[48] << 8) | data[49]
                seq = _unpack_seq(data, 38)[0]
                poff = 34 + ((data[46] >> 4) << 2)
            else:
                key = _UDP4 + data[26:38]
                flags = win = seq = 0
                poff = 42
            plen = end - poff if end > poff else 0
        else:
            decoded = decode(data, linktype)
            if not decoded:
                return -1 if decoded is None else 0
            key, flags, win, seq, poff, plen, frag, frag_id = decoded
            if frag:
                key = self._fragment_key(key, frag, frag_id)
        flow = self.flows.get(key)
        if flow is None:
            flow = self._create(key, ts, seq, flags)
        elif (
            ts - flow.last > self._idle
            or ts - flow.first >= flow.limit
            or (flow.closed_at and (flags & 0x12 == 0x02 or ts - flow.closed_at > self._grace))
        ):
            self._end(flow, self._due_reason(flow, ts), ts)
            flow = self._create(key, ts, seq, flags)
        stats: DirStats
        if key is flow.key or key == flow.key:
            stats = flow
            fwd = True
        else:
            bwd = flow.bwd
            if bwd is None:
                bwd = flow.bwd = DirStats()
            stats = bwd
            fwd = False
        n = stats.packets + 1
        stats.packets = n
        stats.bytes += wirelen
        stats.payload += plen
        if n == 1:
            # The square waits for a second packet: a one-packet direction (a SYN, a probe)
            # keeps the shared 0 (memory).
            stats.len_min = stats.len_max = stats.len_sum = wirelen
            # Window values repeat across flows: share one int object per value (memory).
            stats.init_win = _WINDOWS.setdefault(win, win)
        else:
            if wirelen < stats.len_min:
                stats.len_min = wirelen
            elif wirelen > stats.len_max:
                stats.len_max = wirelen
            # Exact integer sums: mean and deviation are computed when the flow ends.
            iat = ts - stats.prev
            if n == 2:
                first = stats.len_sum
                stats.len_sq = first * first + wirelen * wirelen
                stats.iat_min = stats.iat_max = stats.iat_mean = iat
            else:
                if iat < stats.iat_min:
                    stats.iat_min = iat
                elif iat > stats.iat_max:
                    stats.iat_max = iat
                mean = stats.iat_mean
                delta = iat - mean
                mean += delta / (n - 1)
                stats.iat_mean = mean
                stats.iat_m2 += delta * (iat - mean)
                stats.len_sq += wirelen * wirelen
            stats.len_sum += wirelen
        stats.prev = ts
        total = flow.total
        flow.total = total + 1
        if total:
            last = flow.last
            gap = ts - last
            if total == 1:
                flow.flow_iat_k = gap  # the shift of the squares below
            else:
                # Squares of gaps shifted by the first one (no cancellation, no division);
                # the sum of the gaps is last - first.
                shifted = gap - flow.flow_iat_k
                flow.flow_iat_sq += shifted * shifted
            if gap > self._threshold:
                flow.active_sum += last - flow.active_start
                flow.active_n += 1
                flow.idle_sum += gap
                flow.active_start = ts
            flow.last = ts
        if flow.tcp:
            stats.flags |= flags
            # ACK and PSH-ACK after the handshake: most TCP packets, counted inline.
            if flags == 0x10 and flow.handshake:
                flow.ack_n += 1
            elif flags == 0x18 and flow.handshake:
                flow.psh_n += 1
                flow.ack_n += 1
            else:
                self._tcp(flow, flags, fwd, ts)
        # Names come from the initiator's payload, or from DNS packets either way (inspect < 0).
        if plen and (inspect := flow.inspect) and (fwd or inspect < 0):
            self._inspect(flow, fwd, data[poff : poff + plen], seq, plen, ts)
        return 1

    def meter_records(
        self,
        buf: bytes,
        pos: int,
        end: int,
        unpack_record: Callable[[bytes, int], tuple[int, int, int, int]],
        resolution: float,
        tick_at: float,
        budget: int,
    ) -> tuple[int, int, int, float]:
        """Meter the whole pcap records of ``buf[pos:end]`` while they take the fast path.

        Returns ``(pos, packets, frame bytes, latest ts)``; ``pos`` is the first record not
        metered: one that needs ``frame`` (not untagged Ethernet + IPv4 without options or
        fragments + TCP/UDP), whose time reaches ``tick_at``, that ``buf`` holds only in part,
        or the one after ``budget`` records. One loop does what the reader, the pipeline and
        ``frame`` do one by one: no frame copy, tuple or call per packet. The statistics below
        are ``frame``'s, kept in step with it (tests/agent/test_flow_table.py replays the same
        frames both ways).
        """
        header = _unpack_eth_ip4
        get = self.flows.get
        idle, grace, threshold = self._idle, self._grace, self._threshold
        windows = _WINDOWS
        count = volume = 0
        latest = 0.0
        while pos + 16 <= end and count < budget:
            sec, frac, caplen, wirelen = unpack_record(buf, pos)
            ts = sec + frac * resolution
            start = pos + 16
            if ts >= tick_at or caplen < 54 or start + caplen > end:
                break
            etype, vihl, total, frag, proto, addrs, seq, doff, flags, win = header(buf, start + 12)
            if etype != 0x0800 or vihl != 0x45 or frag & 0x3FFF or total < 20:
                break
            if proto == 6 and doff >= 0x50:
                key = _TCP4 + addrs
                poff = 34 + ((doff >> 4) << 2)
            elif proto == 17:
                key = _UDP4 + addrs
                flags = win = seq = 0
                poff = 42
            else:
                break
            stop = 14 + total
            if stop > caplen:
                stop = caplen
            plen = stop - poff if stop > poff else 0
            pos = start + caplen
            count += 1
            volume += wirelen
            if ts > latest:
                latest = ts
            flow = get(key)
            if flow is None:
                flow = self._create(key, ts, seq, flags)
            elif (
                ts - flow.last > idle
                or ts - flow.first >= flow.limit
                or (flow.closed_at and (flags & 0x12 == 0x02 or ts - flow.closed_at > grace))
            ):
                self._end(flow, self._due_reason(flow, ts), ts)
                flow = self._create(key, ts, seq, flags)
            stats: DirStats
            if key == flow.key:
                stats = flow
                fwd = True
            else:
                bwd = flow.bwd
                if bwd is None:
                    bwd = flow.bwd = DirStats()
                stats = bwd
                fwd = False
            n = stats.packets + 1
            stats.packets = n
            stats.bytes += wirelen
            stats.payload += plen
            if n == 1:
                # The square waits for a second packet: a one-packet direction (a SYN, a probe)
                # keeps the shared 0 (memory).
                stats.len_min = stats.len_max = stats.len_sum = wirelen
                stats.init_win = windows.setdefault(win, win)
            else:
                if wirelen < stats.len_min:
                    stats.len_min = wirelen
                elif wirelen > stats.len_max:
                    stats.len_max = wirelen
                # Exact integer sums: mean and deviation are computed when the flow ends.
                iat = ts - stats.prev
                if n == 2:
                    first = stats.len_sum
                    stats.len_sq = first * first + wirelen * wirelen
                    stats.iat_min = stats.iat_max = stats.iat_mean = iat
                else:
                    if iat < stats.iat_min:
                        stats.iat_min = iat
                    elif iat > stats.iat_max:
                        stats.iat_max = iat
                    mean = stats.iat_mean
                    delta = iat - mean
                    mean += delta / (n - 1)
                    stats.iat_mean = mean
                    stats.iat_m2 += delta * (iat - mean)
                    stats.len_sq += wirelen * wirelen
                stats.len_sum += wirelen
            stats.prev = ts
            packets = flow.total
            flow.total = packets + 1
            if packets:
                last = flow.last
                gap = ts - last
                if packets == 1:
                    flow.flow_iat_k = gap
                else:
                    shifted = gap - flow.flow_iat_k
                    flow.flow_iat_sq += shifted * shifted
                if gap > threshold:
                    flow.active_sum += last - flow.active_start
                    flow.active_n += 1
                    flow.idle_sum += gap
                    flow.active_start = ts
                flow.last = ts
            if flow.tcp:
                stats.flags |= flags
                if flags == 0x10 and flow.handshake:
                    flow.ack_n += 1
                elif flags == 0x18 and flow.handshake:
                    flow.psh_n += 1
                    flow.ack_n += 1
                else:
                    self._tcp(flow, flags, fwd, ts)
            if plen and (inspect := flow.inspect) and (fwd or inspect < 0):  # as in frame
                poff += start
                self._inspect(flow, fwd, buf[poff : poff + plen], seq, plen, ts)
        return pos, count, volume, latest

    def _tcp(self, flow: Flow, flags: int, fwd: bool, ts: float) -> None:
        if flags & 0x02:
            flow.syn_n += 1
            if fwd and not flags & 0x10 and not flow.syn_ts:
                flow.syn_ts = ts
        elif fwd and flags & 0x10 and flow.syn_ts and not flow.handshake and flow.bwd:
            flow.handshake = ts - flow.syn_ts
        if flags & 0x01:
            flow.fin_n += 1
            flow.fin_dirs |= 1 if fwd else 2
            if flow.fin_dirs == 3 and not flow.closed_at:
                self._close(flow, "fin", ts)
        if flags & 0x04:
            flow.rst_n += 1
            if not flow.closed_at:
                self._close(flow, "rst", ts)
        if flags & 0x08:
            flow.psh_n += 1
        if flags & 0x10:
            flow.ack_n += 1
        if flags & 0x20:
            flow.urg_n += 1

    # --- flow life cycle -----------------------------------------------------------------------

    def _create(self, key: bytes, ts: float, seq: int, flags: int) -> Flow:
        """A new flow for a packet with ``key``; the flow's own key is its initiator's."""
        if self.active >= self.config.max_flows:
            self._evict_one(ts)
        rkey = _reverse(key)
        self.flows[key] = self.flows[rkey] = flow = self._new_flow(key, rkey, ts, seq, flags)
        self.active += 1
        self._schedule(flow, ts + min(self._idle, flow.limit))
        half = (len(key) - 7) // 2
        name = self.pdns.lookup(flow.key[3 + half : 3 + 2 * half])  # the responder's address
        if name is not None:
            flow.domain = name
            flow.domain_source = "pdns"
        for detector in self.detectors:
            self._record(flow, detector.on_init(flow), ts)
        if name is not None:
            self._domain_learned(flow, ts)
        return flow

    def _new_flow(self, key: bytes, rkey: bytes, ts: float, seq: int, flags: int) -> Flow:
        """The flow record, oriented (its key is the initiator's), with what to inspect."""
        proto = key[0]
        inspect = 0
        limit = self._active
        if proto == 6 or proto == 17:
            if _port(key, 0) in _DNS_PORTS or _port(key, 1) in _DNS_PORTS:
                inspect = -1  # every DNS message either way: answers feed passive DNS
                limit = self._dns_active
            elif proto == 6 and _SSH_PORT in (_port(key, 0), _port(key, 1)):
                inspect = INSPECT_SSH  # the login's encrypted sizes, both directions
            elif proto == 6 and {FTP_PORT, TELNET_PORT} & {_port(key, 0), _port(key, 1)}:
                inspect = INSPECT_LOGIN  # the server's words: "530", "Login incorrect"
            elif proto == 6:
                inspect = INSPECT_SEGMENTS
            if flags & 0x12 != 0x02:  # a SYN opens a connection: its sender is the initiator
                key = self.orientation.initiator(key, rkey, flags, ts)
        flow = Flow(key, ts, inspect, limit)
        if proto == 1 or proto == 58:
            flow.icmp = seq
        return flow

    def _close(self, flow: Flow, reason: str, ts: float) -> None:
        flow.closed_at = ts
        flow.end_reason = reason
        self._schedule(flow, ts + self.config.tcp_close_grace)

    def _schedule(self, flow: Flow, deadline: float) -> None:
        self._wheel.schedule(flow, deadline)

    def _deadline(self, flow: Flow) -> tuple[float, str]:
        config = self.config
        if flow.closed_at:
            return flow.closed_at + config.tcp_close_grace, flow.end_reason
        idle = flow.last + config.idle_timeout
        active = flow.first + flow.limit
        # Ticks check deadlines once a tick, so deadlines less than a tick apart are one, and
        # idle wins: a lone DNS query (both timeouts 60 s by default) ends "idle" as before, not
        # "active" milliseconds earlier. No packet joins the flow past its active timeout anyway.
        if idle <= active + config.tick_interval:
            return idle, "idle"
        return active, "active"

    def _due_reason(self, flow: Flow, ts: float) -> str:
        """Why a flow that a new packet cannot join ends."""
        if flow.closed_at:
            return flow.end_reason
        return "idle" if ts - flow.last > self._idle else "active"

    def _end(self, flow: Flow, reason: str, ts: float) -> None:
        if flow.done:
            return
        flow.done = True
        flows = self.flows
        if flows.get(flow.key) is flow:
            del flows[flow.key]
        rkey = _reverse(flow.key)
        if flows.get(rkey) is flow:
            del flows[rkey]
        self.active -= 1
        self.exported += 1
        if reason in _TIMED_OUT:
            self.orientation.remember(flow.key, ts)
        for detector in self.detectors:
            self._record(flow, detector.on_expire(flow), ts)
        self.export(flow, reason, ts)

    def _evict_one(self, ts: float) -> None:
        while (flow := self._wheel.pop_earliest()) is not None:
            if not flow.done:
                self.evicted += 1
                self._end(flow, "evicted", ts)
                return

    def tick(self, now: float) -> int:
        """Expire due flows (at most ``expiry_scan_per_tick`` wheel entries); returns how many."""
        wheel = self._wheel
        budget = self.config.expiry_scan_per_tick
        ended = 0
        while budget and (flow := wheel.pop_due(now)) is not None:
            budget -= 1
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
        # The wheel goes first and no copy of the table is made: each exported flow is freed at
        # once, so a flush of a million flows does not raise the peak memory.
        self._wheel.clear()
        flows = self.flows
        while flows:
            flow = flows.popitem()[1]
            if not flow.done:
                self._end(flow, flow.end_reason or "shutdown", max(now, flow.last))

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
        if flow.inspect == INSPECT_SSH:
            self._ssh(flow, fwd, payload, seq)
            return
        if flow.inspect == INSPECT_LOGIN:
            self._text_login(flow, fwd, payload, seq)
            return
        if flow.inspect < 0:
            if flow.tcp:
                self._dns_stream(flow, fwd, payload, seq, ts)
            else:
                self._dns(flow, fwd, payload, ts)
            return
        if not fwd:
            return
        if flow.tcp and flow.inspect == INSPECT_SEGMENTS and payload.startswith(b"SSH-"):
            # SSH on another port, known by the client's first line; the server's own line
            # may have come first, unseen (only the initiator's payload is searched for names).
            flow.inspect = INSPECT_SSH
            flow.pending = SshAuthObserver(late=bool(flow.bwd and flow.bwd.payload))
            self._ssh(flow, fwd, payload, seq)
            return
        pending = flow.pending
        if isinstance(pending, tuple):  # continuing a ClientHello: in-order segments only
            if seq != pending[1]:
                return
            payload = pending[0] + payload
            flow.pending = None
        flow.inspect -= 1
        done, name = sni_from_segments(payload)
        if not done:
            if flow.inspect:
                flow.pending = (payload, (seq + plen) & 0xFFFFFFFF)
            return
        source = "sni"
        if name is None:
            name = parse_http_host(payload)
            source = "http"
        if name and not is_ip_literal(name):
            flow.inspect = 0
            self._set_domain(flow, name, source, ts)

    def _ssh(self, flow: Flow, fwd: bool, payload: bytes, seq: int) -> None:
        """An SSH login judged from both directions' segments (agent/ssh_auth.py)."""
        observer = flow.pending
        if not isinstance(observer, SshAuthObserver):
            observer = flow.pending = SshAuthObserver()
        observer.feed(fwd, seq, payload)
        if observer.done:
            flow.inspect = 0
            if not (observer.failures or observer.success):
                flow.pending = None  # nothing to report: free it now

    def _text_login(self, flow: Flow, fwd: bool, payload: bytes, seq: int) -> None:
        """An FTP or Telnet login judged from the server's replies (agent/login_text.py)."""
        observer = flow.pending
        if not isinstance(observer, TextLoginObserver):
            server_port = _port(flow.key, 1)  # the key is the initiator's: the server's port
            observer = flow.pending = TextLoginObserver(server_port)
        observer.feed(fwd, seq, payload)
        if observer.done:
            flow.inspect = 0
            if not (observer.failures or observer.success):
                flow.pending = None

    def _dns_stream(self, flow: Flow, fwd: bool, payload: bytes, seq: int, ts: float) -> None:
        """DNS over TCP: the messages this segment completes (agent/dns_tcp.py)."""
        streams = flow.pending
        if not isinstance(streams, DnsStreams):
            streams = flow.pending = DnsStreams()
        for message in streams.feed(fwd, payload, seq):
            self._dns(flow, fwd, message, ts)
        if streams.done:
            flow.inspect = 0
            flow.pending = None

    def _dns(self, flow: Flow, fwd: bool, payload: bytes, ts: float) -> None:
        """One DNS message: the initiator's queries are counted (only their question name is
        read); anything else is parsed whole, its answers feeding passive DNS."""
        if fwd and (wire := query_name(payload)) is not None:
            tally = flow.dns
            if tally is None:
                tally = flow.dns = DnsTally()
            text = tally.add(wire)
            if flow.domain_source != "dns" and wire:
                self._set_domain(flow, text or wire_text(wire), "dns", ts)
            if payload[6:8] == b"\0\0":  # no answers (mDNS queries may list known ones)
                return
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
