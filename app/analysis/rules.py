"""Alert rules: behaviour findings, critical detections and window rules open aggregated alerts.

State is keyed by (rule, entity): at most one open alert each, which gathers its evidence. A
behaviour finding carries its cumulative evidence; an agent's critical detections (RDP, Telnet,
a threat-list address) are tallied here per (kind, source). While an alert is open, more
evidence becomes an ``AlertUpdated`` at most every ``update_every_s`` seconds of event time, or
sooner when the count doubles or the severity rises, so the log grows with attackers, not with
flows. Severity rises one step each time the count passes ``escalate_factor`` times the rule's
threshold (up to high; to critical only for a source on a threat list). After an
alert closes, the same key stays quiet for ``cooldown`` seconds. A suppression (AlertSuppressed,
from a user) silences a key until it expires; entity "*" silences every entity of a rule. Times
are event times, so replaying the log gives the same decisions, and alert ids are derived from
what opened them (rule, entity, first evidence) so a replay after a crash re-derives the same id
and the worker can drop the duplicate (updates are recognised by their ``seq``).

Window rules (per branch, judged on windows with at least ``min_flows`` flows):
- ``attack_share``: share of flows labelled attack >= the threshold (high);
- ``unknown_share``: share labelled unknown >= the threshold (medium);
- ``flow_surge``: flows > factor x the mean of the previous windows (medium).
A window rule's alert resolves itself ("rule:recovered") at the first window where it no
longer fires; detection alerts stay open until a user resolves them.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import msgspec

from netmon.app.analysis.behaviour.bounded import add_capped, evict_oldest, sample
from netmon.app.analysis.behaviour.findings import MAX_SAMPLE_IDS, Finding
from netmon.storage.contract.events import (
    SEVERITY_RANK,
    AlertAcknowledged,
    AlertEscalated,
    AlertEvidence,
    AlertOpened,
    AlertResolved,
    AlertSuppressed,
    AlertUpdated,
    DetectionRaised,
    Event,
    FlowObserved,
    Severity,
    WindowSummarized,
    new_event_id,
)

log = logging.getLogger(__name__)
RECOVERED_BY = "rule:recovered"
SEVERITIES: tuple[Severity, ...] = ("none", "low", "medium", "high", "critical")
TALLY_CAP = 10_000  # (kind, source) detection tallies kept; the least recently seen go first
TALLY_SET_CAP = 256
SERVER_KEYED_RULE = "detection:critical_port"  # alerts about the server, not each client
TALLY_SEEN_IDS = 64  # flow ids already counted per tally (a DetectionRaised and its flow)


class OpenAlert(msgspec.Struct, kw_only=True):
    """One open alert and what the engine has reported of it."""

    alert_id: str
    rule: str
    entity: str
    severity: str
    opened_at: float
    acknowledged_by: str = ""
    seq: int = 0  # AlertUpdated events written
    threshold: int = 1  # the rule's threshold: escalation counts in multiples of it
    reported: AlertEvidence = AlertEvidence()
    reported_at: float = 0.0
    pending: AlertEvidence | None = None  # evidence not reported yet (rate limit)
    pending_ids: list[str] = []
    pending_title: str = ""  # the newest finding's title, written with the held-back update
    title: str = ""  # the title last written (for notifications)
    tags: list[str] = []
    branch: str = ""
    volume_steps: int = 0  # escalations for volume so far
    listed_step: bool = False  # raised once already for a threat-listed source
    base_count: int = 0  # counts of the detector's earlier episodes while this stayed open
    episode_count: int = 0


class DetectionTally(msgspec.Struct, kw_only=True):
    """An agent's critical findings of one kind about one entity (a server for critical ports,
    else the source), gathered into evidence."""

    branch: str
    detail: str
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    targets: set[str] = set()
    ports: set[int] = set()
    seen: list[str] = []  # recently counted flow ids
    new_ids: list[str] = []


class AlertsState(msgspec.Struct, kw_only=True):
    """Everything the engine remembers (checkpointed with the worker's position)."""

    open: dict[str, OpenAlert] = {}  # "rule|entity" -> alert
    closed_at: dict[str, float] = {}  # "rule|entity" -> when its last alert closed
    suppressed: dict[str, float] = {}  # "rule|entity" -> until
    history: dict[str, list[int]] = {}  # branch -> flows of recent windows
    tallies: dict[str, DetectionTally] = {}  # "detection:kind|entity" -> tally


def alert_id(rule: str, entity: str, evidence: str) -> str:
    """Deterministic id: the same trigger replayed yields the same alert."""
    return hashlib.sha256(f"{rule}|{entity}|{evidence}".encode()).hexdigest()[:32]


class AlertEngine:
    """Turns behaviour findings, critical detections and windows into alert lifecycle events."""

    def __init__(
        self, settings: Any, update_every_s: float = 60.0, escalate_factor: float = 10.0
    ) -> None:
        self.s = settings  # AnalysisSettings: rule_* thresholds and alert_cooldown_s
        self.update_every_s, self.escalate_factor = update_every_s, escalate_factor
        self.state = AlertsState()

    # --- triggers ---------------------------------------------------------------------------

    def on_detection(self, event: DetectionRaised) -> list[Event]:
        """A critical detection counts towards its entity's alert (see ``_tally``)."""
        if event.severity != "critical":
            return []
        detection = event.detection
        return self._tally(event, f"detection:{detection.kind}", detection.detail, event.flow_id)

    def on_flow(self, flow: FlowObserved) -> list[Event]:
        """Critical findings carried by a flow (its DetectionRaised, if any, counted it once)."""
        out: list[Event] = []
        for detection in flow.detections:
            if detection.severity == "critical":
                rule = f"detection:{detection.kind}"
                out += self._tally(flow, rule, detection.detail, flow.id)
        return out

    def _tally(
        self, event: DetectionRaised | FlowObserved, rule: str, detail: str, flow_id: str
    ) -> list[Event]:
        """Fold one critical detection into its tally and report the tally as a finding.

        A critical port (Telnet, RDP...) is about the server that offers it: one alert per
        server, its clients as evidence, however many addresses try it (the demo's attackers
        take a new address for every attempt). Other kinds (a threat-list address) are about
        the source.
        """
        by_server = rule == SERVER_KEYED_RULE
        entity, peer = (event.dst_ip, event.src_ip) if by_server else (event.src_ip, event.dst_ip)
        key = f"{rule}|{entity}"
        tallies = self.state.tallies
        tally = tallies.pop(key, None) or DetectionTally(branch=event.branch, detail=detail)
        evict_oldest(tallies, TALLY_CAP)
        tallies[key] = tally  # re-inserted last: the dict's order is recency
        if flow_id in tally.seen:
            return []  # the flow's DetectionRaised was counted already
        tally.seen.append(flow_id)
        del tally.seen[:-TALLY_SEEN_IDS]
        tally.count += 1
        tally.first = tally.first or event.ts
        tally.last = max(tally.last, event.ts)
        add_capped(tally.targets, peer, TALLY_SET_CAP)
        add_capped(tally.ports, event.dst_port, TALLY_SET_CAP)
        if len(tally.new_ids) < MAX_SAMPLE_IDS:
            tally.new_ids.append(event.id)
        peers = sample(tally.targets, 10)
        times = "" if tally.count == 1 else f" ({tally.count} times)"
        if by_server:
            who = peers[0] if len(tally.targets) == 1 else f"{len(tally.targets)} sources"
            title = f"{tally.detail} to {entity} from {who}{times}"
            evidence = AlertEvidence(
                count=tally.count,
                first_seen=tally.first,
                last_seen=tally.last,
                distinct_targets=1,
                distinct_ports=len(tally.ports),
                targets=(entity,),
                ports=sample(tally.ports, 20),
                sources=peers,
            )
        else:
            where = peers[0] if len(tally.targets) == 1 else f"{len(tally.targets)} hosts"
            # A threat-list detail names the address already ("198.51.100.66 in list x").
            who = "" if entity in tally.detail else f" from {entity}"
            title = f"{tally.detail}{who}: flows to {where}{times}"
            evidence = AlertEvidence(
                count=tally.count,
                first_seen=tally.first,
                last_seen=tally.last,
                distinct_targets=len(tally.targets),
                distinct_ports=len(tally.ports),
                targets=peers,
                ports=sample(tally.ports, 20),
            )
        finding = Finding(
            rule=rule,
            entity=entity,
            branch=event.branch,
            ts=event.ts,
            severity="critical",
            title=title,
            evidence=evidence,
            evidence_ids=tuple(tally.new_ids),
        )
        tally.new_ids = []
        return self.on_finding(finding, source="detection")

    def on_finding(self, finding: Finding, source: str = "behaviour") -> list[Event]:
        """Open the finding's alert, or gather its evidence into the open one."""
        key = f"{finding.rule}|{finding.entity}"
        alert = self.state.open.get(key)
        if alert is None:
            return self._open_finding(key, finding, source)
        evidence = self._continued(alert, finding.evidence)
        pending = alert.pending_ids
        pending.extend(finding.evidence_ids[: MAX_SAMPLE_IDS - len(pending)])
        alert.pending, alert.pending_title = evidence, finding.title
        new_tags = [tag for tag in finding.tags if tag not in alert.tags]
        alert.tags.extend(new_tags)
        escalation = self._escalated(alert, evidence.count)
        if SEVERITY_RANK[finding.severity] > SEVERITY_RANK[escalation[0]]:
            why = ", ".join(new_tags) or "the detector raised it"  # e.g. "login succeeded"
            escalation = (finding.severity, why)
        urgent = escalation[0] != alert.severity or bool(new_tags)
        if urgent or self._update_due(alert, evidence, finding.ts):
            return [self._update(alert, finding.ts, escalation, tuple(new_tags), finding.title)]
        return []

    def flush(self, now: float) -> list[Event]:
        """Updates held back by the rate limit whose time has come (event or wall time)."""
        out: list[Event] = []
        for alert in self.state.open.values():
            if alert.pending is not None and now - alert.reported_at >= self.update_every_s:
                out.append(self._update(alert, now, (alert.severity, ""), (), alert.pending_title))
        return out

    def _open_finding(self, key: str, finding: Finding, source: str) -> list[Event]:
        reason = self._silenced(finding.rule, finding.entity, finding.ts)
        if reason:
            log.debug("alert %s not opened: %s", key, reason)
            return []
        evidence = finding.evidence
        trigger = f"{source}@{finding.ts!r}"  # event time: a replay derives the same id
        ident = alert_id(finding.rule, finding.entity, trigger)
        alert = self.state.open[key] = OpenAlert(
            alert_id=ident,
            rule=finding.rule,
            entity=finding.entity,
            severity=finding.severity,
            opened_at=finding.ts,
            threshold=max(finding.threshold, 1),
            reported=evidence,
            reported_at=finding.ts,
            tags=list(finding.tags),
            branch=finding.branch,
            episode_count=evidence.count,
            title=finding.title,
        )
        # A scan seen whole in one batch opens at the severity its size deserves.
        alert.severity = self._escalated(alert, evidence.count)[0]
        return [
            AlertOpened(
                id=new_event_id(finding.ts),
                ts=finding.ts,
                branch=finding.branch,
                alert_id=ident,
                rule=finding.rule,
                entity=finding.entity,
                severity=alert.severity,  # type: ignore[arg-type]
                title=finding.title,
                evidence_ids=finding.evidence_ids,
                evidence=evidence,
                source=source,
                tags=finding.tags,
            )
        ]

    @staticmethod
    def _continued(alert: OpenAlert, evidence: AlertEvidence) -> AlertEvidence:
        """The detector's episode evidence on top of earlier episodes of the same open alert
        (a detector restarts counting after a quiet spell; the alert keeps its total)."""
        if evidence.count < alert.episode_count:
            alert.base_count += alert.episode_count
        alert.episode_count = evidence.count
        if not alert.base_count:
            return evidence
        first = min(alert.reported.first_seen or evidence.first_seen, evidence.first_seen)
        return msgspec.structs.replace(
            evidence, count=alert.base_count + evidence.count, first_seen=first
        )

    def _escalated(self, alert: OpenAlert, count: int) -> tuple[str, str]:
        """(severity, why): one step up each time the count passes another ``escalate_factor``
        times the rule's threshold (10x, 100x...), high at most; a source on a threat list goes one
        step further once, to critical at most."""
        rank, steps, why = SEVERITY_RANK[alert.severity], 0, []
        while (
            count >= alert.threshold * self.escalate_factor ** (alert.volume_steps + 1)
            and rank + steps < SEVERITY_RANK["high"]
        ):
            alert.volume_steps += 1
            steps += 1
        if steps:
            why.append(f"count {count} passed {self.escalate_factor:g}x the rule's threshold")
        if "threat list" in alert.tags and not alert.listed_step and rank + steps < 4:
            alert.listed_step = True
            steps += 1
            why.append("source on a threat list")
        return (SEVERITIES[rank + steps], "; ".join(why)) if steps else (alert.severity, "")

    def _update_due(self, alert: OpenAlert, evidence: AlertEvidence, now: float) -> bool:
        grown = evidence.count >= 2 * max(alert.reported.count, 1)
        return grown or now - alert.reported_at >= self.update_every_s

    def _update(
        self,
        alert: OpenAlert,
        now: float,
        escalation: tuple[str, str],
        tags: tuple[str, ...],
        title: str,
    ) -> Event:
        evidence = alert.pending or alert.reported
        severity, reason = escalation
        raised = severity != alert.severity
        alert.seq += 1
        alert.reported, alert.reported_at = evidence, now
        event = AlertUpdated(
            id=new_event_id(now),
            ts=now,
            branch=alert.branch,
            alert_id=alert.alert_id,
            seq=alert.seq,
            evidence=evidence,
            evidence_ids=tuple(alert.pending_ids),
            severity=severity if raised else "none",  # type: ignore[arg-type]
            title=title,
            reason=reason,
            tags=tags,
        )
        alert.severity = severity
        alert.pending, alert.pending_ids, alert.pending_title = None, [], ""
        alert.title = title or alert.title
        return event

    def on_window(self, window: WindowSummarized) -> list[Event]:
        """Judge the window rules for the window's branch; open or resolve their alerts."""
        entity = f"branch:{window.branch}"
        history = self.state.history.setdefault(window.branch, [])
        firing: dict[str, tuple[Severity, str]] = {}
        if window.flows >= self.s.rule_min_flows:
            attack = window.labels.get("attack", 0) / window.flows
            unknown = window.labels.get("unknown", 0) / window.flows
            if attack >= self.s.rule_attack_share:
                firing["attack_share"] = (
                    "high",
                    f"{attack:.0%} of {window.flows} flows are attacks",
                )
            if unknown >= self.s.rule_unknown_share:
                firing["unknown_share"] = (
                    "medium",
                    f"{unknown:.0%} of {window.flows} flows unknown",
                )
        if len(history) >= 2:
            mean = sum(history) / len(history)
            if (
                window.flows >= self.s.rule_min_flows
                and window.flows > self.s.rule_surge_factor * mean
            ):
                firing["flow_surge"] = (
                    "medium",
                    f"{window.flows} flows, {window.flows / max(mean, 1):.1f}x the recent mean",
                )
        history.append(window.flows)
        del history[: -self.s.rule_surge_history]
        out: list[Event] = []
        for rule in ("attack_share", "unknown_share", "flow_surge"):
            if rule in firing:
                severity, detail = firing[rule]
                title = f"{window.branch}: {detail}"
                evidence = (window.id, *window.evidence_ids[:10])
                trigger = f"window@{window.window_start:.0f}"  # window ids differ on replay
                out += self._open(rule, entity, severity, title, window, evidence, trigger)
            else:
                out += self._recover(rule, entity, window)
        return out

    def find(self, alert_id: str) -> OpenAlert | None:
        """The open alert with this id, if it is open."""
        return next((a for a in self.state.open.values() if a.alert_id == alert_id), None)

    def rename(self, alert_id: str, stored: str) -> None:
        """Give an open alert the id the log already knows it by (a replay's adoption)."""
        alert = self.find(alert_id)
        if alert is not None:
            alert.alert_id = stored

    # --- user actions read back from the log --------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold a lifecycle event written by someone else (the API) into the state."""
        if isinstance(event, AlertSuppressed):
            key = f"{event.rule}|{event.entity}"
            self.state.suppressed[key] = max(self.state.suppressed.get(key, 0.0), event.until)
        elif isinstance(event, AlertResolved):
            for key, alert in list(self.state.open.items()):
                if alert.alert_id == event.alert_id:
                    del self.state.open[key]
                    self.state.closed_at[key] = event.ts
                    self.state.tallies.pop(key, None)  # a later alert counts afresh
        elif isinstance(event, AlertAcknowledged):
            for alert in self.state.open.values():
                if alert.alert_id == event.alert_id:
                    alert.acknowledged_by = event.by
        elif isinstance(event, AlertEscalated):
            for alert in self.state.open.values():
                if alert.alert_id == event.alert_id and (
                    SEVERITY_RANK[event.severity] > SEVERITY_RANK[alert.severity]
                ):
                    alert.severity = event.severity  # a user's escalation is the new floor

    # --- internals ---------------------------------------------------------------------------

    def _silenced(self, rule: str, entity: str, now: float) -> str:
        for key in (f"{rule}|{entity}", f"{rule}|*"):
            until = self.state.suppressed.get(key)
            if until is not None and now < until:
                return "suppressed"
            if until is not None:
                del self.state.suppressed[key]  # expired
        closed = self.state.closed_at.get(f"{rule}|{entity}")
        if closed is not None and now < closed + self.s.alert_cooldown_s:
            return "cooling down"
        return ""

    def _open(
        self,
        rule: str,
        entity: str,
        severity: Severity,
        title: str,
        cause: Event,
        evidence: tuple[str, ...],
        trigger: str = "",
    ) -> list[Event]:
        key = f"{rule}|{entity}"
        if key in self.state.open:
            return []  # one open alert per rule and entity
        reason = self._silenced(rule, entity, cause.ts)
        if reason:
            log.debug("alert %s not opened: %s", key, reason)
            return []
        ident = alert_id(rule, entity, trigger or evidence[0])
        self.state.open[key] = OpenAlert(
            alert_id=ident, rule=rule, entity=entity, severity=severity, opened_at=cause.ts
        )
        return [
            AlertOpened(
                id=new_event_id(cause.ts),
                ts=cause.ts,
                branch=cause.branch,
                alert_id=ident,
                rule=rule,
                entity=entity,
                severity=severity,
                title=title,
                evidence_ids=evidence,
                evidence=AlertEvidence(count=1, first_seen=cause.ts, last_seen=cause.ts),
                source="window",
            )
        ]

    def _recover(self, rule: str, entity: str, cause: Event) -> list[Event]:
        key = f"{rule}|{entity}"
        alert = self.state.open.pop(key, None)
        if alert is None:
            return []
        self.state.closed_at[key] = cause.ts
        return [
            AlertResolved(
                id=new_event_id(cause.ts),
                ts=cause.ts,
                branch=cause.branch,
                alert_id=alert.alert_id,
                by=RECOVERED_BY,
                note=f"rule no longer fires (window {cause.id})",
            )
        ]


def suppression(
    rule: str, entity: str, until: float, by: str, reason: str, branch: str, now: float
) -> AlertSuppressed:
    """A validated AlertSuppressed event (for the API and CLI): a reason and a future expiry."""
    if not reason.strip():
        raise ValueError("a suppression needs a reason (it is audited)")
    if until <= now:
        raise ValueError("a suppression must expire in the future")
    if not rule or not entity:
        raise ValueError("a suppression names a rule and an entity ('*' for all entities)")
    return AlertSuppressed(
        id=new_event_id(now),
        ts=now,
        branch=branch,
        rule=rule,
        entity=entity,
        until=until,
        by=by,
        reason=reason.strip(),
    )
