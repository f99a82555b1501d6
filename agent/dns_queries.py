"""The DNS a flow carried: its initiator's queries counted, distinct names bounded, first kept.

One socket may ask many names: a resolver library reusing its socket, or a DNS tunnel (iodine)
asking thousands of distinct long names of one server from one UDP port. The flow's ``domain``
is its first name; a ``DnsTally`` counts every query the initiator sent (``dns_queries``), the
distinct names among them (``dns_names``: exact up to ``MAX_NAMES``, after which queries are
still counted but no name is added) and keeps the first ``SAMPLE`` distinct names as text
(``dns_sample``), so the server's tunnel detector sees what a tunnel asks.

Per query only the question name is read: ``query_name`` checks the header (a standard query,
not a response) and walks the labels of the first question, nothing else. The name becomes
text (agent/appnames.py renders it) only when it is kept. Distinct names are remembered by the
hash of their lower-cased wire form, not as text (a tunnel's names are long): at most
``MAX_NAMES`` hashes, about 300 KiB for a flow at the cap, and one int for a flow of one name
(a ``dig``, most resolver traffic). A collision of two 64-bit hashes among 4,096 names is
a one-in-10^12 event, and it would undercount by one.
"""

from __future__ import annotations

from netmon.agent.appnames import name_text

MAX_NAMES = 4096  # distinct names counted per flow
SAMPLE = 8  # distinct names kept as text per flow
_MAX_WIRE = 254  # a name's wire form without its final zero byte (RFC 1035 2.3.4: 255 with it)


def query_name(payload: bytes) -> bytes | None:
    """The first question's name of a standard query, lower-case, in wire form (length bytes
    and labels, without the final zero; empty for the root); None when ``payload`` is not one."""
    # QR (a response) or an opcode other than QUERY, or no question: not a query we count.
    if len(payload) < 13 or payload[2] & 0xF8 or not (payload[4] or payload[5]):
        return None
    end = len(payload)
    pos = 12
    while True:
        if pos >= end:
            return None  # truncated before the name ended
        length = payload[pos]
        if not length:
            break
        if length > 63:  # a compression pointer (nothing precedes it to point to) or junk
            return None
        pos += 1 + length
    if pos - 12 > _MAX_WIRE:
        return None
    return payload[12:pos].lower()  # length bytes are < 64: lower() changes letters only


def wire_text(wire: bytes) -> str:
    """A name in wire form (as ``query_name`` returns it) as safe text."""
    labels = []
    pos = 0
    while pos < len(wire):
        length = wire[pos]
        labels.append(wire[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return name_text(labels)


class DnsTally:
    """The queries of one flow's initiator: how many, how many distinct names, the first ones."""

    __slots__ = ("queries", "first", "others", "sample")

    def __init__(self) -> None:
        self.queries = 0
        self.first: int | None = None  # hash of the first name
        self.others: set[int] | None = None  # hashes of the later distinct names, when any
        self.sample: list[str] = []

    @property
    def names(self) -> int:
        """Distinct names counted (at most ``MAX_NAMES``)."""
        if self.first is None:
            return 0
        return 1 + (len(self.others) if self.others is not None else 0)

    def add(self, wire: bytes) -> str | None:
        """Count one query for ``wire`` (``query_name``'s form); returns the name as text when
        it is a new name kept in the sample, else None."""
        self.queries += 1
        if not wire:  # the root: a query, but no name
            return None
        key = hash(wire)
        if self.first is None:
            self.first = key
        elif key == self.first:
            return None
        else:
            others = self.others
            if others is None:
                others = self.others = set()
            elif key in others or len(others) >= MAX_NAMES - 1:
                return None
            others.add(key)
        if len(self.sample) >= SAMPLE:
            return None
        text = wire_text(wire)
        self.sample.append(text)
        return text
