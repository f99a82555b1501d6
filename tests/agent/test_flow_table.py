"""Flow life cycle: timeouts, teardown, eviction, bounded expiry scans, features."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import wrpcap

from netmon.agent.config import AgentConfig
from netmon.storage.contract.events import FlowObserved

from .conftest import flows_of, heartbeats_of, replay

T0 = 1_700_000_000.0


def udp(t: float, sport: int = 5000, forward: bool = True, size: int = 10) -> Packet:
    src, dst, sp, dp = ("10.9.0.1", "10.9.0.2", sport, 6000)
    if not forward:
        src, dst, sp, dp = dst, src, dp, sp
    packet = Ether() / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / (b"x" * size)
    packet.time = T0 + t
    return packet


def tcp(t: float, flags: str, forward: bool = True, sport: int = 7000) -> Packet:
    src, dst, sp, dp = ("10.9.0.1", "10.9.0.2", sport, 80)
    if not forward:
        src, dst, sp, dp = dst, src, dp, sp
    packet = Ether() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags)
    packet.time = T0 + t
    return packet


def run(
    tmp_path: Path, packets: list[Packet], **config: object
) -> tuple[list[FlowObserved], object]:
    path = tmp_path / "flows.pcap"
    wrpcap(str(path), packets)
    events, stats = replay(path, AgentConfig(agent_id="t", **config))  # type: ignore[arg-type]
    return flows_of(events), (events, stats)


def test_idle_timeout_splits_flows(tmp_path: Path) -> None:
    flows, _ = run(tmp_path, [udp(0), udp(1, forward=False), udp(40), udp(41)], idle_timeout=30.0)
    assert [(f.end_reason, f.src2dst_packets, f.dst2src_packets) for f in flows] == [
        ("idle", 1, 1),
        ("shutdown", 2, 0),
    ]
    assert flows[0].ts >= flows[0].last_seen


def test_idle_timeout_expires_on_ticks_of_other_traffic(tmp_path: Path) -> None:
    packets = [udp(0)] + [udp(t, sport=5001) for t in range(1, 40, 2)]
    flows, _ = run(tmp_path, packets, idle_timeout=10.0)
    first = next(f for f in flows if f.src_port == 5000)
    assert first.end_reason == "idle"
    assert T0 + 10.0 <= first.ts <= T0 + 12.0  # exported by a tick, not at the end


def test_active_timeout_cuts_long_flows(tmp_path: Path) -> None:
    packets = [udp(t) for t in range(0, 100, 5)]
    flows, _ = run(tmp_path, packets, idle_timeout=30.0, active_timeout=50.0)
    assert flows[0].end_reason == "active"
    assert flows[0].last_seen - flows[0].first_seen < 50.0
    assert sum(f.src2dst_packets for f in flows) == 20


def test_fin_teardown_keeps_the_last_ack_and_new_syn_starts_a_new_flow(tmp_path: Path) -> None:
    session = [
        tcp(0.0, "S"),
        tcp(0.1, "SA", forward=False),
        tcp(0.2, "A"),
        tcp(0.3, "FA"),
        tcp(0.4, "FA", forward=False),
        tcp(0.5, "A"),  # the last ACK, after both FINs
        tcp(0.6, "S"),  # the same ports again: a new connection
        tcp(0.7, "RA", forward=False),
    ]
    flows, _ = run(tmp_path, session)
    assert [(f.end_reason, f.src2dst_packets, f.dst2src_packets) for f in flows] == [
        ("fin", 4, 2),
        ("rst", 1, 1),
    ]
    features = flows[0].features
    assert features.syn_count == 2 and features.fin_count == 2 and features.ack_count == 5
    assert features.handshake_duration == pytest.approx(0.2)


def test_full_table_evicts_and_counts(tmp_path: Path) -> None:
    packets = [udp(i * 0.01, sport=5000 + i) for i in range(10)]
    flows, (events, stats) = run(tmp_path, packets, max_flows=4)
    reasons = [f.end_reason for f in flows]
    assert reasons.count("evicted") == 6 and len(flows) == 10
    assert stats.flows_evicted == 6  # type: ignore[attr-defined]
    assert heartbeats_of(events)[-1].flows_evicted == 6


def test_expiry_scan_is_bounded_per_tick(tmp_path: Path) -> None:
    packets = [udp(0.001 * i, sport=5000 + i) for i in range(50)] + [
        udp(20 + i, sport=4000) for i in range(5)
    ]
    flows, _ = run(tmp_path, packets, idle_timeout=5.0, expiry_scan_per_tick=10)
    idle = sorted(f.ts for f in flows if f.end_reason == "idle")
    # 50 flows due at once, at most 10 per tick: five distinct ticks export them.
    assert len(idle) == 50 and len(set(idle)) == 5


def test_features_are_the_statistics_of_the_packets(tmp_path: Path) -> None:
    times = [0.0, 0.5, 1.5, 3.0]
    sizes = [10, 20, 30, 100]
    packets = [udp(t, size=s) for t, s in zip(times, sizes, strict=True)]
    packets.append(udp(3.5, forward=False, size=1))
    (flow,) = run(tmp_path, packets)[0]
    lengths = [42 + s for s in sizes]
    mean = sum(lengths) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in lengths) / 3)
    f = flow.features
    assert (f.fwd_pkt_len_min, f.fwd_pkt_len_max) == (52.0, 142.0)
    assert f.fwd_pkt_len_mean == pytest.approx(mean) and f.fwd_pkt_len_std == pytest.approx(std)
    assert (f.fwd_iat_min, f.fwd_iat_max) == (pytest.approx(0.5), pytest.approx(1.5))
    assert f.fwd_iat_mean == pytest.approx(1.0) and f.fwd_iat_std == pytest.approx(0.5)
    assert f.flow_iat_mean == pytest.approx(3.5 / 4)
    assert f.flow_iat_std == pytest.approx(statistics.stdev([0.5, 1.0, 1.5, 0.5]))
    assert f.duration == pytest.approx(3.5) and f.down_up_ratio == 0.25
    assert f.packets_per_s == pytest.approx(5 / 3.5)
    assert flow.src2dst_payload_bytes == 160 and flow.dst2src_payload_bytes == 1


def test_active_and_idle_periods(tmp_path: Path) -> None:
    packets = [udp(0), udp(1), udp(10), udp(12)]  # a 9 s gap with a 5 s activity threshold
    (flow,) = run(tmp_path, packets)[0]
    assert flow.features.idle_mean == pytest.approx(9.0)
    assert flow.features.active_mean == pytest.approx(1.5)  # (1 + 2) / 2


def test_inline_fast_path_and_decode_meter_the_same(tmp_path: Path) -> None:
    from scapy.layers.l2 import Dot1Q

    from tests.data.make_agent_pcaps import client_hello, tcp_session, tls_records

    packets = tcp_session(
        IP, "10.9.1.1", "10.9.1.2", 7100, 443, [tls_records(client_hello("a.test"))]
    )
    packets += [udp(0.5, size=s) for s in (0, 1, 300)]
    for index, packet in enumerate(packets):
        packet.time = T0 + index * 0.01
    # An 802.1Q tag with VLAN id 0 sends the same frames through decode() instead.
    tagged = []
    for packet in packets:
        frame = Ether(src=packet.src, dst=packet.dst, type=0x8100) / Dot1Q(vlan=0) / packet.payload
        frame.time = packet.time
        tagged.append(frame)
    plain_flows, _ = run(tmp_path, packets)
    (tmp_path / "tagged").mkdir()
    tagged_flows, _ = run(tmp_path / "tagged", tagged)

    def comparable(flow: FlowObserved, tag_bytes: int) -> tuple[object, ...]:
        return (
            flow.src_port,
            flow.dst_port,
            flow.src2dst_packets,
            flow.dst2src_packets,
            flow.src2dst_bytes - tag_bytes * flow.src2dst_packets,
            flow.dst2src_bytes - tag_bytes * flow.dst2src_packets,
            flow.src2dst_payload_bytes,
            flow.dst2src_payload_bytes,
            flow.src2dst_tcp_flags,
            flow.dst2src_tcp_flags,
            flow.domain,
            flow.end_reason,
            flow.features.syn_count,
            flow.features.fwd_init_win,
            flow.community_id,
        )

    plain = sorted(comparable(f, 0) for f in plain_flows)
    assert len(plain) == 2 and {p[10] for p in plain} == {"", "a.test"}
    assert sorted(comparable(f, 4) for f in tagged_flows) == plain


def test_stop_is_honoured_on_a_tick_even_when_traffic_never_pauses(tmp_path: Path) -> None:
    from netmon.agent.capture import FileSource
    from netmon.agent.pipeline import run_pipeline

    path = tmp_path / "steady.pcap"
    wrpcap(str(path), [udp(t * 0.5) for t in range(20)])
    events: list[object] = []
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 2  # the second tick stops

    stats = run_pipeline(FileSource(path), AgentConfig(agent_id="t"), events.append, stop)
    assert stats.packets_seen == 3  # ticks at 0.0 s and 1.0 s (the third packet)
    assert [type(e).__name__ for e in events] == ["FlowObserved", "AgentHeartbeat"]


def test_constant_gaps_and_sizes_have_a_deviation_of_exactly_zero(tmp_path: Path) -> None:
    # Sums of shifted squares and exact integer sums: no rounding residue left as a deviation.
    (flow,) = run(tmp_path, [udp(t * 0.125, size=33) for t in range(50)])[0]  # exact times
    f = flow.features
    assert (f.fwd_pkt_len_std, f.fwd_iat_std, f.flow_iat_std) == (0.0, 0.0, 0.0)
    assert f.fwd_pkt_len_mean == 75.0 and f.flow_iat_mean == 0.125


def test_batch_path_and_frame_by_frame_meter_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The batch path (PcapReader + FlowTable.meter_records) against frames one by one."""
    import struct

    import msgspec
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q

    from bench.agent_pcapgen import write_flows_pcap
    from netmon.agent.capture import FileSource, Frame, PacketSource
    from netmon.agent.pipeline import run_pipeline
    from netmon.storage.contract.events import DetectionRaised

    def eth() -> Packet:
        return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

    plain = tmp_path / "plain.pcap"
    # > 4096 frames over ~10 s of packet time: budget cuts and ticks inside the runs.
    write_flows_pcap(plain, 120, 40, concurrency=30, step_s=0.002)
    others = [
        bytes(eth() / Dot1Q(vlan=7) / IP(src="10.9.2.1", dst="10.9.2.2") / TCP(flags="S")),
        bytes(eth() / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=5, dport=53)),
        bytes(eth() / ARP()),
        bytes(eth() / IP(src="10.9.2.1", dst="10.9.2.3") / UDP(sport=9, dport=99) / b"x"),
        bytes(eth() / IP(src="10.9.2.1", dst="10.9.2.3", frag=3) / (b"y" * 30)),
        bytes(eth() / IP(src="10.9.2.1", dst="10.9.2.2"))[:30],  # malformed
    ]
    raw = plain.read_bytes()
    mixed, pos, index = [raw[:24]], 24, 0
    while pos < len(raw):  # one of the others after every 7th record, at the same time
        header = raw[pos : pos + 16]
        caplen = struct.unpack_from("<I", header, 8)[0]
        mixed.append(raw[pos : pos + 16 + caplen])
        pos += 16 + caplen
        index += 1
        if not index % 7:
            frame = others[index % len(others)]
            mixed.append(header[:8] + struct.pack("<II", len(frame), len(frame)) + frame)
    path = tmp_path / "mixed.pcap"
    path.write_bytes(b"".join(mixed))

    class OneByOne:
        """The file's frames as any packet source gives them: the pipeline's per-frame path."""

        def __init__(self, path: Path) -> None:
            self.frames = FileSource(path)

        def __iter__(self) -> Iterator[Frame | None]:
            return iter(self.frames)

        def dropped(self) -> int:
            return 0

        def close(self) -> None:
            pass

    def meter(source: PacketSource) -> tuple[list[object], object]:
        events: list[object] = []
        stats = run_pipeline(source, AgentConfig(agent_id="t"), events.append)
        rows = []
        for event in events:
            if isinstance(event, FlowObserved | DetectionRaised):
                row = msgspec.to_builtins(event)
                row.pop("id"), row.pop("flow_id", None)
                rows.append(row)
        counters = msgspec.to_builtins(stats)
        counters.pop("elapsed_s")
        return rows, counters

    assert FileSource(path).batchable() and FileSource(path, progress=True).batchable()
    assert not FileSource(path, loop=True).batchable()
    # Small reads: many records straddle two reads and go through PcapReader.refill.
    monkeypatch.setattr("netmon.agent.capture._CHUNK", 4000)
    batched = meter(FileSource(path))
    assert batched == meter(OneByOne(path))
    capsys.readouterr()
    assert meter(FileSource(path, progress=True)) == batched
    assert "mixed.pcap" in capsys.readouterr().err  # the progress bar
    rows, counters = batched
    assert counters["packets_seen"] == 4800 + 4800 // 7
    assert counters["packets_not_ip"] > 0 and counters["packets_malformed"] > 0
    assert {row.get("vlan", 0) for row in rows} == {0, 7}  # defaults are omitted
