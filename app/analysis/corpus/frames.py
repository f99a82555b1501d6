"""Raw Ethernet/IPv4/TCP/UDP frames and a pcap writer, built with struct.

scapy builds a packet in ~0.5 ms; the corpus has ~60,000 packets and must build in seconds,
so frames are assembled here from bytes (checksums included, so tshark sees valid packets)
and scapy is used only to encode DNS messages.
"""

from __future__ import annotations

import socket
import struct
import sys
from array import array
from pathlib import Path

ETHER_HEADER = bytes.fromhex("0000000000020000000000010800")
TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20}


def _checksum(data: bytes) -> bytes:
    """The Internet checksum (RFC 1071) of data, as the two bytes to store."""
    if len(data) % 2:
        data += b"\x00"
    words = array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total >> 16) + (total & 0xFFFF)
    return struct.pack("!H", ~total & 0xFFFF)


def _ip(src: bytes, dst: bytes, proto: int, body_len: int, ident: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + body_len, ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst
    )
    return header[:10] + _checksum(header) + header[12:]


def tcp_frame(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: str,
    seq: int,
    ack: int,
    window: int,
    payload: bytes = b"",
    ident: int = 0,
) -> bytes:
    """One Ethernet frame carrying a TCP segment (flags as letters: "S", "SA", "PA", "FA", "R")."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    bits = sum(TCP_FLAGS[c] for c in flags)
    tcp = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, bits, window, 0, 0
    )
    pseudo = struct.pack("!4s4sBBH", s, d, 0, 6, len(tcp) + len(payload))
    check = _checksum(pseudo + tcp + payload)
    tcp = tcp[:16] + check + tcp[18:]
    return ETHER_HEADER + _ip(s, d, 6, len(tcp) + len(payload), ident) + tcp + payload


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    """One Ethernet frame carrying a UDP datagram."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    length = 8 + len(payload)
    pseudo = struct.pack("!4s4sBBH", s, d, 0, 17, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0)
    check = _checksum(pseudo + udp + payload)
    udp = udp[:6] + (b"\xff\xff" if check == b"\x00\x00" else check)
    return ETHER_HEADER + _ip(s, d, 17, length, ident) + udp + payload


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> None:
    """A classic pcap (microsecond timestamps, Ethernet link type) of time-ordered frames."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for ts, frame in sorted(frames, key=lambda item: item[0]):
            seconds = int(ts)
            micros = int(round((ts - seconds) * 1_000_000))
            if micros == 1_000_000:
                seconds, micros = seconds + 1, 0
            out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
            out.write(frame)
