"""Fuzz the dashboard's search parser (web/query.py): any text is a query or a QueryError, and
a parsed query can be matched, dated and turned into needles without raising."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmon.storage.contract.events import FlowObserved, new_event_id
from netmon.web.query import QueryError, parse_query
from tests.fuzz.budget import fuzz

NOW = 1_790_000_000.0
KEYS = [
    "ip",
    "src",
    "dst",
    "port",
    "proto",
    "domain",
    "branch",
    "severity",
    "kind",
    "type",
    "from",
    "to",
]
VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "10.0.0.0/8",
            "::1",
            "2026-11-20",
            "9999-12-31",
            "0001-01-01",
            "tcp",
            "²",
            "٣",
            "critical",
            ">=high",
            "*.example.com",
            "FlowObserved",
            '"',
            "'",
            "",
        ]
    ),
    st.integers(-5, 70000).map(str),
)
TERMS = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}:{kv[1]}"), VALUES
)
QUERIES = st.one_of(st.text(max_size=80), st.lists(TERMS, max_size=6).map(" ".join))


def sample_flow() -> FlowObserved:
    now = time.time()
    return FlowObserved(
        id=new_event_id(now),
        ts=now,
        branch="hq",
        agent_id="a",
        first_seen=now,
        last_seen=now,
        src_ip="10.1.2.3",
        src_port=5555,
        dst_ip="192.0.2.1",
        dst_port=443,
        protocol=6,
        src2dst_packets=1,
        src2dst_bytes=60,
        dst2src_packets=1,
        dst2src_bytes=60,
        domain="www.example.com",
    )


@fuzz
@given(QUERIES)
def test_any_search_text_parses_or_is_a_clear_error(text: str) -> None:
    try:
        query = parse_query(text, NOW)
    except QueryError as error:
        assert str(error)
        return
    assert query.start < query.end
    query.matches(sample_flow())
    query.dates()
    query.needles()


# Regression tests for what the fuzzer found (each was a 500 from the search page).
@pytest.mark.parametrize("text", ["²", "port:²", "to:9999-12-31", "from:0001-01-01 to:0001-01-02"])
def test_fuzz_findings_are_clear_errors_or_queries(text: str) -> None:
    try:
        parse_query(text, NOW)
    except QueryError as error:
        assert str(error)
