"""Where a reader stands in the event log: a byte offset per segment file.

A position is plain data so a projection can save it next to its own state (in the same SQLite
transaction) and resume exactly after the last event it applied.
"""

from __future__ import annotations

import msgspec


class Position(msgspec.Struct, forbid_unknown_fields=True):
    """Byte offset reached in each segment, keyed by its path relative to ``DATA/events``.

    A missing segment means offset 0 (not read yet). Offsets always point just after a complete
    line. Readers never mutate a position they are given; they return a new one.
    """

    offsets: dict[str, int] = msgspec.field(default_factory=dict)

    def advanced(self, segment: str, offset: int) -> Position:
        """A copy with ``segment`` moved to ``offset``."""
        offsets = dict(self.offsets)
        offsets[segment] = offset
        return Position(offsets=offsets)


position_encoder = msgspec.json.Encoder()
position_decoder = msgspec.json.Decoder(Position)


def encode_position(position: Position) -> bytes:
    """JSON bytes, for saving a position in a file or a database column."""
    return position_encoder.encode(position)


def decode_position(data: bytes | str) -> Position:
    """The inverse of :func:`encode_position`; raises msgspec.DecodeError on bad input."""
    return position_decoder.decode(data)
