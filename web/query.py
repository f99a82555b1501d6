"""The Events search language: ``key:value`` terms, ANDed; repeated keys are ORed.

    branch:hq  ip:10.0.0.0/8  src:203.0.113.7  dst:192.0.2.1  domain:evil.example  port:22
    proto:tcp  severity:high  kind:critical_port  type:DetectionRaised
    from:2026-11-20  to:2026-11-21T12:00  (UTC; a date alone covers the whole day)

A bare term is read by its shape: an IP or CIDR is ``ip:`` (either side of the flow), a number
is ``port:``, anything else is ``domain:`` (a suffix match: ``evil.example`` matches
``x.evil.example``). Without ``from:``, the search covers the last 7 days.

The whole query lives in the URL (``/events?q=...``), so a search is shareable as a link.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shlex
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from netmon.storage.contract.events import SEVERITY_RANK, DetectionRaised, FlowObserved
from netmon.storage.names import InvalidNameError, validate_name

DEFAULT_DAYS = 7
MAX_DAYS = 366
PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
SEARCHABLE_TYPES = {"FlowObserved": FlowObserved, "DetectionRaised": DetectionRaised}
KEYS = (
    "branch", "ip", "src", "dst", "domain", "port", "proto", "severity", "kind", "type", "from",
    "to",
)  # fmt: skip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Searchable = FlowObserved | DetectionRaised


class QueryError(ValueError):
    """A search the user typed cannot be understood; the message says which term and why."""


class EventQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed search: every non-empty field must match (values within a field are ORed)."""

    start: float
    end: float
    branches: tuple[str, ...] = ()
    any_ip: tuple[Network, ...] = ()
    src_ip: tuple[Network, ...] = ()
    dst_ip: tuple[Network, ...] = ()
    domains: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    protocols: tuple[int, ...] = ()
    min_severity: int = 0
    kinds: tuple[str, ...] = ()
    types: tuple[str, ...] = tuple(SEARCHABLE_TYPES)

    def dates(self) -> list[dt.date]:
        """The UTC dates the time range touches, newest first."""
        first = dt.datetime.fromtimestamp(self.start, dt.UTC).date()
        last = dt.datetime.fromtimestamp(max(self.start, self.end - 1e-6), dt.UTC).date()
        days = (last - first).days
        return [last - dt.timedelta(days=n) for n in range(days + 1)]

    def needles(self) -> list[bytes]:
        """Byte strings one of which every matching line must contain (for the store's pre-filter).

        Only offered for single IP addresses, which the encoder writes verbatim as a quoted
        string; a CIDR block or a (case-insensitive) domain gets no pre-filter, the predicate
        decides alone.
        """
        networks = self.any_ip + self.src_ip + self.dst_ip
        if networks and all(n.num_addresses == 1 for n in networks):
            return [f'"{n.network_address}"'.encode() for n in networks]
        return []

    def matches(self, event: Any) -> bool:
        """Whether one stored event matches every term."""
        if type(event).__name__ not in self.types or not isinstance(event, Searchable):
            return False
        if not self.start <= event.ts < self.end:
            return False
        if self.branches and event.branch not in self.branches:
            return False
        if self.any_ip and not (
            _ip_in(event.src_ip, self.any_ip) or _ip_in(event.dst_ip, self.any_ip)
        ):
            return False
        if self.src_ip and not _ip_in(event.src_ip, self.src_ip):
            return False
        if self.dst_ip and not _ip_in(event.dst_ip, self.dst_ip):
            return False
        if self.domains and not _domain_matches(event.domain, self.domains):
            return False
        if self.ports and event.src_port not in self.ports and event.dst_port not in self.ports:
            return False
        if self.protocols and event.protocol not in self.protocols:
            return False
        if self.min_severity and SEVERITY_RANK[event.severity] < self.min_severity:
            return False
        return not self.kinds or bool(set(detection_kinds(event)) & set(self.kinds))


def detection_kinds(event: Searchable) -> list[str]:
    """The detector names of a flow or a raised detection."""
    if isinstance(event, DetectionRaised):
        return [event.detection.kind]
    return [d.kind for d in event.detections]


def parse_query(text: str, now: float) -> EventQuery:
    """Parse the search box; raise QueryError naming the bad term."""
    fields: dict[str, list[Any]] = {}
    start: float | None = None
    end: float | None = None
    for key, value in _terms(text):
        if key == "from":
            start = _parse_time(value, end_of_day=False)
        elif key == "to":
            end = _parse_time(value, end_of_day=True)
        else:
            fields.setdefault(key, []).append(_parse_value(key, value))
    end = now + 1 if end is None else end
    start = end - DEFAULT_DAYS * 86400 if start is None else start
    if start >= end:
        raise QueryError("from: must be before to:")
    if end - start > MAX_DAYS * 86400:
        raise QueryError(f"the time range is longer than {MAX_DAYS} days; narrow from:/to:")
    severities = fields.get("severity", [])
    return EventQuery(
        start=start,
        end=end,
        branches=tuple(fields.get("branch", ())),
        any_ip=tuple(fields.get("ip", ())),
        src_ip=tuple(fields.get("src", ())),
        dst_ip=tuple(fields.get("dst", ())),
        domains=tuple(fields.get("domain", ())),
        ports=tuple(fields.get("port", ())),
        protocols=tuple(fields.get("proto", ())),
        min_severity=min(severities) if severities else 0,
        kinds=tuple(fields.get("kind", ())),
        types=tuple(fields.get("type", ())) or tuple(SEARCHABLE_TYPES),
    )


def _terms(text: str) -> Iterator[tuple[str, str]]:
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise QueryError(f"unbalanced quotes in the search: {error}") from None
    for word in words:
        key, sep, value = word.partition(":")
        if sep and key.lower() in KEYS:
            if not value:
                raise QueryError(f"{key}: needs a value")
            yield key.lower(), value
        else:
            yield _guess_key(word), word


def _guess_key(word: str) -> str:
    if word.isascii() and word.isdigit():  # "²".isdigit() is True but int("²") fails
        return "port"
    try:
        ipaddress.ip_network(word, strict=False)
    except ValueError:
        return "domain"
    return "ip"


def _parse_value(key: str, value: str) -> Any:
    if key == "branch":
        try:
            return validate_name("branch", value)
        except InvalidNameError as error:
            raise QueryError(str(error)) from None
    if key in ("ip", "src", "dst"):
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise QueryError(f"{key}:{value} is not an IP address or CIDR block") from None
    if key == "port":
        if not (value.isascii() and value.isdigit()) or not 0 <= int(value) <= 65535:
            raise QueryError(f"port:{value} is not a port number (0-65535)")
        return int(value)
    if key == "proto":
        if value.isascii() and value.isdigit() and int(value) < 256:
            return int(value)
        if value.lower() not in PROTOCOL_NUMBERS:
            raise QueryError(f"proto:{value}: use tcp, udp, icmp, icmpv6, sctp or a number")
        return PROTOCOL_NUMBERS[value.lower()]
    if key == "severity":
        rank = SEVERITY_RANK.get(value.lower().lstrip(">="))
        if rank is None:
            raise QueryError(f"severity:{value}: use low, medium, high or critical")
        return rank
    if key == "type":
        if value not in SEARCHABLE_TYPES:
            raise QueryError(f"type:{value}: use {' or '.join(SEARCHABLE_TYPES)}")
        return value
    if key == "domain":
        return value.lower().lstrip("*").lstrip(".") or _fail(f"domain:{value} is empty")
    return value  # kind: detector names are free text


def _fail(message: str) -> Any:
    raise QueryError(message)


def _parse_time(value: str, *, end_of_day: bool) -> float:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(
            f"{value!r} is not a date or time: use 2026-11-20 or 2026-11-20T14:30 (UTC)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        if end_of_day and len(value) == 10:  # a bare date: up to the end of that day
            parsed += dt.timedelta(days=1)
        return parsed.timestamp()
    except (OverflowError, ValueError):  # 9999-12-31 + 1 day (found by tests/fuzz)
        raise QueryError(f"{value!r} is out of the supported date range") from None


def _ip_in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _domain_matches(domain: str, suffixes: Sequence[str]) -> bool:
    domain = domain.lower().rstrip(".")
    return any(domain == s or domain.endswith("." + s) for s in suffixes)
