"""Recording the bridge with tcpdump, cutting bulk payload, and counting with tshark.

tcpdump runs inside the bridge's namespace on the bridge itself, which sees every frame between
every pair of hosts, and records whole frames: the agent reads TLS SNI only from a complete
ClientHello (~580 bytes of frame with curl's OpenSSL 3.0, more than a 512-byte snaplen keeps),
and it derives payload byte counts from the bytes captured, so any snaplen would change them.
``trim`` then applies a per-connection cutoff, as capture archives do: TCP payload past the
first ``CUTOFF`` bytes of a direction is cut to the headers. Only a bulk transfer ever gets
that far (the one upload of the held-out set); its frame and packet counts stay exact (the
original length stays in each record), its payload byte counts do not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.data.capture_net import BRIDGE, LAN_NS, SENTINEL_IP, Host, in_ns, run, stop
from tests.data.captures import Measured

log = logging.getLogger(__name__)

SNAPLEN = 262144  # tcpdump's default: whole frames; trim() does the cutting
CUTOFF = 256 * 1024  # payload bytes kept whole per direction of a TCP connection
TRIM_RULE = (
    f"TCP payload past the first {CUTOFF // 1024} KiB of each direction of a connection cut "
    "to the headers (original frame lengths kept); every other frame whole"
)
SENTINEL_PORT = 9  # discard: the marker datagram that proves tcpdump has written everything


@dataclass
class RecorderStats:
    """tcpdump's own counts, printed when it stops."""

    captured: int = 0
    dropped: int = 0
    text: str = ""


@contextlib.contextmanager
def recording(raw: Path, marker_host: Host) -> Iterator[RecorderStats]:
    """tcpdump on the bridge into raw while the block runs; complete when the block ends.

    tcpdump hands packets to the file in blocks and loses what is still buffered when it is
    interrupted, so after the traffic a marker datagram is sent from marker_host until it shows
    up in the file: everything before it is written by then.
    """
    stats = RecorderStats()
    args = ["tcpdump", "-i", BRIDGE, "-n", "-U", "-B", "65536", "-s", str(SNAPLEN)]
    proc = subprocess.Popen(
        in_ns(LAN_NS, [*args, "-w", str(raw)]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _await_listening(proc)
        yield stats
        _flush_marker(raw, marker_host)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            stop(proc)
            err = b""
        stats.text = err.decode(errors="replace")
        stats.captured = _stat(stats.text, "packets captured")
        stats.dropped = _stat(stats.text, "packets dropped by kernel")


def _await_listening(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    seen = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if b"listening on" in line:
            return
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"tcpdump did not start: {seen.decode(errors='replace').strip()}")


def _flush_marker(raw: Path, host: Host, timeout: float = 15.0) -> None:
    token = os.urandom(12).hex()
    sender = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        f"s.sendto(sys.argv[1].encode(),('{SENTINEL_IP}',{SENTINEL_PORT}))\n"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run(host.ns, ["python3", "-c", sender, token])
        for _ in range(20):
            if token.encode() in raw.read_bytes():
                return
            time.sleep(0.1)  # polling the file tcpdump writes; it flushes per packet (-U)
    raise RuntimeError(f"tcpdump did not write the marker to {raw} within {timeout} s")


def _stat(text: str, label: str) -> int:
    for line in text.splitlines():
        if line.endswith(label):
            return int(line.split()[0])
    return 0


# --- trimming ------------------------------------------------------------------------------


@dataclass
class _Trimmer:
    payload: Counter[bytes] = field(default_factory=Counter)
    dropped_markers: int = 0
    trimmed: int = 0

    def keep(self, frame: bytes) -> bytes | None:
        """The frame as it goes into the final file, or None for a marker frame."""
        if _is_marker(frame):
            self.dropped_markers += 1
            return None
        cut = self._tcp_cut(frame)
        if cut is not None and cut < len(frame):
            self.trimmed += 1
            return frame[:cut]
        return frame

    def _tcp_cut(self, frame: bytes) -> int | None:
        """Where to cut a TCP frame (end of its TCP header), None to keep it whole."""
        etype = int.from_bytes(frame[12:14], "big")
        if etype == 0x0800 and len(frame) >= 34 and frame[23] == 6:
            ihl = (frame[14] & 0x0F) * 4
            total = int.from_bytes(frame[16:18], "big")
            addrs, l4, end = frame[26:34], 14 + ihl, 14 + total
        elif etype == 0x86DD and len(frame) >= 54 and frame[20] == 6:
            addrs, l4 = frame[22:54], 54
            end = l4 + int.from_bytes(frame[18:20], "big")
        else:
            return None
        if len(frame) < l4 + 20:
            return None
        header_end = l4 + (frame[l4 + 12] >> 4) * 4
        if end <= header_end:
            return None  # no payload: nothing to cut
        direction = addrs + frame[l4 : l4 + 4]
        self.payload[direction] += end - header_end
        return header_end if self.payload[direction] > CUTOFF else None


def _is_marker(frame: bytes) -> bool:
    sentinel = bytes(int(part) for part in SENTINEL_IP.split("."))
    etype = int.from_bytes(frame[12:14], "big")
    if etype == 0x0800:
        return sentinel in (frame[26:30], frame[30:34])
    if etype == 0x0806:  # ARP for the bridge's own address
        return sentinel in (frame[28:32], frame[38:42])
    return False


def trim(raw: Path, out: Path) -> tuple[int, int]:
    """Copy raw to out without marker frames and with bulk TCP payload cut; (frames, trimmed)."""
    data = raw.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    record = struct.Struct(endian + "IIII")
    trimmer = _Trimmer()
    parts = [data[:24]]
    pos, frames = 24, 0
    while pos + 16 <= len(data):
        sec, frac, caplen, wirelen = record.unpack_from(data, pos)
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        kept = trimmer.keep(frame)
        if kept is None:
            continue
        parts.append(record.pack(sec, frac, len(kept), wirelen) + kept)
        frames += 1
    out.write_bytes(b"".join(parts))
    return frames, trimmer.trimmed


# --- measuring with tshark -----------------------------------------------------------------

_FIELDS = (
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags.syn",
    "tcp.flags.ack",
    "udp.dstport",
    "dns.flags.response",
    "dns.qry.name",
    "icmp.type",
    "icmp.code",
    "icmpv6.type",
    "icmpv6.code",
)


@dataclass
class _Tally:
    frames: int = 0
    syns: set[tuple[str, str, str, str]] = field(default_factory=set)
    ports: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    queries: int = 0
    names: set[str] = field(default_factory=set)
    unreachable: int = 0

    def measured(self) -> Measured:
        return Measured(
            frames=self.frames,
            tcp_connections=len(self.syns),
            dst_ports=len(self.ports),
            dst_hosts=len(self.hosts),
            dns_queries=self.queries,
            dns_names=len(self.names),
            icmp_unreachable=self.unreachable,
        )


def _unicast(address: str) -> bool:
    if ":" in address:
        return not address.startswith(("ff", "fe80"))
    return not 224 <= int(address.split(".")[0]) <= 239 and not address.endswith(".255")


def measure(pcap: Path, sources: dict[str, str]) -> dict[str, Measured]:
    """tshark's counts per scenario; sources maps each address to its scenario's name."""
    args = ["tshark", "-r", str(pcap), "-n", "-T", "fields", "-E", "separator=\t"]
    for name in _FIELDS:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    tallies = {name: _Tally() for name in set(sources.values())}
    for line in out.splitlines():
        _count(dict(zip(_FIELDS, line.split("\t"), strict=False)), sources, tallies)
    return {name: tally.measured() for name, tally in tallies.items()}


def _first(value: str) -> str:
    return value.split(",")[0]


def _count(row: dict[str, str], sources: dict[str, str], tallies: dict[str, _Tally]) -> None:
    src = _first(row.get("ip.src") or row.get("ipv6.src", ""))
    dst = _first(row.get("ip.dst") or row.get("ipv6.dst", ""))
    owners = {sources[address] for address in (src, dst) if address in sources}
    for owner in owners:
        tallies[owner].frames += 1
    unreachable = (row.get("icmp.type"), row.get("icmp.code")) == ("3", "3") or (
        row.get("icmpv6.type"),
        row.get("icmpv6.code"),
    ) == ("1", "4")
    if unreachable and dst in sources:
        tallies[sources[dst]].unreachable += 1
    if src not in sources or row.get("icmp.type") or row.get("icmpv6.type"):
        return  # only what the source itself sent, and no ICMP (its quoted headers mislead)
    tally = tallies[sources[src]]
    if _unicast(dst):
        tally.hosts.add(dst)
    sport, dport = row.get("tcp.srcport", ""), row.get("tcp.dstport", "")
    if dport:
        tally.ports.add(f"tcp/{dport}")
        if row.get("tcp.flags.syn") in ("1", "True") and row.get("tcp.flags.ack") in ("0", "False"):
            tally.syns.add((src, sport, dst, dport))
    elif row.get("udp.dstport"):
        tally.ports.add(f"udp/{row['udp.dstport']}")
    names = [name for name in row.get("dns.qry.name", "").split(",") if name]
    if names and _first(row.get("dns.flags.response", "")) in ("0", "False"):
        tally.queries += len(names)
        tally.names.update(names)
