"""DNS over TCP: the length-prefixed messages of each direction (RFC 1035 4.2.2, RFC 7766).

Over TCP every DNS message is preceded by its length (two bytes, network order). A message may
be split over several segments, and one segment may hold several messages (pipelined queries,
an answer right behind another). Each direction of a TCP flow on a DNS port gets a
``DnsStream``: it joins the in-order payload of its segments and hands back complete messages,
which the flow table parses as it does a UDP datagram (agent/appnames.py).

Bounded: the responder's direction stops after ``MAX_MESSAGES`` messages (the first answers
feed passive DNS; a zone transfer's thousands need not be read). The initiator's direction is
read as long as it sends queries, since every query is counted (agent/dns_queries.py: a tunnel
over TCP asks many names on one connection); it stops after ``MAX_MESSAGES`` messages that are
not queries (junk on port 53 costs nothing after the first few). Either direction stops at a
message longer than ``MAX_MESSAGE_BYTES`` (or of length 0), and at a gap in the sequence numbers
(a lost segment: what follows cannot be framed). A stopped direction keeps no bytes.
Retransmitted bytes are dropped by their sequence number, so a repeated segment never yields a
message twice.
"""

from __future__ import annotations

MAX_MESSAGES = 8  # per direction (the initiator's: messages other than queries)
MAX_MESSAGE_BYTES = 16 * 1024  # the most one direction buffers (a query is < 300 bytes)
_SEQ_MOD = 1 << 32
_HALF = 1 << 31


class DnsStream:
    """One direction of a DNS-over-TCP connection: bytes in order, cut into messages."""

    __slots__ = ("buffer", "next_seq", "left", "done", "queries_free")

    def __init__(self, queries_free: bool = False) -> None:
        self.buffer = b""
        self.next_seq = -1  # the sequence number of the byte after the buffer; -1: none yet
        self.left = MAX_MESSAGES
        self.done = False
        self.queries_free = queries_free  # queries do not count against ``left``

    def feed(self, payload: bytes, seq: int) -> list[bytes]:
        """The messages this segment completes (often none, or one); sets ``done`` when the
        direction is no longer worth reading."""
        if self.done or not payload:
            return []
        if self.next_seq >= 0 and seq != self.next_seq:
            ahead = (seq - self.next_seq) % _SEQ_MOD
            if ahead < _HALF:  # later than expected: a segment is missing
                self._stop()
                return []
            overlap = _SEQ_MOD - ahead  # a retransmission: keep only bytes never seen
            if overlap >= len(payload):
                return []
            payload = payload[overlap:]
            seq = self.next_seq
        self.next_seq = (seq + len(payload)) % _SEQ_MOD
        self.buffer += payload
        return self._messages()

    def _messages(self) -> list[bytes]:
        messages: list[bytes] = []
        buffer = self.buffer
        while len(buffer) >= 2:
            length = (buffer[0] << 8) | buffer[1]
            if not length or length > MAX_MESSAGE_BYTES:
                self._stop()
                return messages
            if len(buffer) < 2 + length:
                break
            message = buffer[2 : 2 + length]
            messages.append(message)
            buffer = buffer[2 + length :]
            if self.queries_free and _is_query(message):
                continue
            self.left -= 1
            if not self.left:
                self._stop()
                return messages
        self.buffer = buffer
        return messages

    def _stop(self) -> None:
        self.done = True
        self.buffer = b""


def _is_query(message: bytes) -> bool:
    """A standard query by its header (QR 0, opcode QUERY); its name is read later."""
    return len(message) >= 12 and not message[2] & 0xF8


class DnsStreams:
    """Both directions of one DNS-over-TCP flow (the initiator's and the responder's)."""

    __slots__ = ("fwd", "bwd")

    def __init__(self) -> None:
        self.fwd = DnsStream(queries_free=True)
        self.bwd = DnsStream()

    def feed(self, fwd: bool, payload: bytes, seq: int) -> list[bytes]:
        """The messages a segment of one direction completes."""
        return (self.fwd if fwd else self.bwd).feed(payload, seq)

    @property
    def done(self) -> bool:
        """Both directions stopped: the flow need not be inspected any more."""
        return self.fwd.done and self.bwd.done
