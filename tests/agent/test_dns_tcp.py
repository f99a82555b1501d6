"""DNS over TCP: length-prefixed messages split over segments, several in one, bounded buffers.

The stream tests feed ``DnsStream`` directly; the flow tests meter scapy-built TCP sessions
through the real pipeline (a real ``dig +tcp`` against dnsmasq: test_loopback_dns_tcp_and_icmp).
"""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from netmon.agent.config import AgentConfig, DomainPolicy
from netmon.agent.dns_tcp import MAX_MESSAGE_BYTES, MAX_MESSAGES, DnsStream
from netmon.storage.contract.events import FlowObserved

from .conftest import flows_of, replay

T0 = 1_700_000_000.0
CLIENT, SERVER, ANSWERED = "10.9.3.1", "10.9.3.2", "10.9.3.9"


def framed(message: bytes) -> bytes:
    """One DNS message as TCP carries it: its length first."""
    return struct.pack("!H", len(message)) + message


def query(name: str, ident: int = 1) -> bytes:
    """A standard query for the A record of ``name``."""
    return bytes(DNS(id=ident, rd=1, qd=DNSQR(qname=name)))


def answer(name: str, address: str, ident: int = 1) -> bytes:
    """The answer to ``query(name)``."""
    return bytes(
        DNS(id=ident, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, type="A", rdata=address))
    )


def test_a_message_split_over_segments_comes_out_whole_once() -> None:
    stream, message = DnsStream(), query("split.test")
    data = framed(message)
    assert stream.feed(data[:1], 100) == []  # half the length prefix
    assert stream.feed(data[1:9], 101) == []
    assert stream.feed(data[1:9], 101) == []  # a retransmission: nothing new
    assert stream.feed(data[9:], 109) == [message]
    assert stream.feed(data[9:], 109) == []  # retransmitted again: not a second message
    assert stream.buffer == b"" and not stream.done


def test_several_messages_in_one_segment_and_a_partial_overlap() -> None:
    stream = DnsStream()
    first, second, third = query("a.test", 1), query("b.test", 2), query("c.test", 3)
    data = framed(first) + framed(second) + framed(third)
    cut = len(framed(first)) + len(framed(second)) + 3
    assert stream.feed(data[:cut], 0xFFFFFFF0) == [first, second]  # across the wrap of seq
    # The next segment repeats 2 bytes already seen before the new ones.
    assert stream.feed(data[cut - 2 :], (0xFFFFFFF0 + cut - 2) % (1 << 32)) == [third]


def test_a_gap_a_zero_length_or_a_huge_length_stops_the_direction() -> None:
    gap = DnsStream()
    data = framed(query("gap.test"))
    gap.feed(data[:5], 1)
    assert gap.feed(data[6:], 7) == [] and gap.done and gap.buffer == b""  # byte 6 was lost
    assert gap.feed(data, 1) == []  # stopped for good
    zero = DnsStream()
    assert zero.feed(b"\x00\x00" + data, 1) == [] and zero.done
    huge = DnsStream()
    assert huge.feed(struct.pack("!H", MAX_MESSAGE_BYTES + 1) + b"x" * 100, 1) == []
    assert huge.done and huge.buffer == b""


def test_a_direction_reads_a_bounded_number_of_messages() -> None:
    stream = DnsStream()
    messages = [query(f"n{i}.test", i) for i in range(MAX_MESSAGES + 3)]
    data = b"".join(framed(m) for m in messages)
    assert stream.feed(data, 1) == messages[:MAX_MESSAGES]
    assert stream.done and stream.buffer == b""


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=MAX_MESSAGES),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    start=st.integers(0, (1 << 32) - 1),
)
def test_messages_come_out_whole_wherever_the_segments_are_cut(
    messages: list[bytes], cuts: list[int], start: int
) -> None:
    data = b"".join(framed(m) for m in messages)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    stream, out = DnsStream(), []
    for low, high in zip(bounds, bounds[1:], strict=False):
        out += stream.feed(data[low:high], (start + low) % (1 << 32))
    assert out == messages


@settings(max_examples=300, deadline=None)
@given(segments=st.lists(st.tuples(st.binary(max_size=600), st.integers(0, 2000)), max_size=20))
def test_hostile_segments_never_raise_and_stay_bounded(segments: list[tuple[bytes, int]]) -> None:
    stream, count = DnsStream(), 0
    for payload, seq in segments:
        messages = stream.feed(payload, seq)
        count += len(messages)
        assert all(len(m) <= MAX_MESSAGE_BYTES for m in messages)
        assert len(stream.buffer) < 2 + MAX_MESSAGE_BYTES
    assert count <= MAX_MESSAGES


def _session(segments: list[tuple[bool, bytes]], cport: int = 40100) -> list[Packet]:
    """A TCP connection to port 53 carrying ``segments`` (from the client?, bytes) in order."""
    seqs = {True: 1000, False: 5000}

    def packet(from_client: bool, flags: str, data: bytes = b"") -> Packet:
        src, dst, sp, dp = (
            (CLIENT, SERVER, cport, 53) if from_client else (SERVER, CLIENT, 53, cport)
        )
        frame = Ether() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags)
        frame[TCP].seq, frame[TCP].ack = seqs[from_client], seqs[not from_client]
        if data:
            frame = frame / data
        seqs[from_client] = (seqs[from_client] + len(data) + ("S" in flags or "F" in flags)) % (
            1 << 32
        )
        return frame

    packets = [packet(True, "S"), packet(False, "SA"), packet(True, "A")]
    packets += [packet(side, "PA", data) for side, data in segments]
    packets += [packet(True, "FA"), packet(False, "FA"), packet(True, "A")]
    return packets


def _replay(tmp_path: Path, packets: list[Packet], config: AgentConfig) -> dict[int, FlowObserved]:
    for index, frame in enumerate(packets):
        frame.time = T0 + index * 0.001
    path = tmp_path / "dns_tcp.pcap"
    wrpcap(str(path), packets)
    return {flow.dst_port: flow for flow in flows_of(replay(path, config)[0])}


def test_a_query_split_over_segments_names_the_flow_and_meets_the_policy(tmp_path: Path) -> None:
    name = "www.split-dns.test"
    ask, told = framed(query(name)), framed(answer(name, ANSWERED))
    second = framed(answer("other.test", "10.9.3.10", 2))
    segments = [
        (True, ask[:1]),  # the length prefix cut in two
        (True, ask[1:12]),
        (True, ask[12:]),
        (False, told + second[:7]),  # one answer and the start of the next in one segment
        (False, second[7:]),
    ]
    later = Ether() / IP(src=CLIENT, dst=ANSWERED) / TCP(sport=40200, dport=8080, flags="S")
    config = AgentConfig(agent_id="t", domains=DomainPolicy(approved=("example.org",)))
    flows = _replay(tmp_path, [*_session(segments), later], config)
    dns = flows[53]
    assert (dns.domain, dns.domain_source, dns.protocol) == (name, "dns", 6)
    assert [(d.kind, d.rule) for d in dns.detections] == [("unapproved_domain", "allowlist")]
    # The answers fed passive DNS: the later connection to the answered address is named.
    assert (flows[8080].domain, flows[8080].domain_source) == (name, "pdns")


def test_garbage_on_port_53_over_tcp_names_nothing(tmp_path: Path) -> None:
    segments = [(True, b"\x00\x05hello"), (False, b"\xff\xff" + b"z" * 40)]
    flows = _replay(tmp_path, _session(segments), AgentConfig(agent_id="t"))
    assert (flows[53].domain, flows[53].domain_source) == ("", None)
