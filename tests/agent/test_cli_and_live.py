"""``netmon agent replay`` / ``capture`` as real processes, and live capture on loopback."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netmon.storage.contract.events import AgentHeartbeat, FlowObserved, decode_json_line
from tests.polling import wait_until

from .conftest import DATA_DIR, REPO_ROOT


def netmon(*args: str) -> list[str]:
    return [sys.executable, "-m", "netmon.app.cli", *args]


def run_netmon(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(netmon(*args), capture_output=True, cwd=REPO_ROOT, timeout=120)


def test_replay_writes_json_lines_to_stdout() -> None:
    result = run_netmon("agent", "replay", str(DATA_DIR / "agent_ipv6.pcap"), "--output", "-")
    assert result.returncode == 0, result.stderr
    events = [decode_json_line(line) for line in result.stdout.splitlines()]
    flows = [e for e in events if isinstance(e, FlowObserved)]
    assert len(flows) == 5 and isinstance(events[-1], AgentHeartbeat)
    assert b"agent_ipv6.pcap" in result.stderr  # the progress bar, on stderr only


def test_replay_writes_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = run_netmon(
        "agent", "replay", str(DATA_DIR / "agent_sll.pcap"), "--output", str(out), "--no-progress"
    )
    assert result.returncode == 0 and result.stdout == b""
    assert len(out.read_bytes().splitlines()) == 2  # one flow, one heartbeat


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (None, 66, b"capture file not found"),
        (b"this is not a capture", 65, b"is not a pcap or pcapng file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", 65, b"pcap header is truncated"),
    ],
)
def test_replay_bad_files_fail_clearly(
    tmp_path: Path, content: bytes | None, code: int, message: bytes
) -> None:
    path = tmp_path / "input.pcap"
    if content is not None:
        path.write_bytes(content)
    result = run_netmon("agent", "replay", str(path), "--no-progress")
    assert result.returncode == code
    assert message in result.stderr


def test_bad_config_fails_clearly(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("idle_timeout = -1\n")
    result = run_netmon(
        "agent", "replay", str(DATA_DIR / "agent_sll.pcap"), "--config", str(config)
    )
    assert result.returncode == 2 and b"idle_timeout must be > 0" in result.stderr


def test_capture_without_permission_exits_77() -> None:
    if shutil.which("capsh") is None:
        pytest.skip("capsh (libcap2-bin) is needed to drop CAP_NET_RAW")
    command = " ".join(netmon("agent", "capture", "-i", "lo", "--duration", "1"))
    result = subprocess.run(
        ["capsh", "--drop=cap_net_raw", "--", "-c", command],
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 77, result.stderr
    assert b"no permission to capture on lo" in result.stderr


def test_capture_on_a_missing_interface_exits_69() -> None:
    result = run_netmon("agent", "capture", "-i", "netmon-nosuch0", "--duration", "1")
    assert result.returncode == 69 and b"no such network interface" in result.stderr


def test_capture_with_an_invalid_filter_exits_65() -> None:
    result = run_netmon("agent", "capture", "-i", "lo", "-f", "port 99999 and", "--duration", "1")
    assert result.returncode == 65 and b"invalid BPF filter" in result.stderr


def test_live_capture_on_loopback_meters_real_traffic(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.78.0.1", 0))
    port = receiver.getsockname()[1]
    config = tmp_path / "agent.toml"
    config.write_text("heartbeat_interval = 0.2\n")
    proc = subprocess.Popen(
        netmon(
            "agent",
            "capture",
            "-i",
            "lo",
            "-f",
            f"udp and host 127.78.0.1 and port {port}",
            "--config",
            str(config),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )
    lines: list[bytes] = []
    try:
        assert proc.stdout is not None
        lines.append(proc.stdout.readline())  # a first heartbeat: the socket is open, reading
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.78.0.2", 0))
            for _ in range(200):
                sender.sendto(b"p" * 20, ("127.78.0.1", port))

        def all_seen() -> bool:  # heartbeats are flushed at once: wait for one counting 200
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]
            event = decode_json_line(lines[-1])
            return isinstance(event, AgentHeartbeat) and event.packets_seen >= 200

        wait_until(all_seen, timeout=20, what="the agent to meter 200 packets")
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        receiver.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = b"".join(lines) + stdout
    events = [decode_json_line(line) for line in stdout.splitlines()]
    (flow,) = [e for e in events if isinstance(e, FlowObserved)]
    # Loopback frames are seen once (the outgoing copy is skipped, as libpcap does).
    assert (flow.src_ip, flow.dst_port, flow.src2dst_packets) == ("127.78.0.2", port, 200)
    assert flow.src2dst_bytes == 200 * (14 + 20 + 8 + 20)
    beat = [e for e in events if isinstance(e, AgentHeartbeat)][-1]
    assert beat.packets_seen == 200 and beat.packets_dropped == 0


def test_loop_replays_the_file_again_later_in_time() -> None:
    from itertools import islice

    from netmon.agent.capture import FileSource

    once = [frame for frame in FileSource(DATA_DIR / "agent_vlan.pcap") if frame is not None]
    looped = [f for f in islice(FileSource(DATA_DIR / "agent_vlan.pcap", loop=True), 18) if f]
    assert [f[1] for f in looped] == [f[1] for f in once] * 3
    times = [f[0] for f in looped]
    assert times == sorted(times) and times[6] == pytest.approx(once[-1][0] + 1.0)


def test_realtime_paces_frames_as_captured() -> None:
    import time

    from netmon.agent.capture import FileSource

    # agent_ipv6.pcap spans 13 ms of capture time: a paced replay cannot take less.
    started = time.monotonic()
    frames = [f for f in FileSource(DATA_DIR / "agent_ipv6.pcap", realtime=True) if f]
    assert time.monotonic() - started >= frames[-1][0] - frames[0][0]


def test_missing_domain_list_fails_clearly(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[domains]\ndenied_files = ["{tmp_path / "nope.txt"}"]\n')
    result = run_netmon(
        "agent", "replay", str(DATA_DIR / "agent_sll.pcap"), "--config", str(config)
    )
    assert result.returncode == 2
    assert b"cannot read domain list" in result.stderr and b"Traceback" not in result.stderr
