"""Logins over cleartext protocols (FTP, Telnet): refused and accepted attempts, per flow.

The server says it in plain words: FTP answers a refused password with reply code 530 and an
accepted one with 230 (RFC 959); a Unix ``login`` behind telnetd prints "Login incorrect" after
a wrong password and, on most systems, "Last login:" after a right one. The observer reads the
server's bytes in order (retransmitted bytes dropped by sequence number) and counts those
markers, so one connection carrying three wrong passwords counts three refusals, as the SSH
observer (agent/ssh_auth.py) does for encrypted logins.

Bounded: it stops after ``MAX_BYTES`` of server data or at the first gap in the stream, and
keeps only the last few bytes of a segment to find a marker split across two.
"""

from __future__ import annotations

MAX_BYTES = 64 * 1024  # of server data read; logins are near the start of a session
_TAIL = 32  # bytes kept from the previous segment (a marker split across segments)
FTP_PORT, TELNET_PORT = 21, 23


class TextLoginObserver:
    """Counts the refused logins (and notes an accepted one) in a server's cleartext replies."""

    __slots__ = ("done", "failures", "success", "_ftp", "_next_seq", "_read", "_tail")

    def __init__(self, server_port: int) -> None:
        self._ftp = server_port == FTP_PORT
        self.failures = 0
        self.success = False
        self.done = False
        self._next_seq: int | None = None
        self._read = 0
        self._tail = b""

    def feed(self, from_client: bool, seq: int, payload: bytes) -> None:
        """One TCP segment's payload; only the server's direction is read."""
        if self.done or from_client or not payload:
            return
        payload = self._in_order(seq, payload)
        if not payload:
            return
        self._read += len(payload)
        text = (self._tail + payload).lower()
        self._count(text, len(self._tail))
        self._tail = text[-_TAIL:]
        if self._read >= MAX_BYTES:
            self.done = True

    def _in_order(self, seq: int, payload: bytes) -> bytes:
        """The part of the segment not seen yet; empty for a resent one; stops at a gap."""
        if self._next_seq is None:
            self._next_seq = seq
        ahead = (seq - self._next_seq) & 0xFFFFFFFF
        if ahead and ahead < 0x80000000:  # bytes missing before this segment
            self.done = True
            return b""
        behind = (self._next_seq - seq) & 0xFFFFFFFF
        if behind >= len(payload):
            return b""  # entirely resent
        payload = payload[behind:]
        self._next_seq = (self._next_seq + len(payload)) & 0xFFFFFFFF
        return payload

    def _count(self, text: bytes, old: int) -> None:
        """Markers that end in the new bytes (a marker within the kept tail was counted)."""
        if self._ftp:  # "530 " ends a reply ("530-" continues a multi-line one)
            self.failures += _ends_after(text, b"\n530 ", old)
            if _ends_after(text, b"\n230 ", old):
                self.success = True
            return
        self.failures += _ends_after(text, b"login incorrect", old)
        if _ends_after(text, b"last login:", old):
            self.success = True


def _ends_after(text: bytes, marker: bytes, old: int) -> int:
    """Occurrences of ``marker`` in ``text`` that end past its first ``old`` bytes."""
    count, start = 0, 0
    while (found := text.find(marker, start)) >= 0:
        if found + len(marker) > old:
            count += 1
        start = found + 1
    return count
