"""The one alert state model: ``AlertRecord``, and ``fold`` of one lifecycle event into it.

Every reader of alerts (the Alerts page, the alert API, the wall) reads records made here; the
store (app/projections/alert_store.py) keeps one per alert. ``fold`` is a pure function of a
record and one event, with these rules (docs/events.md, "Alerts"):

- ``AlertOpened`` creates the record; a second one for the same id changes nothing.
- ``AlertUpdated`` brings the cumulative evidence: the update with the highest ``seq`` holds it
  (and a non-empty title); its tags are added, its new ids join the sample (the first
  FIRST_IDS ids and the newest NEWEST_IDS, by id, which starts with the creation time), and
  its severity raises the alert's (never lowers it; the rise is listed as an escalation).
- A resolution closes the alert; user events timed after it are ignored, except notes. The
  first acknowledgement before it holds, with the evidence count of that moment
  (``count_at_ack``: the highest count of the opening and the updates timed before it).
- ``AlertEscalated`` raises the severity and records who; the newest assignment holds; a
  suppression's expiry only grows, and means nothing once the alert is resolved.

Each rule is a maximum, a minimum or a bounded set over the events folded, so the record does not
depend on the order they are read in (writers are read in turn, and a user's acknowledgement on
one replica may be read before or after the worker's update on another), and folding an event
twice equals folding it once. What the rules need to stay so is kept in ``facts``; the other
fields are derived from it by ``_derive``. The lists are bounded (newest first out-of-range):
below their caps the record is exact.

The state a reader shows is ``shown_state``: "suppressed" while a suppression runs and the
alert is not resolved, else the stored state.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

from netmon.storage.contract.events import (
    SEVERITY_RANK,
    AlertAcknowledged,
    AlertAssigned,
    AlertEscalated,
    AlertEvidence,
    AlertNoteAdded,
    AlertOpened,
    AlertResolved,
    AlertState,
    AlertSuppressed,
    AlertUpdated,
    Severity,
)

FIRST_IDS = 10  # the evidence sample keeps the first ids (what opened the alert) ...
NEWEST_IDS = 40  # ... and the newest ones
MAX_NOTES = 200
MAX_ESCALATIONS = 50
MAX_ASSIGNMENTS = 20
MAX_COUNTS = 256  # (ts, count) of the newest updates, for count_at_ack
_Listed = TypeVar("_Listed", "AlertNote", "AlertEscalation", "UserAction")
ShownState = Literal["open", "acknowledged", "resolved", "suppressed"]
SHOWN_STATES: tuple[ShownState, ...] = ("open", "acknowledged", "suppressed", "resolved")

# Events about one alert (every alert event but a suppression, which names a rule and entity).
AboutOneAlert = (
    AlertOpened
    | AlertUpdated
    | AlertAcknowledged
    | AlertResolved
    | AlertEscalated
    | AlertAssigned
    | AlertNoteAdded
)
AlertEvent = AboutOneAlert | AlertSuppressed
ALERT_EVENT_TYPES: frozenset[type] = frozenset(
    (
        AlertOpened,
        AlertUpdated,
        AlertAcknowledged,
        AlertResolved,
        AlertEscalated,
        AlertAssigned,
        AlertNoteAdded,
        AlertSuppressed,
    )
)


class AlertNote(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A note on an alert (written with an acknowledgement, a resolution or on its own)."""

    id: str  # the event that wrote it
    by: str
    ts: float
    text: str


class AlertEscalation(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A rise of an alert's severity (or a flag at the same one): by a user or by the worker."""

    id: str
    by: str  # a user, or "rule" when more evidence raised it (an AlertUpdated)
    ts: float
    severity: Severity
    reason: str = ""


class UserAction(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """An acknowledgement, resolution or assignment, as the fold keeps it."""

    id: str
    by: str
    ts: float
    note: str = ""  # the assignee, for an assignment


class AlertFacts(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """What the fold keeps so that the record does not depend on reading order (not shown)."""

    title_seq: int = 0  # the update whose title is shown (0: the opening's)
    rule_severity: Severity = "none"  # the highest of the opening's and the updates'
    first_ack: UserAction | None = None  # the earliest acknowledgement by (ts, id)
    first_resolve: UserAction | None = None  # the earliest resolution by (ts, id)
    assignments: tuple[UserAction, ...] = ()  # the newest MAX_ASSIGNMENTS
    escalations: tuple[AlertEscalation, ...] = ()  # users' and the rule's, newest MAX_ESCALATIONS
    counts: tuple[tuple[float, int, int], ...] = ()  # (ts, count, seq): opening (0), updates
    cut_count: int = 0  # the highest count cut from ``counts`` ...
    cut_ts: float = 0.0  # ... and the newest ts cut
    suppressed_until: float = 0.0  # the longest suppression seen while unresolved
    suppressed_by: str = ""
    suppression_reason: str = ""
    suppressed_ts: float = 0.0  # that suppression's event (ties between equal expiries)
    suppressed_id: str = ""


class AlertRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """One alert as every reader sees it: the fold of its lifecycle events."""

    alert_id: str
    branch: str
    rule: str
    entity: str
    source: str = ""  # "behaviour", "detection", "window"; "" for alerts from older workers
    severity: Severity  # now
    opened_severity: Severity
    title: str
    state: AlertState = "open"
    opened: float  # ts of the AlertOpened
    last_seen: float  # the newest evidence (or event) time
    updated: float  # ts of the newest lifecycle event folded
    evidence: AlertEvidence = AlertEvidence()
    evidence_ids: tuple[str, ...] = ()  # the first FIRST_IDS plus the newest NEWEST_IDS
    tags: tuple[str, ...] = ()
    updates: int = 0  # the highest AlertUpdated seq: the worker numbers them 1, 2, 3...
    acknowledged_by: str = ""
    acknowledged_at: float = 0.0
    count_at_ack: int = 0  # evidence.count when acknowledged: "N new since acknowledged"
    resolved_by: str = ""
    resolved_at: float = 0.0
    resolution: str = ""  # the resolution's note
    assignee: str = ""
    assigned_by: str = ""
    assigned_at: float = 0.0
    notes: tuple[AlertNote, ...] = ()  # oldest first, the newest MAX_NOTES
    escalations: tuple[AlertEscalation, ...] = ()  # oldest first (none timed after resolve)
    suppressed_until: float = 0.0  # 0 once resolved
    suppressed_by: str = ""
    suppression_reason: str = ""
    facts: AlertFacts = AlertFacts()

    @property
    def count(self) -> int:
        """The evidence count (the rule's unit: probes, guesses, flows...)."""
        return self.evidence.count

    @property
    def new_since_ack(self) -> int:
        """How much evidence arrived after the acknowledgement (0 when not acknowledged)."""
        if not self.acknowledged_at:
            return 0
        return max(0, self.evidence.count - self.count_at_ack)


def shown_state(record: AlertRecord, now: float) -> ShownState:
    """The state a reader shows: "suppressed" while a suppression runs (unless resolved)."""
    if record.state != "resolved" and record.suppressed_until > now:
        return "suppressed"
    return record.state


def suppression_matches(record: AlertRecord, event: AlertSuppressed) -> bool:
    """Whether a suppression names this alert: its branch and rule, its entity or "*"."""
    return (
        event.branch == record.branch
        and event.rule == record.rule
        and event.entity in (record.entity, "*")
    )


def higher(current: Severity, other: Severity) -> Severity:
    """The higher of two severities (``current`` on a tie)."""
    return other if SEVERITY_RANK[other] > SEVERITY_RANK[current] else current


def fold(record: AlertRecord | None, event: AlertEvent) -> AlertRecord | None:
    """The record after ``event`` (a new object, or ``record`` itself when nothing changes).

    None stays None for every event but ``AlertOpened``: an event about an alert not opened
    yet is the store's to keep until its ``AlertOpened`` arrives (app/projections/alert_store).
    """
    if isinstance(event, AlertOpened):
        return record if record is not None else _derive(_opened(event))
    if record is None:
        return None
    if isinstance(event, AlertSuppressed):
        # Not an event about this alert: it moves no "updated" time. A resolved alert keeps
        # none (its resolution dropped any), so the order of the two does not matter.
        if record.state == "resolved" or not suppression_matches(record, event):
            return record
        changed = _suppressed(record, event)
        return record if changed is record else _derive(changed)
    if isinstance(event, AlertUpdated):
        changed = _updated(record, event)
    elif isinstance(event, AlertNoteAdded):
        changed = _noted(record, event.id, event.by, event.ts, event.note)
    else:
        changed = _user_action(record, event)
    updated = max(record.updated, event.ts)  # every event about it counts, changing or not
    if changed is record and updated == record.updated:
        return record
    return _derive(msgspec.structs.replace(changed, updated=updated))


def _opened(event: AlertOpened) -> AlertRecord:
    evidence = event.evidence
    return AlertRecord(
        alert_id=event.alert_id,
        branch=event.branch,
        rule=event.rule,
        entity=event.entity,
        source=event.source,
        severity=event.severity,
        opened_severity=event.severity,
        title=event.title,
        opened=event.ts,
        last_seen=evidence.last_seen or event.ts,
        updated=event.ts,
        evidence=evidence,
        evidence_ids=_sample((), event.evidence_ids),
        tags=_union((), event.tags),
        facts=AlertFacts(rule_severity=event.severity, counts=((event.ts, evidence.count, 0),)),
    )


def _updated(record: AlertRecord, event: AlertUpdated) -> AlertRecord:
    facts = record.facts
    if any(seq == event.seq for _, _, seq in facts.counts):
        return record  # this update again (a replay after a crash re-derives the same one)
    newest = event.seq > record.updates
    titled = bool(event.title) and event.seq > facts.title_seq
    escalations = facts.escalations
    if SEVERITY_RANK[event.severity] > SEVERITY_RANK[record.opened_severity]:
        rise = AlertEscalation(
            id=event.id, by="rule", ts=event.ts, severity=event.severity, reason=event.reason
        )
        escalations = _newest(escalations, (rise,), MAX_ESCALATIONS)
    counts, cut_count, cut_ts = _with_count(facts, (event.ts, event.evidence.count, event.seq))
    facts = msgspec.structs.replace(
        facts,
        title_seq=event.seq if titled else facts.title_seq,
        rule_severity=higher(facts.rule_severity, event.severity),
        escalations=escalations,
        counts=counts,
        cut_count=cut_count,
        cut_ts=cut_ts,
    )
    return msgspec.structs.replace(
        record,
        evidence=event.evidence if newest else record.evidence,
        updates=max(record.updates, event.seq),
        title=event.title if titled else record.title,
        evidence_ids=_sample(record.evidence_ids, event.evidence_ids),
        tags=_union(record.tags, event.tags),
        last_seen=max(record.last_seen, event.evidence.last_seen or event.ts),
        facts=facts,
    )


def _user_action(
    record: AlertRecord,
    event: AlertAcknowledged | AlertResolved | AlertEscalated | AlertAssigned,
) -> AlertRecord:
    facts = record.facts
    if isinstance(event, AlertAcknowledged | AlertResolved):
        action = UserAction(id=event.id, by=event.by, ts=event.ts, note=event.note)
        if isinstance(event, AlertAcknowledged):
            facts = msgspec.structs.replace(facts, first_ack=_earliest(facts.first_ack, action))
        else:
            facts = msgspec.structs.replace(
                facts,
                first_resolve=_earliest(facts.first_resolve, action),
                suppressed_until=0.0,  # closed: a suppression means nothing any more
                suppressed_by="",
                suppression_reason="",
            )
        noted = _noted(record, event.id, event.by, event.ts, event.note)
        return msgspec.structs.replace(noted, facts=facts)
    if isinstance(event, AlertEscalated):
        step = AlertEscalation(
            id=event.id, by=event.by, ts=event.ts, severity=event.severity, reason=event.note
        )
        escalations = _newest(facts.escalations, (step,), MAX_ESCALATIONS)
        facts = msgspec.structs.replace(facts, escalations=escalations)
    else:
        given = UserAction(id=event.id, by=event.by, ts=event.ts, note=event.assignee)
        assignments = _newest(facts.assignments, (given,), MAX_ASSIGNMENTS)
        facts = msgspec.structs.replace(facts, assignments=assignments)
    return record if facts == record.facts else msgspec.structs.replace(record, facts=facts)


def _suppressed(record: AlertRecord, event: AlertSuppressed) -> AlertRecord:
    facts = record.facts
    if (event.until, event.ts, event.id) <= (
        facts.suppressed_until,
        facts.suppressed_ts,
        facts.suppressed_id,
    ):
        return record  # the longest suppression holds (ties: the newest)
    longer = msgspec.structs.replace(
        facts,
        suppressed_until=event.until,
        suppressed_by=event.by,
        suppression_reason=event.reason,
        suppressed_ts=event.ts,
        suppressed_id=event.id,
    )
    return msgspec.structs.replace(record, facts=longer)


def _noted(record: AlertRecord, event_id: str, by: str, ts: float, text: str) -> AlertRecord:
    if not text:
        return record
    note = AlertNote(id=event_id, by=by, ts=ts, text=text)
    notes = _newest(record.notes, (note,), MAX_NOTES)
    return record if notes == record.notes else msgspec.structs.replace(record, notes=notes)


def _derive(record: AlertRecord) -> AlertRecord:
    """The shown fields from ``facts``: what a resolution closes, who holds the alert."""
    facts = record.facts
    closed = facts.first_resolve
    cutoff = (closed.ts, closed.id) if closed else None

    def before_close(ts: float, event_id: str) -> bool:
        return cutoff is None or (ts, event_id) < cutoff

    ack = (
        facts.first_ack
        if facts.first_ack and before_close(facts.first_ack.ts, facts.first_ack.id)
        else None
    )
    escalations = tuple(
        step for step in facts.escalations if step.by == "rule" or before_close(step.ts, step.id)
    )
    severity = facts.rule_severity
    for step in escalations:
        severity = higher(severity, step.severity)
    assigned = [given for given in facts.assignments if before_close(given.ts, given.id)]
    holder = assigned[-1] if assigned else None
    suppressed = closed is None
    return msgspec.structs.replace(
        record,
        state="resolved" if closed else ("acknowledged" if ack else "open"),
        severity=severity,
        escalations=escalations,
        acknowledged_by=ack.by if ack else "",
        acknowledged_at=ack.ts if ack else 0.0,
        count_at_ack=_count_at(facts, ack.ts) if ack else 0,
        resolved_by=closed.by if closed else "",
        resolved_at=closed.ts if closed else 0.0,
        resolution=closed.note if closed else "",
        assignee=holder.note if holder else "",
        assigned_by=holder.by if holder else "",
        assigned_at=holder.ts if holder else 0.0,
        suppressed_until=facts.suppressed_until if suppressed else 0.0,
        suppressed_by=facts.suppressed_by if suppressed else "",
        suppression_reason=facts.suppression_reason if suppressed else "",
    )


def _count_at(facts: AlertFacts, ts: float) -> int:
    """The highest evidence count timed at or before ``ts`` (counts only grow)."""
    known = [count for at, count, _ in facts.counts if at <= ts]
    if facts.cut_ts and facts.cut_ts <= ts:
        known.append(facts.cut_count)
    return max(known, default=0)


def _with_count(
    facts: AlertFacts, entry: tuple[float, int, int]
) -> tuple[tuple[tuple[float, int, int], ...], int, float]:
    """``facts.counts`` with ``entry``, the newest MAX_COUNTS kept; the cut's highest."""
    counts = tuple(sorted({*facts.counts, entry}))
    cut_count, cut_ts = facts.cut_count, facts.cut_ts
    if len(counts) > MAX_COUNTS:
        dropped, counts = counts[:-MAX_COUNTS], counts[-MAX_COUNTS:]
        cut_count = max(cut_count, *(count for _, count, _ in dropped))
        cut_ts = max(cut_ts, dropped[-1][0])
    return counts, cut_count, cut_ts


def _earliest(kept: UserAction | None, new: UserAction) -> UserAction:
    if kept is None or (new.ts, new.id) < (kept.ts, kept.id):
        return new
    return kept


def _newest(kept: tuple[_Listed, ...], new: tuple[_Listed, ...], cap: int) -> tuple[_Listed, ...]:
    """The union by id, sorted by (ts, id), the newest ``cap``: the same whatever the order."""
    merged = {item.id: item for item in kept}
    for item in new:
        merged.setdefault(item.id, item)
    if len(merged) == len(kept):
        return kept
    return tuple(sorted(merged.values(), key=lambda item: (item.ts, item.id))[-cap:])


def _sample(kept: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    """The FIRST_IDS lowest and NEWEST_IDS highest ids (ids start with their creation time)."""
    merged = sorted({*kept, *new})
    if len(merged) <= FIRST_IDS + NEWEST_IDS:
        return tuple(merged)
    return (*merged[:FIRST_IDS], *merged[-NEWEST_IDS:])


def _union(kept: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    """The tags of both, sorted (so the order they came in does not matter)."""
    if set(new) <= set(kept):
        return kept
    return tuple(sorted({*kept, *new}))
