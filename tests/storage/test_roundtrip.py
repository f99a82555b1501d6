"""Every event type survives the store byte for byte: append, tail and scan give it back equal."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon.storage.contract.events import EVENT_TYPES, AnyEvent, Event
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.names import NAME_PATTERN
from netmon.storage.positions import Position
from netmon.storage.segments import MAX_TS

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
# Fields the store itself constrains: ts names the date partition, branch a folder.
SPECIAL: dict[str, st.SearchStrategy[Any]] = {
    "ts": st.floats(min_value=0.0, max_value=MAX_TS, exclude_max=True),
    "branch": st.from_regex(NAME_PATTERN, fullmatch=True),
}


def strategy(info: mi.Type) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for any type msgspec can describe (what the event schema uses)."""
    match info:
        case mi.StrType():
            return st.text(max_size=24)
        case mi.BoolType():
            return st.booleans()
        case mi.IntType():
            return INT64
        case mi.FloatType():
            return FINITE
        case mi.NoneType():
            return st.none()
        case mi.LiteralType(values=values):
            return st.sampled_from(values)
        case mi.UnionType(types=types):
            return st.one_of([strategy(member) for member in types])
        case mi.VarTupleType(item_type=item) | mi.ListType(item_type=item):
            items = st.lists(strategy(item), max_size=3)
            return items.map(tuple) if isinstance(info, mi.VarTupleType) else items
        case mi.DictType(key_type=key, value_type=value):
            return st.dictionaries(strategy(key), strategy(value), max_size=3)
        case mi.StructType(cls=cls, fields=fields):
            return st.builds(
                cls,
                **{
                    f.name: SPECIAL[f.name] if f.name in SPECIAL else strategy(f.type)
                    for f in fields
                },
            )
    raise NotImplementedError(f"no strategy for {info!r}")  # a new field type: add it here


BY_TYPE = {kind: strategy(mi.type_info(kind)) for kind in EVENT_TYPES}
ANY_EVENT = st.one_of(list(BY_TYPE.values()))


@settings(max_examples=60, deadline=None)
@given(st.lists(ANY_EVENT, min_size=1, max_size=6))
def test_events_round_trip_through_the_store(events: list[Event]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with EventLog(root, "w1", durability="none") as log:
            log.append(events)
        reader = EventLogReader(root)
        tailed, _ = reader.read_new(Position())
        scanned = list(reader.scan(None, None))
    assert reader.stats.malformed_lines == 0
    assert sort_key(tailed) == sort_key(events)
    assert sort_key(scanned) == sort_key(events)


@pytest.mark.parametrize("kind", EVENT_TYPES, ids=lambda kind: kind.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_each_event_type_encodes_to_one_line_that_decodes_equal(
    kind: type[Event], data: st.DataObject
) -> None:
    event = data.draw(BY_TYPE[kind])
    assert type(event) is kind
    line = msgspec.json.encode(event)
    assert b"\n" not in line
    assert msgspec.json.decode(line, type=AnyEvent) == event


def sort_key(events: list[Any]) -> list[bytes]:
    return sorted(msgspec.json.encode(event) for event in events)
