"""Raw-bytes packet decoding: link layer -> IPv4/IPv6 -> TCP/UDP/ICMP, without allocating objects.

``decode`` runs for every frame the flow table's inline fast path does not take (that path
covers untagged Ethernet + IPv4 without options + TCP/UDP), so it also works on indices into
the frame and returns one flat tuple. The flow key it builds is
``proto | vlan | src addr | dst addr | ports`` as raw bytes; the flow table keys its dict on it
directly and unpacks it only for a new flow. Protocols without ports have zero ports, and so
have ICMP/ICMPv6 queries (echo and the like: request and reply share one flow). ICMP error
messages (v4 types 3, 11, 12; v6 types 1-4) put ``type | code`` in both port halves instead,
the same read either way: each (type, code) is a flow of its own between two hosts, so the
port-unreachable answers to a UDP scan are counted apart from a ping between the same hosts.

Link types: Ethernet (1) with 802.1Q/802.1ad tags, Linux cooked SLL (113) and SLL2 (276), raw IP
(12, 101, 228, 229) and BSD loopback (0, 108).

IP fragments are not reassembled. The first fragment carries the ports and goes to its 5-tuple
flow; later fragments are reported with ``FRAG_LATER`` and the fragment id, and the flow table
maps them to the flow of their first fragment (or to a port-less flow when the first fragment
was not seen). Every fragment's frame bytes therefore count exactly once.
"""

from __future__ import annotations

import struct

LINK_ETHERNET = 1
LINK_SLL = 113
LINK_SLL2 = 276
LINK_RAW = (12, 101)
LINK_IPV4 = 228
LINK_IPV6 = 229
LINK_NULL = (0, 108)
SUPPORTED_LINKTYPES = frozenset({0, 1, 12, 101, 108, 113, 228, 229, 276})

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

FRAG_NONE = 0
FRAG_FIRST = 1  # offset 0, more fragments follow: has the ports
FRAG_LATER = 2  # offset > 0: no L4 header

# What decode returns when the frame is not IP (ARP, LLDP, ...): counted, not metered.
NOT_IP = ()

_ZERO_PORTS = b"\x00\x00\x00\x00"
# ICMP error messages: destination unreachable, time exceeded, parameter problem (v4); and
# unreachable, packet too big, time exceeded, parameter problem (v6).
_ICMP4_ERRORS = frozenset({3, 11, 12})
_ICMP6_ERRORS = frozenset({1, 2, 3, 4})
_IPV6_EXT_HEADERS = frozenset({0, 43, 60})
_unpack_seq = struct.Struct("!I").unpack_from
_unpack_frag6 = struct.Struct("!HI").unpack_from
# proto/vlan prefix of a key, precomputed for untagged traffic.
_PREFIX = tuple(bytes((proto, 0, 0)) for proto in range(256))

Decoded = tuple[bytes, int, int, int, int, int, int, bytes]


def _prefix(proto: int, vlan: int) -> bytes:
    return _PREFIX[proto] if not vlan else bytes((proto, vlan >> 8, vlan & 0xFF))


def decode(data: bytes, linktype: int) -> Decoded | tuple[()] | None:
    """Decode one frame: ``(key, tcp_flags, window, seq, payload_off, payload_len, frag, frag_id)``.

    Returns ``NOT_IP`` for frames that are not IP and ``None`` for truncated or garbage frames.
    """
    n = len(data)
    vlan = 0
    if linktype == 1:
        if n < 14:
            return None
        etype = (data[12] << 8) | data[13]
        off = 14
        while etype == 0x8100 or etype == 0x88A8:
            if n < off + 4:
                return None
            if not vlan:
                vlan = ((data[off] << 8) | data[off + 1]) & 0x0FFF
            etype = (data[off + 2] << 8) | data[off + 3]
            off += 4
    elif linktype == 276:
        if n < 20:
            return None
        etype = (data[0] << 8) | data[1]
        off = 20
    elif linktype == 113:
        if n < 16:
            return None
        etype = (data[14] << 8) | data[15]
        off = 16
    else:
        etype, off = _other_link(data, linktype)
        if etype < 0:
            return None
    if etype == 0x0800:
        return _ipv4(data, off, n, vlan)
    if etype == 0x86DD:
        return _ipv6(data, off, n, vlan)
    return NOT_IP


def _other_link(data: bytes, linktype: int) -> tuple[int, int]:
    """Ethertype and offset for raw IP and BSD loopback; -1 when the frame is unusable."""
    if not data:
        return -1, 0
    if linktype in LINK_RAW:
        version = data[0] >> 4
        return (0x0800 if version == 4 else 0x86DD if version == 6 else -1), 0
    if linktype == LINK_IPV4:
        return 0x0800, 0
    if linktype == LINK_IPV6:
        return 0x86DD, 0
    if linktype in LINK_NULL:
        if len(data) < 4:
            return -1, 0
        family = data[0] if data[0] else data[3]  # host byte order: either end
        if family == 2:
            return 0x0800, 4
        if family in (10, 24, 28, 30):
            return 0x86DD, 4
        return 0, 4
    return -1, 0


def _ipv4(data: bytes, off: int, n: int, vlan: int) -> Decoded | None:
    if n < off + 20:
        return None
    vihl = data[off]
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20:
        return None
    total = (data[off + 2] << 8) | data[off + 3]
    if total < ihl:
        return None
    end = off + total
    if end > n:
        end = n  # snaplen-truncated: count what we have
    frag_field = (data[off + 6] << 8) | data[off + 7]
    proto = data[off + 9]
    l4 = off + ihl
    frag = FRAG_NONE
    frag_id = b""
    if frag_field & 0x3FFF:
        frag_id = data[off + 4 : off + 6] + data[off + 12 : off + 20] + _PREFIX[proto][:1]
        if frag_field & 0x1FFF:
            key = _prefix(proto, vlan) + data[off + 12 : off + 20] + _ZERO_PORTS
            # lengths never negative: a frame cut inside the header (found by tests/fuzz)
            return (key, 0, 0, 0, l4, end - l4 if end > l4 else 0, FRAG_LATER, frag_id)
        frag = FRAG_FIRST
    if proto == 6:
        if n < l4 + 20:
            return None
        doff = (data[l4 + 12] >> 4) << 2
        if doff < 20:
            return None
        if ihl == 20:
            key = _prefix(proto, vlan) + data[off + 12 : off + 24]
        else:
            key = _prefix(proto, vlan) + data[off + 12 : off + 20] + data[l4 : l4 + 4]
        poff = l4 + doff
        return (
            key,
            data[l4 + 13],
            (data[l4 + 14] << 8) | data[l4 + 15],
            _unpack_seq(data, l4 + 4)[0],
            poff,
            end - poff if end > poff else 0,
            frag,
            frag_id,
        )
    if proto == 17:
        if n < l4 + 8:
            return None
        if ihl == 20:
            key = _prefix(proto, vlan) + data[off + 12 : off + 24]
        else:
            key = _prefix(proto, vlan) + data[off + 12 : off + 20] + data[l4 : l4 + 4]
        return (key, 0, 0, 0, l4 + 8, end - l4 - 8 if end > l4 + 8 else 0, frag, frag_id)
    if proto == 1:
        if n < l4 + 4:
            return None
        ports = data[l4 : l4 + 2] * 2 if data[l4] in _ICMP4_ERRORS else _ZERO_PORTS
        key = _prefix(proto, vlan) + data[off + 12 : off + 20] + ports
        plen = end - l4 - 4 if end > l4 + 4 else 0
        return (key, 0, 0, (data[l4] << 8) | data[l4 + 1], l4 + 4, plen, frag, frag_id)
    key = _prefix(proto, vlan) + data[off + 12 : off + 20] + _ZERO_PORTS
    return (key, 0, 0, 0, l4, end - l4 if end > l4 else 0, frag, frag_id)


def _ipv6(data: bytes, off: int, n: int, vlan: int) -> Decoded | None:
    if n < off + 40 or data[off] >> 4 != 6:
        return None
    end = off + 40 + ((data[off + 4] << 8) | data[off + 5])
    if end > n:
        end = n
    proto = data[off + 6]
    l4 = off + 40
    frag = FRAG_NONE
    frag_id = b""
    while proto in _IPV6_EXT_HEADERS or proto == 44 or proto == 51:
        if n < l4 + 8:
            return None
        if proto == 44:
            offset_flags, ident = _unpack_frag6(data, l4 + 2)
            next_proto = data[l4]
            frag_id = ident.to_bytes(4, "big") + data[off + 8 : off + 40] + bytes((next_proto,))
            if offset_flags & 0xFFF8:
                key = _prefix(next_proto, vlan) + data[off + 8 : off + 40] + _ZERO_PORTS
                plen = end - l4 - 8 if end > l4 + 8 else 0
                return (key, 0, 0, 0, l4 + 8, plen, FRAG_LATER, frag_id)
            if offset_flags & 1:
                frag = FRAG_FIRST
            proto = next_proto
            l4 += 8
        elif proto == 51:
            proto, l4 = data[l4], l4 + ((data[l4 + 1] + 2) << 2)
        else:
            proto, l4 = data[l4], l4 + ((data[l4 + 1] + 1) << 3)
    if proto == 6:
        if n < l4 + 20:
            return None
        doff = (data[l4 + 12] >> 4) << 2
        if doff < 20:
            return None
        key = _prefix(proto, vlan) + data[off + 8 : off + 40] + data[l4 : l4 + 4]
        poff = l4 + doff
        return (
            key,
            data[l4 + 13],
            (data[l4 + 14] << 8) | data[l4 + 15],
            _unpack_seq(data, l4 + 4)[0],
            poff,
            end - poff if end > poff else 0,
            frag,
            frag_id,
        )
    if proto == 17:
        if n < l4 + 8:
            return None
        key = _prefix(proto, vlan) + data[off + 8 : off + 40] + data[l4 : l4 + 4]
        return (key, 0, 0, 0, l4 + 8, end - l4 - 8 if end > l4 + 8 else 0, frag, frag_id)
    if proto == 58:
        if n < l4 + 4:
            return None
        ports = data[l4 : l4 + 2] * 2 if data[l4] in _ICMP6_ERRORS else _ZERO_PORTS
        key = _prefix(proto, vlan) + data[off + 8 : off + 40] + ports
        plen = end - l4 - 4 if end > l4 + 4 else 0
        return (key, 0, 0, (data[l4] << 8) | data[l4 + 1], l4 + 4, plen, frag, frag_id)
    key = _prefix(proto, vlan) + data[off + 8 : off + 40] + _ZERO_PORTS
    return (key, 0, 0, 0, l4, end - l4 if end > l4 else 0, frag, frag_id)
