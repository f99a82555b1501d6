"""What the live feed decodes a flow into when the flow is not critical: the fields the
projections read, nothing else.

A ``FlowObserved`` line is mostly its ``features`` (about twenty numbers the projections never
read). The feed decodes every line as a ``FlowBrief`` first (about 2.5x faster) and decodes
again, fully, only the lines that ``needs_full`` picks: critical flows, which the live hub
pushes and the recent projection keeps whole. Every other event type is decoded fully at once.
A brief is never written anywhere: the log, searches and the analysis worker use full events.
"""

from __future__ import annotations

from typing import Union

import msgspec

from netmon.storage.contract.events import (
    AGENT_EVENT_TYPES,
    EVENT_TYPES,
    SEVERITY_RANK,
    AnyEvent,
    Detection,
    FlowObserved,
    Severity,
)

_HIGH = SEVERITY_RANK["high"]


class FlowBrief(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field=FlowObserved.__struct_config__.tag_field,
    tag=FlowObserved.__struct_config__.tag,  # decodes the same lines
    gc=False,  # no cycles possible; bulk decoding triggers no GC passes
):
    """A non-critical ``FlowObserved`` as the projections see it (unknown fields skipped)."""

    id: str
    ts: float
    branch: str
    agent_id: str
    src_ip: str
    dst_ip: str
    dst_port: int
    src2dst_packets: int = 0
    src2dst_bytes: int = 0
    dst2src_packets: int = 0
    dst2src_bytes: int = 0
    domain: str = ""
    detections: tuple[Detection, ...] = ()
    severity: Severity = "none"


FeedEvent = AnyEvent | FlowBrief  # what the live feed yields
FLOW_TYPES: tuple[type, ...] = (FlowObserved, FlowBrief)
FLOW_TYPE_SET = frozenset(FLOW_TYPES)  # for whole-batch checks: set(map(type, batch)) <= it
FROM_AGENTS: tuple[type, ...] = (FlowBrief, *AGENT_EVENT_TYPES)  # a brief: a flow an agent sent

# The contract's event types with FlowObserved swapped for its brief, derived from the one list
# (EVENT_TYPES): a new event type is decoded here without being named here.
_DECODED = tuple(FlowBrief if kind is FlowObserved else kind for kind in EVENT_TYPES)
brief_decoder: msgspec.json.Decoder[FeedEvent] = msgspec.json.Decoder(Union[_DECODED])  # noqa: UP007


def needs_full(event: object) -> bool:
    """Whether the feed must decode this line fully: a flow the live feed pushes (high or
    critical, the rule of ``recent.is_critical``)."""
    return type(event) is FlowBrief and SEVERITY_RANK[event.severity] >= _HIGH
