"""DNS tunnelling: many unique names, or long random-looking names, under one parent domain.

A tunnel (iodine, dnscat2) encodes data in the labels left of a domain it controls, so one
client asks for hundreds of distinct names under one parent, and the labels are long and close
to random. RITA flags 100 unique subdomains of one parent; anomalous-dns flags names over 90
characters. A CDN name is long too but repeats, so only distinct names count.
"""

from __future__ import annotations

import math
from collections import Counter

import msgspec

from netmon.app.analysis.behaviour.bounded import add_capped
from netmon.app.analysis.behaviour.findings import MAX_SAMPLE_IDS, Finding
from netmon.app.analysis.behaviour.tracked import TrackedDetector
from netmon.app.detection_settings import Thresholds
from netmon.storage.contract.events import AlertEvidence, FlowObserved

NAMES_CAP = 4096
# Parents that are lists of addresses, not someone's domain: reverse lookups of many IPs.
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
# Second-level labels under which registries sell names ("example.co.uk").
PUBLIC_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "ac", "edu", "ne", "or"})


class TunnelTracker(msgspec.Struct, kw_only=True):
    """One (source, parent domain) pair in the current window."""

    branch: str
    source: str
    parent: str
    first: float
    last: float
    queries: int = 0
    names: set[str] = set()
    suspicious: set[str] = set()
    label_chars: int = 0  # sum of the subdomain lengths of the distinct names
    # Distinct names a flow reported beyond its sample (one socket asking many names): counted,
    # and judged suspicious in the share its sampled names were.
    unsampled: int = 0
    unsampled_suspicious: int = 0
    fired: bool = False
    new_ids: list[str] = []


class TunnelState(msgspec.Struct):
    """Every tracked (source, parent)."""

    pairs: dict[str, TunnelTracker] = {}


def parent_domain(name: str) -> tuple[str, str]:
    """(subdomain part, parent): the registered domain and what its owner put in front of it."""
    labels = name.rstrip(".").lower().split(".")
    keep = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in PUBLIC_SECOND_LEVEL:
        keep = 3
    return ".".join(labels[:-keep]), ".".join(labels[-keep:])


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    total = len(text)
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def is_suspicious(sub: str, th: Thresholds) -> bool:
    """Long labels, or labels of 20+ characters that look random."""
    letters = sub.replace(".", "")
    if len(letters) >= th.dns_long_label:
        return True
    return len(letters) >= 20 and entropy(letters) >= th.dns_entropy_bits


class TunnelDetector(TrackedDetector[TunnelTracker]):
    """Counts distinct names per (source, parent domain) in DNS flows."""

    rules: tuple[str, ...] = ("dns_tunnel",)

    def __init__(self, max_tracked: int, state: TunnelState | None = None) -> None:
        self.state = state or TunnelState()
        super().__init__(max_tracked, self.state.pairs)

    def observe(self, flow: FlowObserved, th: Thresholds) -> None:
        """Count the query names of a flow that carried DNS."""
        if not flow.dns_queries and flow.domain_source != "dns":
            return
        names = flow.dns_sample or ((flow.domain,) if flow.domain else ())
        touched: TunnelTracker | None = None
        suspicious = 0
        for name in names:
            sub, parent = parent_domain(name)
            if not sub or parent.endswith(REVERSE_ZONES) or parent in REVERSE_ZONES:
                continue
            touched = self._name(flow, name.lower(), sub, parent, th)
            suspicious += is_suspicious(sub, th)
        extra = flow.dns_names - len(names)
        if touched is not None and extra > 0:
            touched.unsampled += extra
            touched.unsampled_suspicious += round(extra * suspicious / len(names))
            self._judge(touched, th)

    def _name(
        self, flow: FlowObserved, name: str, sub: str, parent: str, th: Thresholds
    ) -> TunnelTracker:
        key = f"{flow.src_ip}|{parent}"
        when = flow.first_seen
        tracker = self.table.touch(key, lambda: self._new(flow, parent, when))
        if not tracker.fired and when - tracker.first > th.dns_window_s:
            tracker = self.table.entries[key] = self._new(flow, parent, when)
        tracker.queries += 1
        tracker.last = max(tracker.last, flow.last_seen)
        if add_capped(tracker.names, name, NAMES_CAP):
            tracker.label_chars += len(sub)
            if is_suspicious(sub, th):
                tracker.suspicious.add(name)
            if len(tracker.new_ids) < MAX_SAMPLE_IDS and flow.id not in tracker.new_ids:
                tracker.new_ids.append(flow.id)
        self._judge(tracker, th)
        return tracker

    def _judge(self, tracker: TunnelTracker, th: Thresholds) -> None:
        if not tracker.fired:
            tracker.fired = (
                len(tracker.names) + tracker.unsampled >= th.dns_unique_names
                or len(tracker.suspicious) + tracker.unsampled_suspicious >= th.dns_suspicious_names
            )
        if tracker.fired:
            self.dirty.add(f"{tracker.source}|{tracker.parent}")

    @staticmethod
    def _new(flow: FlowObserved, parent: str, when: float) -> TunnelTracker:
        return TunnelTracker(
            branch=flow.branch, source=flow.src_ip, parent=parent, first=when, last=when
        )

    def finding(self, key: str, t: TunnelTracker, th: Thresholds) -> Finding | None:
        """The finding about a (source, parent domain) whose names grew."""
        sampled = len(t.names)
        unique = sampled + t.unsampled
        suspicious = len(t.suspicious) + t.unsampled_suspicious
        mean = t.label_chars / max(sampled, 1)
        return Finding(
            rule="dns_tunnel",
            entity=t.source,
            branch=t.branch,
            ts=t.last,
            severity="high",
            title=(
                f"{t.source} asked for {unique} distinct names under {t.parent}"
                f" ({suspicious} long or random, mean {mean:.0f} characters)"
            ),
            evidence=AlertEvidence(
                count=t.queries,
                first_seen=t.first,
                last_seen=t.last,
                distinct_targets=unique,
                targets=(t.parent,),
            ),
            evidence_ids=tuple(t.new_ids),
            threshold=th.dns_suspicious_names,
        )
