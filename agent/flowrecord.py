"""The per-flow record: slotted, compact, updated in place; turned into a FlowObserved at export.

A ``Flow`` holds two ``DirStats`` (initiator->responder "fwd", the reverse "bwd"). Statistics are
running values (Welford's mean and sum of squared deviations), so nothing per packet is kept.
Standard deviations are sample deviations (n - 1), 0 with fewer than two values, as CICFlowMeter.
"""

from __future__ import annotations

import math
import socket

from agent.communityid import community_id
from storage.events import Detection, FlowFeatures, FlowObserved, max_severity, new_event_id


class DirStats:
    """One direction's counters and running statistics."""

    __slots__ = (
        "packets",
        "bytes",
        "payload",
        "flags",
        "len_min",
        "len_max",
        "len_mean",
        "len_m2",
        "iat_min",
        "iat_max",
        "iat_mean",
        "iat_m2",
        "last",
        "init_win",
    )

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.payload = 0
        self.flags = 0
        self.len_min = 0
        self.len_max = 0
        self.len_mean = 0.0
        self.len_m2 = 0.0
        self.iat_min = 0.0
        self.iat_max = 0.0
        self.iat_mean = 0.0
        self.iat_m2 = 0.0
        self.last = 0.0
        self.init_win = 0


class Flow:
    """A bidirectional flow; ``key`` is the initiator's direction, ``rkey`` the responder's."""

    __slots__ = (
        "key",
        "rkey",
        "first",
        "last",
        "fwd",
        "bwd",
        "iat_mean",
        "iat_m2",
        "active_start",
        "active_sum",
        "active_n",
        "idle_sum",
        "idle_n",
        "tcp_counts",
        "syn_ts",
        "handshake",
        "fin_dirs",
        "closed_at",
        "end_reason",
        "icmp",
        "event_id",
        "domain",
        "domain_source",
        "detections",
        "inspect",
        "tls_buf",
        "tls_seq",
        "done",
    )

    def __init__(self, key: bytes, rkey: bytes, ts: float, inspect: int) -> None:
        self.key = key
        self.rkey = rkey
        self.first = ts
        self.last = ts
        self.fwd = DirStats()
        self.bwd = DirStats()
        self.iat_mean = 0.0
        self.iat_m2 = 0.0
        self.active_start = ts
        self.active_sum = 0.0
        self.active_n = 0
        self.idle_sum = 0.0
        self.idle_n = 0
        # TCP only: [syn, fin, rst, psh, ack, urg] packet counts (None for other protocols).
        self.tcp_counts: list[int] | None = None
        self.syn_ts = 0.0
        self.handshake = 0.0
        self.fin_dirs = 0
        self.closed_at = 0.0
        self.end_reason = ""
        self.icmp = 0  # ICMP type << 8 | code of the first packet
        self.event_id = ""
        self.domain = ""
        self.domain_source: str | None = None
        self.detections: list[Detection] | None = None
        # Payload packets still worth looking at for a name (0: stop looking).
        self.inspect = inspect
        self.tls_buf = b""
        self.tls_seq = -1
        self.done = False  # exported; lazily dropped from the expiry heap

    # --- the 5-tuple, decoded from the key only when needed -----------------------------------

    @property
    def protocol(self) -> int:
        """IANA protocol number."""
        return self.key[0]

    @property
    def vlan(self) -> int:
        """802.1Q VLAN id (0 untagged)."""
        return (self.key[1] << 8) | self.key[2]

    def endpoints(self) -> tuple[bytes, bytes, int, int]:
        """(src packed IP, dst packed IP, src port, dst port) of the initiator's direction."""
        key = self.key
        half = (len(key) - 7) // 2
        src = key[3 : 3 + half]
        dst = key[3 + half : 3 + 2 * half]
        ports = key[3 + 2 * half :]
        if key[0] in (1, 58):
            return src, dst, self.icmp >> 8, self.icmp & 0xFF
        return src, dst, (ports[0] << 8) | ports[1], (ports[2] << 8) | ports[3]

    def id(self, now: float) -> str:
        """The flow's event id, created on first use (a DetectionRaised may need it early)."""
        if not self.event_id:
            self.event_id = new_event_id(now)
        return self.event_id


def ip_text(packed: bytes) -> str:
    """Packed IPv4/IPv6 address as text."""
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def _std(m2: float, n: int) -> float:
    return math.sqrt(m2 / (n - 1)) if n > 1 and m2 > 0 else 0.0


def features(flow: Flow, threshold: float) -> FlowFeatures:
    """The classifier's statistics for a flow, from its running values."""
    fwd, bwd = flow.fwd, flow.bwd
    duration = flow.last - flow.first
    packets = fwd.packets + bwd.packets
    active_sum, active_n = flow.active_sum, flow.active_n
    last_active = flow.last - flow.active_start
    if last_active > 0:
        active_sum += last_active
        active_n += 1
    counts = flow.tcp_counts or (0, 0, 0, 0, 0, 0)
    return FlowFeatures(
        duration=duration,
        fwd_pkt_len_min=float(fwd.len_min),
        fwd_pkt_len_max=float(fwd.len_max),
        fwd_pkt_len_mean=fwd.len_mean,
        fwd_pkt_len_std=_std(fwd.len_m2, fwd.packets),
        bwd_pkt_len_min=float(bwd.len_min),
        bwd_pkt_len_max=float(bwd.len_max),
        bwd_pkt_len_mean=bwd.len_mean,
        bwd_pkt_len_std=_std(bwd.len_m2, bwd.packets),
        fwd_iat_min=fwd.iat_min,
        fwd_iat_max=fwd.iat_max,
        fwd_iat_mean=fwd.iat_mean,
        fwd_iat_std=_std(fwd.iat_m2, fwd.packets - 1),
        bwd_iat_min=bwd.iat_min,
        bwd_iat_max=bwd.iat_max,
        bwd_iat_mean=bwd.iat_mean,
        bwd_iat_std=_std(bwd.iat_m2, bwd.packets - 1),
        flow_iat_mean=flow.iat_mean,
        flow_iat_std=_std(flow.iat_m2, packets - 1),
        bytes_per_s=(fwd.bytes + bwd.bytes) / duration if duration > 0 else 0.0,
        packets_per_s=packets / duration if duration > 0 else 0.0,
        handshake_duration=flow.handshake,
        active_mean=active_sum / active_n if active_n else 0.0,
        idle_mean=flow.idle_sum / flow.idle_n if flow.idle_n else 0.0,
        down_up_ratio=bwd.packets / fwd.packets if fwd.packets else 0.0,
        syn_count=counts[0],
        fin_count=counts[1],
        rst_count=counts[2],
        psh_count=counts[3],
        ack_count=counts[4],
        urg_count=counts[5],
        fwd_init_win=fwd.init_win,
        bwd_init_win=bwd.init_win,
    )


def flow_event(
    flow: Flow, now: float, reason: str, agent_id: str, branch: str, threshold: float
) -> FlowObserved:
    """The FlowObserved record of an ended flow."""
    src, dst, sport, dport = flow.endpoints()
    proto = flow.protocol
    detections = tuple(flow.detections or ())
    fwd, bwd = flow.fwd, flow.bwd
    return FlowObserved(
        id=flow.id(now),
        ts=max(now, flow.last),
        branch=branch,
        agent_id=agent_id,
        first_seen=flow.first,
        last_seen=flow.last,
        src_ip=ip_text(src),
        src_port=sport,
        dst_ip=ip_text(dst),
        dst_port=dport,
        protocol=proto,
        vlan=flow.vlan,
        src2dst_packets=fwd.packets,
        src2dst_bytes=fwd.bytes,
        dst2src_packets=bwd.packets,
        dst2src_bytes=bwd.bytes,
        src2dst_payload_bytes=fwd.payload,
        dst2src_payload_bytes=bwd.payload,
        src2dst_tcp_flags=fwd.flags,
        dst2src_tcp_flags=bwd.flags,
        community_id=community_id(src, dst, proto, sport, dport),
        domain=flow.domain,
        domain_source=flow.domain_source,  # type: ignore[arg-type]
        end_reason=reason,  # type: ignore[arg-type]
        features=features(flow, threshold),
        detections=detections,
        severity=max_severity([d.severity for d in detections]),
    )
