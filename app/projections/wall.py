"""The live wall's state: high and critical activity grouped per source and minute, and one row
per alert, each updated in place as evidence arrives (app/projections/wall_rows.py turns it into
the rows a dashboard shows).

A flood must never hide a rare critical row, so the wall is built about entities, not events:

- **Activity rows.** Every high or critical flow, detection and gap of one source (a gap: of one
  agent) in one aligned period of ``GROUP_S`` seconds is one row, whose counters (flows, bytes,
  distinct targets and ports, reasons, domains) grow in place. That is the per-entity rate limit:
  a source makes at most one new row per period however much it sends, and its first row shows
  with its first event. A source keeps at most ``ENTITY_ROWS`` rows (its newest periods).
- **Alert rows.** ``AlertOpened`` makes a row, ``AlertUpdated`` replaces its evidence (the
  highest ``seq`` wins), ``AlertEscalated`` raises its severity, acknowledged/resolved change its
  state.

The period is aligned to the clock (not started by a source's first event) and a token bucket is
not used, on purpose: either would make a row's bounds depend on the order events are read in,
and the snapshot a (re)connecting dashboard gets must not (several writers' segments interleave
differently on every replica and on every rebuild). Every counter here merges in any order:
sums, minima and maxima, the smallest N distinct values, a bitmap of ports, the update with the
highest ``seq``. Activity is capped per branch by its ``KEYS_KEPT`` newest (period, source) keys
ever seen, and per source by its ``ENTITY_ROWS`` newest; both filters only ever tighten, so the
result is exactly the same in any read order. Alert rows are capped at ``ALERTS_KEPT`` per branch
by their earliest event; below that cap they do not depend on the read order either.

Each event is folded once: the feed's position is saved with this state, and ingest stores each
agent event once (an alert event read twice would show the same anyway: the highest ``seq`` and
the furthest state win).
"""

from __future__ import annotations

import bisect

import msgspec

from netmon.storage.contract.events import (
    SEVERITY_RANK,
    AlertAcknowledged,
    AlertEscalated,
    AlertEvidence,
    AlertOpened,
    AlertResolved,
    AlertUpdated,
    AnyEvent,
    Detection,
    DetectionRaised,
    FlowObserved,
    GapReported,
)

GROUP_S = 60  # seconds of one source's activity that make one row
ENTITY_ROWS = 3  # rows a source keeps on the wall (its newest periods)
KEYS_KEPT = 300  # newest (period, source) keys a branch remembers
ALERTS_KEPT = 100  # newest alert rows a branch keeps
TARGETS_KEPT = 100  # distinct destinations a row counts exactly ("100+ hosts" past it)
LABELS_KEPT = 8  # distinct reasons ("RDP (3389/tcp)") and domains a row names
MAX_PORT = 65_535
FLOW_SPAN_S = 86_400.0  # a flow's first_seen further back than this from its export is not used
_STATE_RANK = {"open": 0, "acknowledged": 1, "resolved": 2}

ActivityEvent = FlowObserved | DetectionRaised | GapReported
AlertEvent = AlertOpened | AlertUpdated | AlertEscalated | AlertAcknowledged | AlertResolved
ACTIVITY_TYPES = (FlowObserved, DetectionRaised, GapReported)
ALERT_TYPES = (AlertOpened, AlertUpdated, AlertEscalated, AlertAcknowledged, AlertResolved)


class Activity(msgspec.Struct):
    """One source's high and critical activity in one period; every field merges in any order."""

    entity: str
    period: int
    events: int = 0  # events folded: the row's version
    flows: int = 0  # FlowObserved folded
    raised: int = 0  # DetectionRaised folded (sent at once, before their flow ends)
    carried: int = 0  # critical detections inside the folded flows (each was raised too)
    traffic: int = 0  # bytes both ways of the folded flows
    dropped: int = 0  # events agents reported lost (GapReported)
    first: float = 0.0
    last: float = 0.0
    newest: str = ""  # the id of the newest event, by (ts, id)
    severity: str = "none"
    targets: list[str] = []  # the smallest TARGETS_KEPT + 1 distinct destinations, sorted
    ports: bytes = b""  # bitmap of the distinct destination ports (at most 8 KiB)
    labels: list[str] = []  # the smallest LABELS_KEPT distinct reasons, sorted
    domains: list[str] = []  # the smallest LABELS_KEPT distinct domains, sorted


class AlertRow(msgspec.Struct):
    """One alert as the wall shows it; its fields merge in any order too."""

    alert_id: str
    events: int = 0
    rule: str = ""  # "" until its AlertOpened is read (a user's action may be read first)
    entity: str = ""
    title: str = ""
    title_seq: int = -1  # the update the title comes from (0: AlertOpened)
    seq: int = -1  # the update the evidence comes from (0: AlertOpened)
    evidence: AlertEvidence = AlertEvidence()
    severity: str = "none"
    tags: list[str] = []
    first: float = 0.0
    last: float = 0.0
    state: str = "open"
    state_key: tuple[int, float, str] = (0, 0.0, "")  # (rank, ts, id) of the deciding event
    by: str = ""


class BranchWall(msgspec.Struct):
    """One branch's wall: activity by "period|source", alerts by id."""

    keys: list[tuple[int, str]] = []  # the KEYS_KEPT largest (period, source) seen, ascending
    activity: dict[str, Activity] = {}
    alerts: dict[str, AlertRow] = {}


# --- folding ------------------------------------------------------------------------------------


def apply(wall: BranchWall, event: AnyEvent) -> None:
    """Fold one event the live feed pushes (``recent.is_critical``) into its branch's wall."""
    if isinstance(event, ACTIVITY_TYPES):
        activity = _activity_for(wall, *activity_key(event))
        if activity is not None:
            _fold_activity(activity, event)
    elif isinstance(event, ALERT_TYPES):
        _fold_alert(wall, event)


def activity_key(event: ActivityEvent) -> tuple[int, str]:
    """(period, source) of an activity event. A flow counts at its start, where the detection
    raised on its first packet counts too, so both land in the same row."""
    if isinstance(event, GapReported):
        return int(event.ts // GROUP_S), f"agent {event.agent_id}"
    return int(_start(event) // GROUP_S), event.src_ip


def _start(event: ActivityEvent) -> float:
    """When an activity began: a flow's first packet (an agent's clock: sane ones only)."""
    if isinstance(event, FlowObserved) and event.ts - FLOW_SPAN_S <= event.first_seen <= event.ts:
        return event.first_seen
    return event.ts


def activity_name(period: int, entity: str) -> str:
    """The key of an activity row in ``BranchWall.activity``."""
    return f"{period}|{entity}"


def _activity_for(wall: BranchWall, period: int, entity: str) -> Activity | None:
    """The row of (period, entity), made if both caps let it in; None if they keep it out."""
    name = activity_name(period, entity)
    found = wall.activity.get(name)
    if found is not None:
        return found
    key = (period, entity)
    keys = wall.keys
    index = bisect.bisect_left(keys, key)
    if index < len(keys) and keys[index] == key:
        return None  # remembered, but past one of the caps: its row was dropped for good
    if len(keys) >= KEYS_KEPT:
        if index == 0:
            return None  # older than every key the branch remembers
        wall.activity.pop(activity_name(*keys.pop(0)), None)
        index -= 1
    keys.insert(index, key)
    own = [k for k in keys if k[1] == entity]  # ascending: the oldest first
    if len(own) > ENTITY_ROWS:
        if key < own[-ENTITY_ROWS]:
            return None  # a late event, older than this source's newest rows
        wall.activity.pop(activity_name(*own[-ENTITY_ROWS - 1]), None)  # its oldest row leaves
    activity = wall.activity[name] = Activity(entity=entity, period=period)
    return activity


def _fold_activity(row: Activity, event: ActivityEvent) -> None:
    at = _start(event)
    if row.events == 0 or at < row.first:
        row.first = at
    if (event.ts, event.id) > (row.last, row.newest):
        row.last, row.newest = event.ts, event.id
    row.events += 1
    match event:
        case FlowObserved():
            row.flows += 1
            row.traffic += event.src2dst_bytes + event.dst2src_bytes
            row.carried += sum(1 for d in event.detections if d.severity == "critical")
            _aim(row, event.dst_ip, event.dst_port, event.domain)
            for detection in event.detections:
                if SEVERITY_RANK[detection.severity] >= SEVERITY_RANK["high"]:
                    _keep_smallest(row.labels, reason(detection), LABELS_KEPT)
            _raise(row, event.severity)
        case DetectionRaised():
            row.raised += 1
            _aim(row, event.dst_ip, event.dst_port, event.domain)
            _keep_smallest(row.labels, reason(event.detection), LABELS_KEPT)
            _raise(row, event.severity)
        case GapReported():
            row.dropped += event.events_dropped
            _keep_smallest(row.labels, f"gap ({event.reason})", LABELS_KEPT)
            _raise(row, "high")


def _aim(row: Activity, target: str, port: int, domain: str) -> None:
    _keep_smallest(row.targets, target, TARGETS_KEPT + 1)
    if domain:
        _keep_smallest(row.domains, domain, LABELS_KEPT)
    if not 0 <= port <= MAX_PORT:
        return  # the contract does not bound ports: 1 << 10**9 would take 125 MB
    bits = int.from_bytes(row.ports, "little")
    if not bits >> port & 1:
        bits |= 1 << port
        row.ports = bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def _raise(row: Activity | AlertRow, severity: str) -> None:
    if SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(row.severity, 0):
        row.severity = severity


def _keep_smallest(values: list[str], value: str, cap: int) -> None:
    """Add ``value`` to the sorted ``values``, keeping the ``cap`` smallest: the same values
    whatever order they come in."""
    index = bisect.bisect_left(values, value)
    if index < len(values) and values[index] == value:
        return
    if len(values) >= cap:
        if index >= cap:
            return
        values.pop()
    values.insert(index, value)


def reason(detection: Detection) -> str:
    """Why a detection put its flow on the wall, in words that do not name the flow."""
    match detection.kind:
        case "critical_port":
            return detection.detail  # "RDP (3389/tcp)"
        case "suspicious_ip":
            return f"suspicious IP (threat list {detection.rule})"
        case "unapproved_domain":
            return "denied domain" if detection.rule == "denylist" else "unapproved domain"
    words = detection.kind.replace("_", " ")
    return f"{words} ({detection.rule})" if detection.rule else words


def _fold_alert(wall: BranchWall, event: AlertEvent) -> None:
    row = wall.alerts.get(event.alert_id)
    if row is None:
        row = _new_alert_row(wall, event)
        if row is None:
            return
    elif event.ts < row.first:
        row.first = event.ts
    row.events += 1
    row.last = max(row.last, event.ts)
    match event:
        case AlertOpened():
            row.rule, row.entity = event.rule, event.entity
            _retitle(row, 0, event.title)
            if row.seq < 0:
                row.seq, row.evidence = 0, event.evidence
            _raise(row, event.severity)
            _tag(row, event.tags)
        case AlertUpdated():
            _retitle(row, event.seq, event.title)
            if event.seq > row.seq:
                row.seq, row.evidence = event.seq, event.evidence
            _raise(row, event.severity)
            _tag(row, event.tags)
        case AlertEscalated():
            _raise(row, event.severity)
        case AlertAcknowledged():
            _decide(row, "acknowledged", event.ts, event.id, event.by)
        case AlertResolved():
            _decide(row, "resolved", event.ts, event.id, event.by)


def _new_alert_row(wall: BranchWall, event: AlertEvent) -> AlertRow | None:
    """A row for a new alert, pushing out the branch's oldest past ALERTS_KEPT."""
    alerts = wall.alerts
    if len(alerts) >= ALERTS_KEPT:
        oldest = min(alerts.values(), key=lambda row: (row.first, row.alert_id))
        if (event.ts, event.alert_id) <= (oldest.first, oldest.alert_id):
            return None
        del alerts[oldest.alert_id]
    row = alerts[event.alert_id] = AlertRow(alert_id=event.alert_id, first=event.ts)
    return row


def _retitle(row: AlertRow, seq: int, title: str) -> None:
    if title and seq > row.title_seq:
        row.title, row.title_seq = title, seq


def _tag(row: AlertRow, tags: tuple[str, ...]) -> None:
    for tag in tags:
        _keep_smallest(row.tags, tag, LABELS_KEPT)


def _decide(row: AlertRow, state: str, ts: float, event_id: str, by: str) -> None:
    """The furthest state wins (resolved > acknowledged > open); the latest action of it names
    who."""
    key = (_STATE_RANK[state], ts, event_id)
    if key > row.state_key:
        row.state, row.state_key, row.by = state, key, by
