"""Packet sources: live capture (scapy raw sockets) and pcap/pcapng files, one shape for both.

A source is an iterable of ``(ts, frame, wirelen, linktype)`` tuples, or ``None`` when a live
source had nothing for a while (so the pipeline can still expire flows and send heartbeats).
Scapy is used only to open the capture socket (interface lookup, BPF compilation) and to read
pcapng; frames are never dissected by scapy.

Classic pcap files are read by a small struct-based reader (the fast path: big buffered reads,
one ``unpack_from`` per record); pcapng goes through scapy's ``RawPcapNgReader``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

Frame = tuple[float, bytes, int, int]
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_CHUNK = 1 << 20
SOL_PACKET = 263
PACKET_STATISTICS = 6


class CaptureError(Exception):
    """A capture cannot start or a file cannot be read; ``exit_code`` is what the CLI returns."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# sysexits.h codes, so scripts can tell the reasons apart.
EXIT_NOINPUT = 66
EXIT_DATAERR = 65
EXIT_UNAVAILABLE = 69
EXIT_NOPERM = 77


class PacketSource(Protocol):
    """What the pipeline reads: frames, or ``None`` while a live capture is quiet."""

    def __iter__(self) -> Iterator[Frame | None]: ...

    def dropped(self) -> int:
        """Frames the kernel or capture buffer dropped so far."""
        ...

    def close(self) -> None:
        """Release the file or socket."""
        ...


class FileSource:
    """Frames from a pcap or pcapng file, optionally paced in real time and looped."""

    def __init__(
        self,
        path: Path,
        realtime: bool = False,
        loop: bool = False,
        progress: bool = False,
    ) -> None:
        self.path = path
        self.realtime = realtime
        self.loop = loop
        self.progress = progress
        self.truncated = 0  # files whose last record was cut short
        try:
            self.size = path.stat().st_size
            with path.open("rb") as handle:
                magic = handle.read(4)
        except FileNotFoundError:
            raise CaptureError(f"capture file not found: {path}", EXIT_NOINPUT) from None
        except OSError as error:
            raise CaptureError(f"cannot read {path}: {error.strerror}", EXIT_NOINPUT) from None
        if magic not in PCAP_MAGICS and magic != PCAPNG_MAGIC:
            raise CaptureError(
                f"{path} is not a pcap or pcapng file (magic {magic.hex() or 'empty'})",
                EXIT_DATAERR,
            )
        self.pcapng = magic == PCAPNG_MAGIC

    def dropped(self) -> int:
        """Files drop nothing."""
        return 0

    def close(self) -> None:
        """Nothing stays open between iterations."""

    def __iter__(self) -> Iterator[Frame | None]:
        if not (self.loop or self.realtime or self.progress):
            return self._read_once()  # the fast path: no generator in between
        return self._wrapped()

    def _wrapped(self) -> Iterator[Frame | None]:
        offset = 0.0
        while True:
            frames = self._read_once()
            if self.realtime:
                frames = _paced(frames)
            if self.progress:
                frames = self._with_progress(frames)
            first = last = -1.0
            for frame in frames:
                if first < 0:
                    first = frame[0]
                if offset:
                    frame = (frame[0] + offset, frame[1], frame[2], frame[3])
                last = frame[0]
                yield frame
            if not self.loop or first < 0:
                return
            # Each pass is shifted to start 1 s after the previous one ended, so timers and
            # flows move forward as in a longer capture.
            offset = last + 1.0 - first

    def _read_once(self) -> Iterator[Frame]:
        if self.pcapng:
            return self._read_pcapng()
        return self._read_pcap()

    def batchable(self) -> bool:
        """Whether the pipeline may walk the records itself (``open_pcap``): a classic pcap
        read once, as fast as possible (with or without a progress bar)."""
        return not (self.pcapng or self.loop or self.realtime)

    def open_pcap(self, progress: bool = False) -> PcapReader:
        """The classic pcap reader (a context manager that closes the file); ``progress``
        shows a bar of the bytes read on stderr."""
        return PcapReader(self, progress)

    def _read_pcap(self) -> Iterator[Frame]:
        """Records of a classic pcap; the file is opened on the first ``next``, always closed."""
        with self.open_pcap() as reader:
            unpack, resolution, linktype = reader.unpack, reader.resolution, reader.linktype
            buf = b""
            pos = 0
            while (more := reader.refill(buf, pos)) is not None:
                buf, pos, end = more, 0, len(more)
                while pos + 16 <= end:
                    sec, frac, caplen, wirelen = unpack(buf, pos)
                    stop = pos + 16 + caplen
                    if stop > end:
                        break
                    yield (sec + frac * resolution, buf[pos + 16 : stop], wirelen, linktype)
                    pos = stop

    def _read_pcapng(self) -> Iterator[Frame]:
        from scapy.error import Scapy_Exception
        from scapy.utils import RawPcapNgReader

        # scapy's own errors on a damaged file become CaptureError (found by tests/fuzz)
        damaged = (Scapy_Exception, EOFError, struct.error, ValueError, ZeroDivisionError)
        with self.path.open("rb") as handle:  # ours: scapy leaks its own when it raises
            try:
                reader = RawPcapNgReader(handle)  # type: ignore[arg-type]  # takes a file too
                for data, meta in reader:
                    # scapy types the metadata as the classic reader's; pcapng's has these fields
                    ng: Any = meta
                    ts = ((ng.tshigh << 32) | ng.tslow) / ng.tsresol
                    yield (ts, data, ng.wirelen or len(data), ng.linktype)
            except damaged as error:
                raise CaptureError(
                    f"{self.path}: damaged pcapng file: {error}", EXIT_DATAERR
                ) from None

    def _with_progress(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        from tqdm import tqdm

        # Progress in bytes of the file (known up front); updated every 4096 frames.
        with tqdm(total=self.size, unit="B", unit_scale=True, desc=self.path.name) as bar:
            done = 24
            for count, frame in enumerate(frames, 1):
                done += len(frame[1]) + 16
                if not count & 4095:
                    bar.n = min(done, self.size)
                    bar.refresh()
                yield frame
            bar.n = self.size
            bar.refresh()


class PcapReader:
    """A classic pcap read in 1 MiB pieces; the caller walks the records of each buffer and
    hands back the incomplete tail with ``refill``."""

    def __init__(self, source: FileSource, progress: bool = False) -> None:
        self.source = source
        self._bar: Any = None
        self._handle = source.path.open("rb", buffering=0)
        header = self._handle.read(24)
        if len(header) < 24:
            self._handle.close()
            raise CaptureError(f"{source.path}: pcap header is truncated", EXIT_DATAERR)
        endian, self.resolution = PCAP_MAGICS[header[:4]]
        self.linktype: int = struct.unpack_from(endian + "I", header, 20)[0] & 0x0FFFFFFF
        # (seconds, fraction, captured length, wire length) of the record at an offset
        self.unpack: Callable[[bytes, int], tuple[int, int, int, int]] = struct.Struct(
            endian + "IIII"
        ).unpack_from
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=source.size, unit="B", unit_scale=True, desc=source.path.name)
            self._bar.update(24)

    def refill(self, buf: bytes, pos: int) -> bytes | None:
        """``buf[pos:]`` (not one whole record) followed by the next read; None at the end."""
        if len(buf) - pos >= 16:
            caplen = self.unpack(buf, pos)[2]
            if caplen > 0x4000000:
                raise CaptureError(
                    f"{self.source.path}: record length {caplen} is garbage", EXIT_DATAERR
                )
        chunk = self._handle.read(_CHUNK)
        if chunk:
            if self._bar is not None:
                self._bar.update(len(chunk))
            return buf[pos:] + chunk
        if pos < len(buf):
            self.source.truncated += 1
            log.warning(
                "%s: the last record is truncated (%d bytes ignored)",
                self.source.path,
                len(buf) - pos,
            )
        return None

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()
        if self._bar is not None:
            self._bar.close()


def _paced(frames: Iterator[Frame]) -> Iterator[Frame]:
    """Sleep so frames come out at the pace they were captured (replay --realtime)."""
    start_wall = 0.0
    start_ts = 0.0
    for frame in frames:
        if not start_wall:
            start_wall, start_ts = time.monotonic(), frame[0]
        delay = (frame[0] - start_ts) - (time.monotonic() - start_wall)
        if delay > 0:
            time.sleep(delay)
        yield frame


class LiveSource:
    """Frames captured on an interface with scapy's PF_PACKET listen socket."""

    def __init__(self, interface: str, bpf_filter: str = "", poll: float = 0.5) -> None:
        self.interface = interface
        self.poll = poll
        self._dropped = 0
        self._socket = _open_socket(interface, bpf_filter)
        sock = self._socket.ins
        # Bigger kernel buffer: bursts are absorbed instead of dropped (root may force it).
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.settimeout(poll)
        # Scapy opens the socket with a zero buffer before the filter is attached: frames of any
        # interface dropped during that setup would count as ours. Reading resets the counters.
        with contextlib.suppress(OSError):
            sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        # On loopback each frame is seen twice (outgoing and incoming): keep the incoming copy,
        # as libpcap does.
        self._skip_outgoing = interface == "lo" or interface.startswith("lo:")
        self.linktype = 1

    def dropped(self) -> int:
        """Kernel drops since the capture started (PACKET_STATISTICS, which resets on read)."""
        try:
            raw = self._socket.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return self._dropped
        self._dropped += struct.unpack("II", raw)[1]
        return self._dropped

    def close(self) -> None:
        """Close the socket."""
        self._socket.close()

    def __iter__(self) -> Iterator[Frame | None]:
        recv = self._socket.ins.recvfrom
        outgoing = socket.PACKET_OUTGOING
        skip_outgoing = self._skip_outgoing
        now = time.time
        linktype = self.linktype
        while True:
            try:
                data, address = recv(262144)
            except TimeoutError:
                yield None
                continue
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                raise CaptureError(f"capture on {self.interface} failed: {error}") from None
            if skip_outgoing and address[2] == outgoing:
                continue
            yield (now(), data, len(data), linktype)


def _open_socket(interface: str, bpf_filter: str):  # type: ignore[no-untyped-def]
    """Scapy's L2 listen socket, with our errors for the usual ways it fails."""
    if not os.path.exists(f"/sys/class/net/{interface}"):
        raise CaptureError(f"no such network interface: {interface!r}", EXIT_UNAVAILABLE)
    from scapy.arch.linux import L2ListenSocket
    from scapy.error import Scapy_Exception

    scapy_log = logging.getLogger("scapy.runtime")
    level = scapy_log.level
    # scapy warns that it cannot guess the link type of "lo" (ARPHRD_LOOPBACK): we never ask it
    # to dissect, so the warning is noise on the agent's stderr.
    scapy_log.setLevel(logging.ERROR)
    try:
        return L2ListenSocket(iface=interface, filter=bpf_filter or None)
    except PermissionError:
        raise CaptureError(
            f"no permission to capture on {interface}: run as root or give the interpreter "
            "CAP_NET_RAW (setcap cap_net_raw,cap_net_admin=eip)",
            EXIT_NOPERM,
        ) from None
    except Scapy_Exception as error:
        raise CaptureError(f"invalid BPF filter {bpf_filter!r}: {error}", EXIT_DATAERR) from None
    except OSError as error:
        if error.errno in (errno.ENODEV, errno.ENXIO):
            raise CaptureError(
                f"no such network interface: {interface!r}", EXIT_UNAVAILABLE
            ) from None
        if error.errno == errno.EPERM:
            raise CaptureError(f"no permission to capture on {interface}", EXIT_NOPERM) from None
        raise CaptureError(f"cannot capture on {interface}: {error}") from None
    finally:
        scapy_log.setLevel(level)
