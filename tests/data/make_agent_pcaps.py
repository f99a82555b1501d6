"""Make the small scapy-built captures the agent tests replay (committed next to this script).

Run: .venv/bin/python tests/data/make_agent_pcaps.py   (deterministic: fixed times, no randomness)

Each file exercises what real loopback captures cannot: IPv6 with extension headers, 802.1Q
and QinQ tags, IP fragments in and out of order, a TLS ClientHello split over TCP segments and
over TLS records, malformed frames, Linux cooked (SLL v1) frames and pcapng.
"""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, CookedLinux, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, wrpcap

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000.0


def client_hello(server_name: str, padding: int = 0) -> bytes:
    """A TLS 1.2-style ClientHello handshake message with an SNI (and optional padding ext)."""
    name = server_name.encode()
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    extensions = struct.pack("!HH", 0, len(sni)) + sni
    if padding:
        extensions += struct.pack("!HH", 21, padding) + b"\x00" * padding
    body = (
        b"\x03\x03"
        + bytes(range(32))  # random
        + b"\x00"  # session id
        + struct.pack("!H", 4)
        + b"\x13\x01\xc0\x2f"  # cipher suites
        + b"\x01\x00"  # compression: null
        + struct.pack("!H", len(extensions))
        + extensions
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


def tls_records(handshake: bytes, record_size: int = 1 << 14) -> bytes:
    """The handshake message wrapped in TLS records of at most ``record_size`` bytes."""
    out = b""
    for start in range(0, len(handshake), record_size):
        part = handshake[start : start + record_size]
        out += b"\x16\x03\x01" + struct.pack("!H", len(part)) + part
    return out


def write_raw_pcap(path: Path, frames: list[bytes], linktype: int = 1) -> None:
    """A classic pcap of raw frames (scapy refuses to build frames this broken)."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for index, frame in enumerate(frames):
        out += struct.pack("<IIII", int(T0), index * 1000, len(frame), len(frame)) + frame
    path.write_bytes(out)


def stamp(packets: list[Packet], start: float = T0, step: float = 0.001) -> list[Packet]:
    """Give packets increasing capture times."""
    for index, packet in enumerate(packets):
        packet.time = start + index * step
    return packets


def tcp_session(
    l3: type, client: str, server: str, cport: int, sport: int, payloads: list[bytes]
) -> list[Packet]:
    """Handshake, client segments (in order), one server reply, FIN both ways, last ACK."""

    def seg(src_is_client: bool, flags: str, seq: int, ack: int, data: bytes = b"") -> Packet:
        src, dst, sp, dp = (
            (client, server, cport, sport) if src_is_client else (server, client, sport, cport)
        )
        packet = (
            Ether()
            / l3(src=src, dst=dst)
            / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, window=501)
        )
        return packet / Raw(data) if data else packet

    c_seq, s_seq = 1000, 5000
    out = [
        seg(True, "S", c_seq, 0),
        seg(False, "SA", s_seq, c_seq + 1),
        seg(True, "A", c_seq + 1, s_seq + 1),
    ]
    c_seq += 1
    s_seq += 1
    for data in payloads:
        out.append(seg(True, "PA", c_seq, s_seq, data))
        c_seq += len(data)
    out.append(seg(False, "PA", s_seq, c_seq, b"reply"))
    s_seq += 5
    out += [
        seg(True, "FA", c_seq, s_seq),
        seg(False, "FA", s_seq, c_seq + 1),
        seg(True, "A", c_seq + 1, s_seq + 1),
    ]
    return out


def make_ipv6() -> None:
    packets = tcp_session(
        IPv6, "fd00::1", "fd00::2", 40000, 443, [tls_records(client_hello("v6.example.test"))]
    )
    query = (
        Ether()
        / IPv6(src="fd00::1", dst="fd00::53")
        / UDP(sport=40001, dport=53)
        / DNS(id=1, rd=1, qd=DNSQR(qname="aaaa.example.test", qtype="AAAA"))
    )
    answer = (
        Ether()
        / IPv6(src="fd00::53", dst="fd00::1")
        / UDP(sport=53, dport=40001)
        / DNS(
            id=1,
            qr=1,
            qd=DNSQR(qname="aaaa.example.test", qtype="AAAA"),
            an=DNSRR(rrname="aaaa.example.test", type="AAAA", rdata="fd00::3"),
        )
    )
    later = Ether() / IPv6(src="fd00::1", dst="fd00::3") / TCP(sport=40002, dport=8443, flags="S")
    echo = Ether() / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(id=7, seq=1)
    reply = Ether() / IPv6(src="fd00::2", dst="fd00::1") / ICMPv6EchoReply(id=7, seq=1)
    hop = (
        Ether()
        / IPv6(src="fd00::1", dst="fd00::2")
        / IPv6ExtHdrHopByHop()
        / UDP(sport=40003, dport=9999)
        / Raw(b"x" * 10)
    )
    wrpcap(str(HERE / "agent_ipv6.pcap"), stamp(packets + [query, answer, later, echo, reply, hop]))


def make_vlan() -> None:
    packets = []
    for tags in (
        [Dot1Q(vlan=10)],
        [Dot1Q(vlan=20)],
        [Dot1Q(type=0x8100, vlan=100), Dot1Q(vlan=200)],
    ):
        for src, dst, sport, dport, flags in (
            ("10.1.0.1", "10.1.0.2", 41000, 80, "S"),
            ("10.1.0.2", "10.1.0.1", 80, 41000, "SA"),
        ):
            frame: Packet = Ether(type=0x88A8 if len(tags) == 2 else 0x8100)
            for tag in tags:
                frame = frame / tag
            packets.append(
                frame / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)
            )
    wrpcap(str(HERE / "agent_vlan.pcap"), stamp(packets))


def make_fragments() -> None:
    first = (
        IP(src="10.2.0.1", dst="10.2.0.2", id=111) / UDP(sport=42000, dport=7000) / Raw(b"a" * 3000)
    )
    second = (
        IP(src="10.2.0.1", dst="10.2.0.2", id=222) / UDP(sport=42001, dport=7000) / Raw(b"b" * 2000)
    )
    in_order = [Ether() / f for f in fragment(first, fragsize=1200)]
    f1, f2 = (Ether() / f for f in fragment(second, fragsize=1200))
    # The second datagram's later fragment arrives before its first one.
    wrpcap(str(HERE / "agent_fragments.pcap"), stamp(in_order + [f2, f1]))


def make_split_hello() -> None:
    records = tls_records(client_hello("split.example.test", padding=2500))
    segments = [records[:700], records[700:1500], records[1500:]]
    split = tcp_session(IP, "10.3.0.1", "10.3.0.2", 43000, 443, segments)
    # A retransmission of the second segment right after it: must not corrupt the buffer.
    split.insert(5, split[4].copy())
    two_records = tcp_session(
        IP,
        "10.3.0.1",
        "10.3.0.2",
        43001,
        443,
        [tls_records(client_hello("records.example.test"), 60)],
    )
    wrpcap(str(HERE / "agent_split_hello.pcap"), stamp(split + two_records))


def make_malformed() -> None:
    good = Ether() / IP(src="10.4.0.1", dst="10.4.0.2") / UDP(sport=44000, dport=9000) / Raw(b"ok")
    raw_good = bytes(good)
    frames = [
        b"\x00" * 10,  # shorter than an Ethernet header
        raw_good[:14] + b"\x43" + raw_good[15:],  # IPv4 with IHL 3
        bytes(Ether() / IP(src="10.4.0.1", dst="10.4.0.2", proto=6))[:34] + b"\x00" * 10,  # TCP cut
        raw_good[:14] + b"\x70" + bytes(range(100)),  # IP version 7
        bytes(Ether() / IPv6(src="fd00::1", dst="fd00::2"))[:34],  # IPv6 cut
        bytes(Ether() / ARP(psrc="10.4.0.1", pdst="10.4.0.2")),  # not IP
        raw_good,
    ]
    write_raw_pcap(HERE / "agent_malformed.pcap", frames)
    # The same file cut in the middle of its last record (a capture killed while writing).
    data = (HERE / "agent_malformed.pcap").read_bytes()
    (HERE / "agent_truncated.pcap").write_bytes(data[:-20])


def make_sll() -> None:
    packets = [
        CookedLinux(pkttype=0, proto=0x0800)
        / IP(src="10.5.0.1", dst="10.5.0.2")
        / UDP(sport=45000, dport=53)
        / DNS(id=5, rd=1, qd=DNSQR(qname="sll.example.test")),
        CookedLinux(pkttype=4, proto=0x0800)
        / IP(src="10.5.0.2", dst="10.5.0.1")
        / UDP(sport=53, dport=45000)
        / DNS(
            id=5,
            qr=1,
            qd=DNSQR(qname="sll.example.test"),
            an=DNSRR(rrname="sll.example.test", rdata="10.5.0.9"),
        ),
    ]
    wrpcap(str(HERE / "agent_sll.pcap"), stamp(packets), linktype=113)


def make_pcapng() -> None:
    packets = [
        Ether() / IP(src="10.6.0.1", dst="10.6.0.2") / ICMP(type=8, id=9, seq=1),
        Ether() / IP(src="10.6.0.2", dst="10.6.0.1") / ICMP(type=0, id=9, seq=1),
    ] + tcp_session(IP, "10.6.0.1", "10.6.0.2", 46000, 23, [b"login\r\n"])
    with PcapNgWriter(str(HERE / "agent_mixed.pcapng")) as writer:
        for packet in stamp(packets):
            writer.write(packet)


if __name__ == "__main__":
    make_ipv6()
    make_vlan()
    make_fragments()
    make_split_hello()
    make_malformed()
    make_sll()
    make_pcapng()
    print("written:", ", ".join(sorted(p.name for p in HERE.glob("agent_*.pcap*"))))
