"""Community ID v1 flow hashes (https://github.com/corelight/community-id-spec).

``"1:" + base64(sha1(seed | ip_a | ip_b | proto | 0 | port_a | port_b))`` where (ip_a, port_a)
is the smaller endpoint. ICMP/ICMPv6 use type and code as ports, with request/reply types
mapped onto each other so both directions of an exchange share one id. Computed once per flow,
at export.
"""

from __future__ import annotations

import base64
import hashlib
import struct

# type -> counterpart type, for ICMP exchanges that are two-way (spec, section "ICMP").
_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {
    128: 129,
    129: 128,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    130: 131,
    131: 130,
    144: 145,
    145: 144,
}


def community_id(src: bytes, dst: bytes, proto: int, sport: int, dport: int, seed: int = 0) -> str:
    """The v1 Community ID of a flow (``src``/``dst`` packed IPs; ports or ICMP type/code)."""
    one_way = False
    if proto == 1 or proto == 58:
        pairs = _ICMP4_PAIRS if proto == 1 else _ICMP6_PAIRS
        icmp_type, icmp_code = sport, dport
        counterpart = pairs.get(icmp_type)
        if counterpart is None:
            one_way = True
            sport, dport = icmp_type, icmp_code
        else:
            sport, dport = icmp_type, counterpart
    if not one_way and (dst, dport) < (src, sport):
        src, dst, sport, dport = dst, src, dport, sport
    has_ports = proto in (1, 6, 17, 58, 132)
    data = struct.pack("!H", seed) + src + dst + bytes((proto, 0))
    if has_ports:
        data += struct.pack("!HH", sport, dport)
    digest = hashlib.sha1(data).digest()
    return "1:" + base64.b64encode(digest).decode("ascii")
