"""The Events search language: what each term means and how bad terms are refused."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest

from netmon.web.query import QueryError, parse_query
from tests.web.flows import SSH, XSS_DOMAIN, flow, ssh_detection

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC).timestamp()


def test_bare_words_are_read_by_their_shape() -> None:
    query = parse_query("10.0.0.0/8 22 evil.example", NOW)
    assert query.any_ip == (ipaddress.ip_network("10.0.0.0/8"),)
    assert query.ports == (22,)
    assert query.domains == ("evil.example",)


def test_default_range_is_the_last_seven_days() -> None:
    query = parse_query("", NOW)
    assert query.end > NOW and query.end - query.start == 7 * 86400
    assert len(query.dates()) == 8  # a 7-day window touches 8 UTC dates unless it starts at 00:00


def test_bare_dates_cover_whole_days() -> None:
    query = parse_query("from:2026-11-19 to:2026-11-20", NOW)
    assert [d.isoformat() for d in query.dates()] == ["2026-11-20", "2026-11-19"]
    assert query.end - query.start == 2 * 86400


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("port:abc", "port:abc"),
        ("port:70000", "port:70000"),
        ("ip:10.0.0.300", "ip:10.0.0.300"),
        ("src:nope", "src:nope"),
        ("proto:gre", "proto:gre"),
        ("severity:urgent", "severity:urgent"),
        ("branch:../etc", "invalid branch name"),
        ("branch:HQ", "invalid branch name"),
        ("from:yesterday", "'yesterday' is not a date"),
        ("from:2026-11-20 to:2026-11-19", "from: must be before to:"),
        ("from:2020-01-01 to:2026-01-01", "longer than 366 days"),
        ("type:AgentHeartbeat", "type:AgentHeartbeat"),
        ('"unbalanced', "unbalanced quotes"),
        ("port:", "port: needs a value"),
    ],
)
def test_bad_terms_are_refused_with_the_term_named(text: str, needle: str) -> None:
    with pytest.raises(QueryError, match=None) as error:
        parse_query(text, NOW)
    assert needle in str(error.value)


@pytest.mark.parametrize(
    ("text", "matched"),
    [
        ("ip:10.0.0.0/24", True),  # source side
        ("ip:192.0.2.0/24", True),  # destination side
        ("ip:172.16.0.0/12", False),
        ("src:192.0.2.10", False),  # it is the destination
        ("dst:192.0.2.10", True),
        ("domain:example.org", True),  # suffix
        ("domain:ample.org", False),  # a suffix stops at a dot
        ("port:443", True),
        ("port:22", False),
        ("proto:udp", False),
        ("proto:tcp", True),
        ("branch:hq", True),
        ("branch:lab", False),
        ("branch:lab branch:hq", True),  # a repeated key is ORed
        ("severity:high", True),
        ("severity:critical", True),
        ("kind:critical_port", True),
        ("kind:suspicious_ip", False),
        ("type:DetectionRaised", False),
        ("ip:10.0.0.5 port:22", False),  # terms are ANDed
    ],
)
def test_terms_match_a_flow(text: str, matched: bool) -> None:
    event = flow(NOW - 60, domain="www.example.org", detections=(SSH,))
    assert parse_query(text, NOW).matches(event) is matched


def test_detections_match_by_kind_and_ip() -> None:
    event = ssh_detection(NOW - 60)
    assert parse_query("kind:critical_port 203.0.113.7 22", NOW).matches(event)
    assert not parse_query("type:FlowObserved", NOW).matches(event)


def test_outside_the_time_range_does_not_match() -> None:
    old = flow(NOW - 8 * 86400)
    assert not parse_query("", NOW).matches(old)
    assert parse_query("from:2026-11-01", NOW).matches(old)


def test_hostile_domain_is_only_a_search_term() -> None:
    query = parse_query(f"domain:'{XSS_DOMAIN}'", NOW)
    assert query.matches(flow(NOW - 5, domain=XSS_DOMAIN))


def test_needles_only_for_exact_ips() -> None:
    assert parse_query("ip:10.0.0.5 dst:192.0.2.1", NOW).needles() == [
        b'"10.0.0.5"',
        b'"192.0.2.1"',
    ]
    assert parse_query("ip:10.0.0.0/8", NOW).needles() == []
    assert parse_query("domain:x.org", NOW).needles() == []
