"""What a behaviour detector concludes about one entity, handed to the alert engine."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from netmon.app.detection_settings import Thresholds
from netmon.storage.contract.events import AlertEvidence, Severity

ThresholdsOf = Callable[[str], Thresholds]  # a branch's thresholds
MAX_SAMPLE_IDS = 20  # flow ids a finding carries (the alert keeps a bounded sample of them)


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """A rule's current view of an entity: fired, with its cumulative evidence so far.

    Detectors hand one finding per entity whose evidence changed in a batch (not one per flow);
    the alert engine opens the alert or updates it, rate-limited.
    """

    rule: str
    entity: str  # the address the alert names (the attacker; the victim for a SYN flood)
    branch: str
    ts: float  # event time of the newest evidence
    severity: Severity
    title: str
    evidence: AlertEvidence
    evidence_ids: tuple[str, ...] = ()  # ids of flows added since the previous finding
    tags: tuple[str, ...] = ()
    threshold: int = 1  # the count the rule fired at: escalation counts in multiples of it
