"""SSH logins judged from the sizes of the server's encrypted packets, as Zeek does.

An SSH connection is encrypted from the key exchange on, yet the first messages after it have
sizes that give them away (Zeek, src/analyzer/protocol/ssh/SSH.cc, ``ProcessEncrypted``):

- the first encrypted segment the server sends after the client's first encrypted one is the
  SERVICE_ACCEPT of "ssh-userauth" (size ``S``): the reference every other size is read against;
- a later server segment of size ``S - 16`` is USERAUTH_SUCCESS (a one-byte message padded to 8
  bytes where SERVICE_ACCEPT's 17 bytes pad to 24): the login succeeded, the observer stops;
- otherwise the first server segment of another size is the first USERAUTH_FAILURE (size
  ``F``), skipping one much larger segment (a pre-login banner). OpenSSH and libssh clients
  first try the method "none", which is always refused, so this first failure is not counted;
  each later segment of size ``F`` is one refused attempt (``failures``). Segments of other
  sizes (a public key accepted for signing, a keyboard-interactive prompt) are ignored.

To find where encryption starts, each direction is parsed in the clear up to its NEWKEYS
message: the identification line ("SSH-2.0-..."; the server may send other lines before it),
then binary packets (uint32 length, byte padding length, byte message type). Whatever follows
NEWKEYS in a segment counts as that segment's encrypted size. Both KEXINIT messages are read for
the negotiated server-to-client compression: with "zlib" the sizes are compressed and no verdict
is given ("zlib@openssh.com" starts only after the login, so it does not matter).

Bounded: ``MAX_SEGMENTS`` payload segments in all (both directions), then the observer stops;
it keeps at most one KEXINIT (``MAX_KEXINIT_BYTES``) or ``MAX_BANNER_BYTES`` of lines per
direction, and no bytes at all once encrypted or stopped. It stops, keeping what it counted so
far, at the first sign the stream is not SSH-2 (a bad identification line, a plaintext packet
header out of range), at a gap in either direction's sequence numbers (a lost segment: what
follows cannot be framed), and once the login succeeded. Retransmitted bytes are dropped by
their sequence number, so a repeated failure is never counted twice. Sizes are per TCP segment,
as Zeek reads them: a sender that puts two encrypted messages into one segment is not judged.
"""

from __future__ import annotations

MAX_SEGMENTS = 100  # payload segments, both directions (a 6-attempt login takes about 30)
MAX_BANNER_BYTES = 1024  # lines before and with the identification line, per direction
MAX_BANNER_LINES = 8  # lines the server may send before its identification line
MAX_KEXINIT_BYTES = 16 * 1024  # OpenSSH's is about 1.5 KiB
MAX_PACKET_BYTES = 35000  # RFC 4253 6.1: the packet size every implementation must handle
BANNER_SKIP = 256  # a first reply this much larger than SERVICE_ACCEPT is a login banner
SUCCESS_OFFSET = 16  # USERAUTH_SUCCESS is this much shorter than SERVICE_ACCEPT

_SEQ_MOD = 1 << 32
_HALF = 1 << 31
_KEXINIT = 20
_NEWKEYS = 21
# Messages that may travel in the clear: disconnect, ignore, unimplemented, debug, KEXINIT,
# NEWKEYS and the key exchange's own (30-49).
_PLAIN_TYPES = frozenset({1, 2, 3, 4, _KEXINIT, _NEWKEYS, *range(30, 50)})
_SSH2 = (b"SSH-2.0-", b"SSH-1.99-")
_KEX_LISTS = 10  # name-lists in a KEXINIT
_COMPRESSION_S2C = 7  # the index of the server-to-client compression list

# A direction's phases.
_BANNER = 0
_PLAIN = 1
_ENCRYPTED = 2
_STOP = -1  # what ``_Direction.feed`` returns when the stream is not (or no longer) readable


class _Direction:
    """One direction of the connection: in order, parsed in the clear up to its NEWKEYS."""

    __slots__ = (
        "server_side",
        "phase",
        "buffer",
        "lines",
        "skip",
        "newkeys",
        "kexinit",
        "next_seq",
        "late",
    )

    def __init__(self, server_side: bool, late: bool = False) -> None:
        self.server_side = server_side  # only the server may send lines before its own
        self.phase = _BANNER
        self.buffer = b""  # a partial line, packet header or KEXINIT
        self.lines = 0  # lines seen before the identification line
        self.skip = 0  # bytes of the current plaintext packet still to pass over
        self.newkeys = False  # the packet being skipped is NEWKEYS
        # The server-to-client compression methods this side offers (None: KEXINIT not seen).
        self.kexinit: tuple[bytes, ...] | None = None
        self.next_seq = -1  # the sequence number of the next byte expected; -1: none yet
        self.late = late  # the identification line may have been missed: a packet may start

    def feed(self, seq: int, payload: bytes) -> int:
        """The size of this segment's encrypted part (0: none), or ``_STOP``."""
        if self.next_seq >= 0 and seq != self.next_seq:
            ahead = (seq - self.next_seq) % _SEQ_MOD
            if ahead < _HALF:  # later than expected: a segment is missing
                return _STOP
            overlap = _SEQ_MOD - ahead  # a retransmission: keep only bytes never seen
            if overlap >= len(payload):
                return 0
            payload = payload[overlap:]
            seq = self.next_seq
        self.next_seq = (seq + len(payload)) % _SEQ_MOD
        if self.phase == _ENCRYPTED:
            return len(payload)
        if self.phase == _BANNER:
            rest = self._banner(payload)
            if rest is None:
                return _STOP
            payload = rest
        return self._plain(payload) if payload else 0

    def _banner(self, data: bytes) -> bytes | None:
        """What follows the identification line once it is complete; b"" while it is not."""
        if self.late and not self.buffer and _plausible_header(data):
            self.phase = _PLAIN
            return data
        if not self.server_side and not b"SSH-".startswith((self.buffer + data[:4])[:4]):
            return None  # a client starts with its identification line (RFC 4253 4.2)
        while True:
            end = data.find(b"\n")
            if end < 0:
                if len(self.buffer) + len(data) > MAX_BANNER_BYTES:
                    return None
                self.buffer += data
                return b""
            line, data = self.buffer + data[: end + 1], data[end + 1 :]
            self.buffer = b""
            if len(line) > MAX_BANNER_BYTES:
                return None
            if line.startswith(b"SSH-"):
                if not line.startswith(_SSH2):
                    return None  # SSH-1 (or garbage): its sizes mean nothing here
                self.phase = _PLAIN
                return data
            self.lines += 1
            if self.lines > MAX_BANNER_LINES:
                return None

    def _plain(self, data: bytes) -> int:
        """Walk plaintext packets; the size of what follows NEWKEYS, or ``_STOP``."""
        pos, end = 0, len(data)
        while pos < end:
            if self.skip:
                step = min(self.skip, end - pos)
                self.skip -= step
                pos += step
                if not self.skip and self.newkeys:
                    self.phase = _ENCRYPTED
                    self.buffer = b""
                    return end - pos
                continue
            if self.kexinit is None and self.buffer[5:6] == b"\x14":  # collecting a KEXINIT
                want = _packet_end(self.buffer) - len(self.buffer)
                self.buffer += data[pos : pos + want]
                pos += want
                if len(self.buffer) == _packet_end(self.buffer):
                    offered = _compression_s2c(self.buffer)
                    if offered is None:
                        return _STOP
                    self.kexinit, self.buffer = offered, b""
                continue
            take = 6 - len(self.buffer)
            self.buffer += data[pos : pos + take]
            pos += take
            if len(self.buffer) < 6:
                break
            if not self._start_packet():
                return _STOP
        return 0

    def _start_packet(self) -> bool:
        """Read the header in ``buffer``: collect a KEXINIT, skip anything else; False: junk."""
        header = self.buffer
        if not _plausible_header(header):
            return False
        length, kind = int.from_bytes(header[:4], "big"), header[5]
        if kind == _KEXINIT and self.kexinit is None:
            return length + 4 <= MAX_KEXINIT_BYTES  # ``_plain`` collects it in ``buffer``
        self.buffer = b""
        self.skip = length - 2
        self.newkeys = kind == _NEWKEYS
        return True

    def stop(self) -> None:
        """Keep no bytes."""
        self.buffer = b""
        self.kexinit = None


def _packet_end(buffer: bytes) -> int:
    """The size of the whole packet whose header starts ``buffer``."""
    return int.from_bytes(buffer[:4], "big") + 4


def _plausible_header(data: bytes) -> bool:
    """``data`` starts with the header of a plaintext packet: a length in range, at least four
    bytes of padding (RFC 4253 6), a message type allowed in the clear."""
    if len(data) < 6 or data[5] not in _PLAIN_TYPES:
        return False
    length, padding = int.from_bytes(data[:4], "big"), data[4]
    return padding >= 4 and padding + 2 <= length <= MAX_PACKET_BYTES


def _compression_s2c(packet: bytes) -> tuple[bytes, ...] | None:
    """The server-to-client compression methods a KEXINIT packet lists; None if malformed."""
    pos = 6 + 16  # header, then the cookie
    for index in range(_KEX_LISTS):
        if pos + 4 > len(packet):
            return None
        size = int.from_bytes(packet[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(packet):
            return None
        if index == _COMPRESSION_S2C:
            return tuple(packet[pos : pos + size].split(b","))
        pos += size
    return None  # not reached: the loop returns at _COMPRESSION_S2C


class SshAuthObserver:
    """One SSH connection's logins: ``failures`` refused attempts, ``success`` once accepted.

    Feed it every payload segment of the connection in capture order, saying which side sent
    it; ``done`` turns true when nothing more will be learnt (the login succeeded, a cap, a
    gap, or the stream is not SSH-2), and from then on ``feed`` costs one attribute test.
    ``late=True`` when the observer starts after the server may have sent its identification
    line (a connection recognised by the client's "SSH-" line on another port): the server's
    direction may then start at a plaintext packet (its KEXINIT, or later in the key exchange).
    """

    __slots__ = (
        "client",
        "server",
        "segments",
        "service_accept",
        "failure_size",
        "banner_skipped",
        "client_encrypted",
        "failures",
        "success",
        "done",
    )

    def __init__(self, late: bool = False) -> None:
        self.client = _Direction(server_side=False)
        self.server = _Direction(server_side=True, late=late)
        self.segments = 0
        self.service_accept = 0  # S: the size of the server's SERVICE_ACCEPT segment
        self.failure_size = 0  # F: the size of its USERAUTH_FAILURE segments
        self.banner_skipped = False
        self.client_encrypted = False
        self.failures = 0
        self.success = False
        self.done = False

    def feed(self, from_client: bool, seq: int, payload: bytes) -> None:
        """One TCP payload segment: its sender, its sequence number and its bytes."""
        if self.done or not payload:
            return
        self.segments += 1
        if self.segments > MAX_SEGMENTS:
            self._stop()
            return
        side = self.client if from_client else self.server
        unknown = side.kexinit is None
        encrypted = side.feed(seq, payload)
        if encrypted < 0:
            self._stop()
            return
        if unknown and side.kexinit is not None and self._compressed():
            self._stop()
            return
        if encrypted:
            if from_client:
                self.client_encrypted = True
            elif self.client_encrypted:
                self._server_encrypted(encrypted)

    def _compressed(self) -> bool:
        """The server compresses from NEWKEYS on ("zlib"): its sizes say nothing."""
        client, server = self.client.kexinit, self.server.kexinit
        if client is None or server is None:
            return False
        chosen = next((method for method in client if method in server), b"none")
        return chosen == b"zlib"

    def _server_encrypted(self, size: int) -> None:
        """Zeek's reading of one encrypted server segment (SSH.cc, ProcessEncrypted)."""
        accept = self.service_accept
        failure = self.failure_size
        if not accept:
            self.service_accept = size
        elif size == failure:
            self.failures += 1
        elif size + SUCCESS_OFFSET == accept:
            self.success = True  # after failures, or at once (method "none" accepted)
            self._stop()
        elif not failure:
            if not self.banner_skipped and size - accept > BANNER_SKIP:
                self.banner_skipped = True
            else:
                self.failure_size = size  # the refusal of method "none": not an attempt

    def _stop(self) -> None:
        self.done = True
        self.client.stop()
        self.server.stop()
