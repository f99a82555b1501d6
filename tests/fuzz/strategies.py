"""Hypothesis strategies shared by the fuzz targets: arbitrary msgpack-able values, and real
agent events turned into dicts then mutated field by field."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from hypothesis import strategies as st

from netmon.storage.contract.events import FlowObserved, new_event_id
from tests.factories import telnet_detection

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # what msgpack can carry
    st.floats(),  # NaN and infinities included
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["hq", "", "../x", "FlowObserved", "critical", "\x00", "a" * 300]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def flow_dict(agent: str) -> dict[str, Any]:
    now = time.time()
    flow = FlowObserved(
        id=new_event_id(now),
        ts=now,
        branch="",
        agent_id=agent,
        first_seen=now - 1,
        last_seen=now,
        src_ip="10.0.0.1",
        src_port=1234,
        dst_ip="192.0.2.1",
        dst_port=443,
        protocol=6,
        src2dst_packets=1,
        src2dst_bytes=60,
        dst2src_packets=1,
        dst2src_bytes=60,
        domain="example.com",
    )
    return {"type": "FlowObserved", **msgspec.to_builtins(flow)}


def detection_dict(agent: str) -> dict[str, Any]:
    event = telnet_detection(agent, time.time(), src_port=1)
    return {"type": "DetectionRaised", **msgspec.to_builtins(event)}


@st.composite
def mutated_event(draw: st.DrawFn, agent: str) -> dict[str, Any]:
    """A real event as a dict with some fields replaced, removed or added."""
    event = draw(st.sampled_from([flow_dict, detection_dict]))(agent)
    for _ in range(draw(st.integers(0, 3))):
        # times get a share of their own: every consumer files events by ts
        key = draw(
            st.sampled_from(["ts", "first_seen", "last_seen"])
            | st.sampled_from(sorted(event))
            | st.text(max_size=6)
        )
        action = draw(st.sampled_from(["replace", "delete", "number"]))
        if action == "delete":
            event.pop(key, None)
        elif action == "number":
            event[key] = draw(st.floats() | st.integers(-(2**63), 2**64 - 1))
        else:
            event[key] = draw(VALUES)
    return event
