"""The behaviour engine: feeds every flow to every detector, applies thresholds per branch and
the allowlist, and hands the alert engine one ``Finding`` per entity whose evidence grew.

Its whole state (``BehaviourState``) is plain msgspec data, saved with the worker's checkpoint,
so a restarted worker continues a slow scan where it was.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Protocol

import msgspec

from netmon.app.analysis.behaviour.beacons import BeaconDetector, BeaconState
from netmon.app.analysis.behaviour.bounded import evict_oldest
from netmon.app.analysis.behaviour.dns_tunnels import TunnelDetector, TunnelState
from netmon.app.analysis.behaviour.findings import Finding, ThresholdsOf
from netmon.app.analysis.behaviour.floods import FloodDetector, FloodState
from netmon.app.analysis.behaviour.guessing import GuessDetector, GuessState
from netmon.app.analysis.behaviour.scans import ScanDetector, ScanState
from netmon.app.analysis.behaviour.volume import VolumeDetector, VolumeState
from netmon.app.detection_settings import (
    AllowRule,
    DetectionSettings,
    DetectionSource,
    IPNetwork,
    Thresholds,
)
from netmon.storage.contract.events import FlowObserved

log = logging.getLogger(__name__)
LISTED_CAP = 65_536  # sources remembered as matching a threat list
THREAT_KINDS = frozenset({"suspicious_ip"})


class BehaviourState(msgspec.Struct, kw_only=True):
    """Every detector's state, and the sources seen on a threat list."""

    scans: ScanState = msgspec.field(default_factory=ScanState)
    udp_scans: ScanState = msgspec.field(default_factory=ScanState)
    floods: FloodState = msgspec.field(default_factory=FloodState)
    guesses: GuessState = msgspec.field(default_factory=GuessState)
    beacons: BeaconState = msgspec.field(default_factory=BeaconState)
    tunnels: TunnelState = msgspec.field(default_factory=TunnelState)
    volume: VolumeState = msgspec.field(default_factory=VolumeState)
    listed: dict[str, float] = {}  # source -> last time a flow of it matched a threat list


class Detector(Protocol):
    """What the engine needs of a detector."""

    rules: tuple[str, ...]

    def observe(self, flow: FlowObserved, th: Thresholds) -> None:
        """Fold one flow into the detector's state."""
        ...

    def findings(self, th_of: ThresholdsOf) -> list[Finding]:
        """Findings about entities whose evidence grew since the last call."""
        ...


class _Allow:
    """An allowlist entry with its networks parsed once."""

    def __init__(self, rule: AllowRule) -> None:
        self.rules = frozenset(rule.rules)
        self.src = ipaddress.ip_network(rule.src, strict=False) if rule.src else None
        self.dst = ipaddress.ip_network(rule.dst, strict=False) if rule.dst else None
        self.port, self.until = rule.port, rule.until

    def matches(self, flow: FlowObserved, src: IPAddress, dst: IPAddress) -> bool:
        return (
            (not self.until or flow.ts < self.until)
            and (not self.port or flow.dst_port == self.port)
            and _inside(src, self.src)
            and _inside(dst, self.dst)
        )


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address | None


def _inside(address: IPAddress, network: IPNetwork | None) -> bool:
    if network is None:
        return True
    return address is not None and address.version == network.version and address in network


def _address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class BehaviourEngine:
    """Runs the detectors over batches of flows."""

    def __init__(self, source: DetectionSource, state: BehaviourState | None = None) -> None:
        self.source = source
        self.state = state or BehaviourState()
        self._settings: DetectionSettings | None = None
        self._thresholds: dict[str, Thresholds] = {}
        self._allow: list[_Allow] = []
        self.detectors: list[Detector] = []
        self.flows_seen = 0

    def _configure(self, settings: DetectionSettings) -> None:
        """(Re)build what depends on the settings; detector state is kept across changes."""
        cap, s = settings.max_tracked, self.state
        self.detectors = [
            ScanDetector(cap, udp=False, state=s.scans),
            ScanDetector(cap, udp=True, state=s.udp_scans),
            FloodDetector(cap, state=s.floods),
            GuessDetector(cap, state=s.guesses),
            BeaconDetector(cap, state=s.beacons),
            TunnelDetector(cap, state=s.tunnels),
            VolumeDetector(cap, state=s.volume),
        ]
        self._thresholds = {}
        self._allow = [_Allow(rule) for rule in settings.allow]
        self._settings = settings

    def thresholds(self, branch: str) -> Thresholds:
        """The thresholds of a branch (cached until the settings change)."""
        th = self._thresholds.get(branch)
        if th is None:
            assert self._settings is not None
            th = self._thresholds[branch] = self._settings.for_branch(branch)
        return th

    def observe(self, flows: Iterable[FlowObserved]) -> list[Finding]:
        """Fold a batch of flows; the findings it produced, with the threat-list tag added."""
        settings = self.source.current()
        if settings is not self._settings:
            self._configure(settings)
        if not settings.enabled:
            return []
        detectors, thresholds = self.detectors, self.thresholds
        for flow in flows:
            self.flows_seen += 1
            th = thresholds(flow.branch)
            skipped = self._allowed_rules(flow) if self._allow else frozenset()
            for detector in detectors:
                if not skipped or not ("*" in skipped or skipped.issuperset(detector.rules)):
                    detector.observe(flow, th)
            if flow.detections:
                self._note_listed(flow)
        findings = [f for d in detectors for f in d.findings(thresholds)]
        return [self._tagged(f) for f in findings]

    def _allowed_rules(self, flow: FlowObserved) -> frozenset[str]:
        src, dst = _address(flow.src_ip), _address(flow.dst_ip)
        allowed: set[str] = set()
        for entry in self._allow:
            if entry.matches(flow, src, dst):
                allowed |= entry.rules
        return frozenset(allowed)

    def _note_listed(self, flow: FlowObserved) -> None:
        if any(d.kind in THREAT_KINDS for d in flow.detections):
            listed = self.state.listed
            listed.pop(flow.src_ip, None)  # re-inserted last: the dict's order is recency
            evict_oldest(listed, LISTED_CAP)
            listed[flow.src_ip] = flow.ts

    def _tagged(self, finding: Finding) -> Finding:
        if finding.entity in self.state.listed:
            return msgspec.structs.replace(finding, tags=(*finding.tags, "threat list"))
        return finding

    def tracked(self) -> dict[str, int]:
        """Entities held per detector (for the worker's stats and the benchmark)."""
        s = self.state
        return {
            "scans": len(s.scans.sources),
            "udp_scans": len(s.udp_scans.sources),
            "floods": len(s.floods.targets),
            "guesses": len(s.guesses.pairs),
            "beacons": len(s.beacons.pairs),
            "tunnels": len(s.tunnels.pairs),
            "volume": len(s.volume.sources),
        }
