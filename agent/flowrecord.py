"""The per-flow record: slotted, compact, updated in place; turned into a FlowObserved at export.

A ``Flow`` *is* the ``DirStats`` of its initiator->responder ("fwd") direction and holds the
reverse one ("bwd"): one object less per flow, which matters with a million flows (see
docs/agent.md, memory). Nothing per packet is kept: frame lengths are summed with their
squares as exact integers, the flow's gaps as squares shifted by its first gap (their sum is
the duration), each direction's inter-arrival times by Welford's running mean and sum of
squared deviations; means and deviations are computed when the flow ends. Standard deviations
are sample deviations (n - 1), 0 with fewer than two values, as CICFlowMeter.
"""

from __future__ import annotations

import math
import socket

from netmon.agent.communityid import community_id
from netmon.agent.dns_queries import DnsTally
from netmon.agent.dns_tcp import DnsStreams
from netmon.agent.login_text import TextLoginObserver
from netmon.agent.ssh_auth import SshAuthObserver
from netmon.storage.contract.events import (
    Detection,
    FlowFeatures,
    FlowObserved,
    max_severity,
    new_event_id,
)


class DirStats:
    """One direction's counters and running statistics."""

    __slots__ = (
        "packets",
        "bytes",
        "payload",
        "flags",
        "len_min",
        "len_max",
        "len_sum",
        "len_sq",
        "iat_min",
        "iat_max",
        "iat_mean",
        "iat_m2",
        "prev",
        "init_win",
    )

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.payload = 0
        self.flags = 0
        self.len_min = 0
        self.len_max = 0
        self.len_sum = 0  # frame lengths and their squares: exact integers
        self.len_sq = 0
        self.iat_min = 0.0
        self.iat_max = 0.0
        self.iat_mean = 0.0
        self.iat_m2 = 0.0
        self.prev = 0.0  # time of this direction's previous packet
        self.init_win = 0


class Flow(DirStats):
    """A bidirectional flow; ``key`` is the initiator's direction (the table also maps the
    responder's, computed again when the flow ends rather than kept: 8 bytes a flow).

    The inherited DirStats fields are the forward direction's; ``bwd`` is the reverse one,
    created with the first reply (scans and one-way floods never pay for it).
    """

    __slots__ = (
        "key",
        "first",
        "last",
        "limit",
        "bwd",
        "total",
        "flow_iat_k",
        "flow_iat_sq",
        "active_start",
        "active_sum",
        "active_n",
        "idle_sum",
        "tcp",
        "syn_n",
        "fin_n",
        "rst_n",
        "psh_n",
        "ack_n",
        "urg_n",
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
        "pending",
        "dns",
        "done",
    )

    def __init__(self, key: bytes, ts: float, inspect: int, limit: float) -> None:
        DirStats.__init__(self)
        self.key = key
        self.first = ts
        self.last = ts
        # The active timeout of this flow: ``dns_active_timeout`` on a DNS port, else
        # ``active_timeout`` (one of two shared floats: no memory per flow beyond the slot).
        self.limit = limit
        self.bwd: DirStats | None = None
        self.total = 0  # packets, both directions
        self.flow_iat_k = 0.0  # the first gap between packets (either direction)
        self.flow_iat_sq = 0.0  # sum of the squared gaps less flow_iat_k
        self.active_start = ts
        self.active_sum = 0.0
        self.active_n = 0
        self.idle_sum = 0.0
        self.tcp = key[0] == 6
        # TCP packets with each flag set, both directions.
        self.syn_n = self.fin_n = self.rst_n = self.psh_n = self.ack_n = self.urg_n = 0
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
        # A ClientHello being reassembled: (bytes so far, next expected TCP sequence number);
        # or, on a TCP flow to a DNS port, the messages of both directions being framed; or,
        # on an SSH flow, its login's observer (kept to the end once it counted something).
        self.pending: (
            tuple[bytes, int] | DnsStreams | SshAuthObserver | TextLoginObserver | None
        ) = None
        self.dns: DnsTally | None = None  # the initiator's DNS queries, once it sent one
        self.done = False  # exported; lazily dropped from the expiry heap

    # --- the 5-tuple, decoded from the key only when needed -----------------------------------

    @property
    def fwd(self) -> DirStats:
        """The initiator->responder direction's statistics (the flow itself)."""
        return self

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


_NO_REPLY = DirStats()  # read-only stand-in for a flow that never saw a reply


def ip_text(packed: bytes) -> str:
    """Packed IPv4/IPv6 address as text."""
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def _std(m2: float, n: int) -> float:
    return math.sqrt(m2 / (n - 1)) if n > 1 and m2 > 0 else 0.0


def _len_std(stats: DirStats) -> float:
    """Sample deviation of the frame lengths from their exact integer sums."""
    n = stats.packets
    spread = n * stats.len_sq - stats.len_sum * stats.len_sum  # n * n * variance, exact
    return math.sqrt(spread / (n * (n - 1))) if n > 1 and spread > 0 else 0.0


def features(flow: Flow) -> FlowFeatures:
    """The classifier's statistics for a flow, from its running values."""
    fwd, bwd = flow.fwd, flow.bwd or _NO_REPLY
    duration = flow.last - flow.first  # the exact sum of the gaps between packets
    packets = fwd.packets + bwd.packets
    gaps = packets - 1
    shifted = duration - flow.flow_iat_k * gaps  # the sum of the gaps less the first, each
    active_sum, active_n = flow.active_sum, flow.active_n
    last_active = flow.last - flow.active_start
    if last_active > 0:
        active_sum += last_active
        active_n += 1
    return FlowFeatures(
        duration=duration,
        fwd_pkt_len_min=float(fwd.len_min),
        fwd_pkt_len_max=float(fwd.len_max),
        fwd_pkt_len_mean=fwd.len_sum / fwd.packets if fwd.packets else 0.0,
        fwd_pkt_len_std=_len_std(fwd),
        bwd_pkt_len_min=float(bwd.len_min),
        bwd_pkt_len_max=float(bwd.len_max),
        bwd_pkt_len_mean=bwd.len_sum / bwd.packets if bwd.packets else 0.0,
        bwd_pkt_len_std=_len_std(bwd),
        fwd_iat_min=fwd.iat_min,
        fwd_iat_max=fwd.iat_max,
        fwd_iat_mean=fwd.iat_mean,
        fwd_iat_std=_std(fwd.iat_m2, fwd.packets - 1),
        bwd_iat_min=bwd.iat_min,
        bwd_iat_max=bwd.iat_max,
        bwd_iat_mean=bwd.iat_mean,
        bwd_iat_std=_std(bwd.iat_m2, bwd.packets - 1),
        flow_iat_mean=duration / gaps if gaps else 0.0,
        flow_iat_std=_std(flow.flow_iat_sq - shifted * shifted / gaps, gaps) if gaps else 0.0,
        bytes_per_s=(fwd.bytes + bwd.bytes) / duration if duration > 0 else 0.0,
        packets_per_s=packets / duration if duration > 0 else 0.0,
        handshake_duration=flow.handshake,
        active_mean=active_sum / active_n if active_n else 0.0,
        idle_mean=flow.idle_sum / flow.active_n if flow.active_n else 0.0,  # one idle per active
        down_up_ratio=bwd.packets / fwd.packets if fwd.packets else 0.0,
        syn_count=flow.syn_n,
        fin_count=flow.fin_n,
        rst_count=flow.rst_n,
        psh_count=flow.psh_n,
        ack_count=flow.ack_n,
        urg_count=flow.urg_n,
        fwd_init_win=fwd.init_win,
        bwd_init_win=bwd.init_win,
    )


def flow_event(flow: Flow, now: float, reason: str, agent_id: str, branch: str) -> FlowObserved:
    """The FlowObserved record of an ended flow."""
    src, dst, sport, dport = flow.endpoints()
    proto = flow.protocol
    detections = tuple(flow.detections or ())
    fwd, bwd = flow.fwd, flow.bwd or _NO_REPLY
    dns = flow.dns
    login = flow.pending if isinstance(flow.pending, SshAuthObserver | TextLoginObserver) else None
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
        dns_queries=dns.queries if dns is not None else 0,
        dns_names=dns.names if dns is not None else 0,
        dns_sample=tuple(dns.sample) if dns is not None else (),
        auth_failures=login.failures if login is not None else 0,
        auth_success=login is not None and login.success,
        end_reason=reason,  # type: ignore[arg-type]
        features=features(flow),
        detections=detections,
        severity=max_severity([d.severity for d in detections]),
    )
