"""Which end of a new flow is the server: the initiator is not always the first packet's sender.

A flow's initiator is normally the sender of its first packet. That is wrong when the first
packet seen is not the start of a connection: an SSH session idle longer than ``idle_timeout``
is cut in two, and its second piece often starts with a server packet; a capture may start in
the middle of a connection. Taken as it comes, the server would become the "initiator", the
responder port the client's ephemeral one, and the critical-port finding would be lost.

``Orientation.initiator`` decides, in this order:
1. a TCP packet with SYN and without ACK opens a connection: its sender is the initiator;
2. a flow of the same 5-tuple (and VLAN) that ended on a timeout within ``active_timeout``
   keeps the orientation it had (a bounded LRU of the keys of such flows);
3. otherwise Zeek's rule for partial connections (``TCPAnalyzer::WantConnection`` and
   ``UDPAnalyzer::WantConnection`` with ``likely_server_ports``): the roles flip when the
   sender's port is a likely server port and the receiver's is not; when both are, a TCP flow
   flips when the first packet is not a SYN-ACK and the sender's port is the lower. Zeek does
   not flip on a SYN-ACK alone, since a SYN-ACK scan would then make each target the
   initiator; we follow it.
Likely server ports: the system ports (below 1024), the configured critical ports of the
protocol and ``SERVICE_PORTS``. Only TCP and UDP flows are considered.
"""

from __future__ import annotations

from collections.abc import Iterable

from netmon.agent.config import CriticalPort

# Registered service ports above 1023 that clients rarely use as source ports.
SERVICE_PORTS = frozenset(
    {
        1433,  # MS SQL
        1521,  # Oracle
        2049,  # NFS
        3306,  # MySQL
        3389,  # RDP
        5060,  # SIP
        5353,  # mDNS
        5355,  # LLMNR
        5432,  # PostgreSQL
        5900,  # VNC
        5985,  # WinRM
        5986,  # WinRM over TLS
        6379,  # Redis
        8080,  # HTTP alternate
        8443,  # HTTPS alternate
        9200,  # Elasticsearch
        11211,  # memcached
        27017,  # MongoDB
    }
)
_SYN, _ACK = 0x02, 0x10
_PROTOCOLS = {"tcp": 6, "udp": 17}


def _ports(key: bytes) -> tuple[int, int]:
    """(sender's port, receiver's port) of a TCP/UDP key."""
    return (key[-4] << 8) | key[-3], (key[-2] << 8) | key[-1]


class Orientation:
    """Remembers the orientation of flows cut by a timeout; decides that of new flows."""

    __slots__ = ("_recent", "_capacity", "_keep", "_servers")

    def __init__(self, capacity: int, keep_s: float, critical: Iterable[CriticalPort]) -> None:
        # initiator key -> packet time the flow ended; insertion order is the LRU order.
        self._recent: dict[bytes, float] = {}
        self._capacity = capacity
        self._keep = keep_s
        servers: dict[int, set[int]] = {6: set(SERVICE_PORTS), 17: set(SERVICE_PORTS)}
        for entry in critical:
            servers[_PROTOCOLS[entry.protocol]].add(entry.port)
        self._servers = {proto: frozenset(ports) for proto, ports in servers.items()}

    def remember(self, key: bytes, ts: float) -> None:
        """A TCP/UDP flow with initiator ``key`` ended on a timeout at ``ts``."""
        if not self._capacity or (key[0] != 6 and key[0] != 17):
            return
        recent = self._recent
        recent.pop(key, None)
        if len(recent) >= self._capacity:
            del recent[next(iter(recent))]
        recent[key] = ts

    def initiator(self, key: bytes, rkey: bytes, flags: int, ts: float) -> bytes:
        """The initiator's key of a new flow whose first packet has ``key`` (``rkey`` reversed)
        and TCP ``flags``: ``key`` itself, or ``rkey`` when the receiver is the initiator."""
        proto = key[0]
        if proto != 6 and proto != 17:
            return key
        if proto == 6 and flags & (_SYN | _ACK) == _SYN:
            return key
        if self._recent:
            for candidate in (key, rkey):
                ended = self._recent.pop(candidate, None)
                if ended is not None and ts - ended <= self._keep:
                    return candidate
        return rkey if self._flips(proto, key, flags) else key

    def _flips(self, proto: int, key: bytes, flags: int) -> bool:
        servers = self._servers[proto]
        sport, dport = _ports(key)
        if not (sport < 1024 or sport in servers):
            return False
        if not (dport < 1024 or dport in servers):
            return True
        # Both plausible: favour the lower port as the server, never on a SYN-ACK (Zeek).
        return proto == 6 and not flags & _SYN and sport < dport

    def __len__(self) -> int:
        return len(self._recent)
