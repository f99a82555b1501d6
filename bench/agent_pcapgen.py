"""Fast synthetic pcap generation with struct (no scapy): TCP flows with handshakes and data.

Used by bench/agent.py. ``write_flows_pcap`` interleaves ``concurrency`` flows at a time so the
flow table holds many flows at once, as on a busy link.
"""

from __future__ import annotations

import struct
from pathlib import Path

_ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
_REC = struct.Struct("<IIII")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_SERVER_PORTS = (443, 80, 22, 8080, 3389, 53, 25, 993)
_PAYLOAD = bytes(range(256)) * 6


def _frame(src: bytes, dst: bytes, sport: int, dport: int, flags: int, payload_len: int) -> bytes:
    ip = _IP.pack(0x45, 0, 40 + payload_len, 0, 0x4000, 64, 6, 0, src, dst)
    tcp = _TCP.pack(sport, dport, 1000, 2000, 0x50, flags, 64240, 0, 0)
    return _ETH + ip + tcp + _PAYLOAD[:payload_len]


def _flow_step(step: int, packets: int) -> tuple[bool, int, int]:
    """(from client?, TCP flags, payload length) of packet ``step`` of a flow."""
    if step == 0:
        return True, 0x02, 0
    if step == 1:
        return False, 0x12, 0
    if step == 2:
        return True, 0x10, 0
    if step == packets - 2:
        return True, 0x11, 0
    if step == packets - 1:
        return False, 0x11, 0
    client = step % 2 == 1
    return client, 0x18, (step * 97) % 1400 if not client else (step * 13) % 300


def _addresses(index: int) -> tuple[bytes, bytes, int, int]:
    client = bytes((10, (index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF))
    server = bytes((172, 16, (index >> 8) & 0x0F, (index % 250) + 1))
    return client, server, 1024 + index % 60000, _SERVER_PORTS[index % len(_SERVER_PORTS)]


def write_flows_pcap(
    path: Path, flows: int, packets_per_flow: int, concurrency: int, step_s: float = 2e-5
) -> int:
    """Write ``flows * packets_per_flow`` frames; returns the number of frames written."""
    written = 0
    ts = 1_700_000_000.0
    with path.open("wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for batch_start in range(0, flows, concurrency):
            batch = range(batch_start, min(batch_start + concurrency, flows))
            endpoints = [_addresses(i) for i in batch]
            for step in range(packets_per_flow):
                client_side, flags, payload_len = _flow_step(step, packets_per_flow)
                chunk = []
                for client, server, cport, sport in endpoints:
                    if client_side:
                        frame = _frame(client, server, cport, sport, flags, payload_len)
                    else:
                        frame = _frame(server, client, sport, cport, flags, payload_len)
                    sec = int(ts)
                    chunk.append(_REC.pack(sec, int((ts - sec) * 1e6), len(frame), len(frame)))
                    chunk.append(frame)
                    ts += step_s
                handle.write(b"".join(chunk))
                written += len(endpoints)
    return written
