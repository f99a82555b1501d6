"""Alert rules: critical detections and window rules open alerts; dedup, cooldown, suppression.

State is keyed by (rule, entity): at most one open alert each. After an alert closes, the same
key stays quiet for ``cooldown`` seconds. A suppression (AlertSuppressed, from a user) silences
a key until it expires; entity "*" silences every entity of a rule. Times are event times, so
replaying the log gives the same decisions, and alert ids are derived from what opened them
(rule, entity, first evidence) so a replay after a crash re-derives the same id and the worker
can drop the duplicate.

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

from netmon.storage.contract.events import (
    AlertAcknowledged,
    AlertOpened,
    AlertResolved,
    AlertSuppressed,
    DetectionRaised,
    Event,
    FlowObserved,
    Severity,
    WindowSummarized,
    new_event_id,
)

log = logging.getLogger(__name__)
RECOVERED_BY = "rule:recovered"


class OpenAlert(msgspec.Struct):
    """One open alert."""

    alert_id: str
    rule: str
    entity: str
    severity: str
    opened_at: float
    acknowledged_by: str = ""


class AlertsState(msgspec.Struct, kw_only=True):
    """Everything the engine remembers (checkpointed with the worker's position)."""

    open: dict[str, OpenAlert] = {}  # "rule|entity" -> alert
    closed_at: dict[str, float] = {}  # "rule|entity" -> when its last alert closed
    suppressed: dict[str, float] = {}  # "rule|entity" -> until
    history: dict[str, list[int]] = {}  # branch -> flows of recent windows


def alert_id(rule: str, entity: str, evidence: str) -> str:
    """Deterministic id: the same trigger replayed yields the same alert."""
    return hashlib.sha256(f"{rule}|{entity}|{evidence}".encode()).hexdigest()[:32]


class AlertEngine:
    """Turns detections and windows into alert lifecycle events."""

    def __init__(self, settings: Any) -> None:
        self.s = settings  # AnalysisSettings: rule_* thresholds and alert_cooldown_s
        self.state = AlertsState()

    # --- triggers ---------------------------------------------------------------------------

    def on_detection(self, event: DetectionRaised) -> list[Event]:
        """A critical detection opens an alert about its source IP."""
        if event.severity != "critical":
            return []
        rule = f"detection:{event.detection.kind}"
        title = f"{event.detection.detail} from {event.src_ip} to {event.dst_ip}:{event.dst_port}"
        return self._open(rule, event.src_ip, "critical", title, event, (event.id,))

    def on_flow(self, flow: FlowObserved) -> list[Event]:
        """Critical findings carried by a flow (when no DetectionRaised preceded it)."""
        out: list[Event] = []
        for detection in flow.detections:
            if detection.severity == "critical":
                title = f"{detection.detail} from {flow.src_ip} to {flow.dst_ip}:{flow.dst_port}"
                rule = f"detection:{detection.kind}"
                out += self._open(rule, flow.src_ip, "critical", title, flow, (flow.id,))
        return out

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
        elif isinstance(event, AlertAcknowledged):
            for alert in self.state.open.values():
                if alert.alert_id == event.alert_id:
                    alert.acknowledged_by = event.by

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
