"""What one flow looks like to the behaviour detectors: a failed probe, a half-open handshake,
an unanswered UDP datagram, an ICMP port-unreachable answer, a login-shaped session.

These read only the flow's counters and OR-ed TCP flags (FlowObserved), so they cost a few
attribute reads per flow; the detectors call them on every flow the worker reads.
"""

from __future__ import annotations

from netmon.storage.contract.events import FlowObserved

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
# ICMP destination unreachable / port unreachable (RFC 792), ICMPv6 type 1 code 4 (RFC 4443).
# The agent keys ICMP error flows by (type, code) and reports them as src_port/dst_port.
PORT_UNREACHABLE = {ICMP: (3, 3), ICMPV6: (1, 4)}


def is_failed_probe(flow: FlowObserved) -> bool:
    """A TCP connection attempt that carried no data and failed or was torn down at once.

    Zeek's scan policy counts the same shapes: a SYN left unanswered (S0), a SYN answered by a
    reset (REJ), and a handshake the initiator reset before any data (a connect scan's close,
    or a SYN scan's reset after the SYN-ACK). Only flows whose initiator sent the SYN count, so
    the second piece of a long session cut by a timeout never looks like a probe.
    """
    return (
        flow.protocol == TCP
        and flow.src2dst_tcp_flags & SYN != 0
        and flow.src2dst_payload_bytes == 0
        and flow.dst2src_payload_bytes == 0
        and (
            flow.dst2src_packets == 0
            or (flow.src2dst_tcp_flags | flow.dst2src_tcp_flags) & RST != 0
        )
    )


def is_half_open(flow: FlowObserved) -> bool:
    """A SYN whose handshake the initiator never completed (no ACK from it, no data)."""
    return (
        flow.protocol == TCP
        and flow.src2dst_tcp_flags & (SYN | ACK) == SYN
        and flow.src2dst_payload_bytes == 0
    )


def is_unanswered_udp(flow: FlowObserved) -> bool:
    """A UDP flow that got nothing back (a closed or filtered port, or a silent service)."""
    return flow.protocol == UDP and flow.dst2src_packets == 0


def port_unreachables(flow: FlowObserved) -> int:
    """ICMP/ICMPv6 port-unreachable packets this flow carried from its source (the prober's
    target) to its destination (the prober); 0 for any other flow."""
    code = PORT_UNREACHABLE.get(flow.protocol)
    if code is None or (flow.src_port, flow.dst_port) != code:
        return 0
    return flow.src2dst_packets


def is_established_session(flow: FlowObserved) -> bool:
    """A TCP session the initiator opened that carried data both ways."""
    return (
        flow.protocol == TCP
        and flow.src2dst_tcp_flags & SYN != 0
        and flow.src2dst_payload_bytes > 0
        and flow.dst2src_payload_bytes > 0
    )
