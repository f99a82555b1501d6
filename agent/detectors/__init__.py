"""Detectors: small plugins that look at flows and return their own findings.

Each detector module holds one class deriving from ``Detector``. The flow table calls, for
every flow:
- ``on_init(flow)`` on its first packet (the 5-tuple is known: ports, addresses);
- ``on_update(flow)`` when the flow learns its application name (``flow.domain``);
- ``on_expire(flow)`` when it ends;
and ``tick(now)`` once per tick (list reloads). Hooks return the findings (``Detection``) to
add to the flow, or ``None``. They are not called for every packet: per-packet work belongs
in the flow table, so the hot path stays free of plugin calls. A finding with severity
"critical" is raised at once (``DetectionRaised``) by the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netmon.storage.contract.events import Detection

if TYPE_CHECKING:
    from netmon.agent.config import AgentConfig
    from netmon.agent.flowrecord import Flow


class Detector:
    """Base detector: every hook is a no-op."""

    name = "detector"

    def on_init(self, flow: Flow) -> list[Detection] | None:
        """The flow's first packet."""
        return None

    def on_update(self, flow: Flow) -> list[Detection] | None:
        """The flow learned (or changed) its application name."""
        return None

    def on_expire(self, flow: Flow) -> list[Detection] | None:
        """The flow ended."""
        return None

    def tick(self, now: float) -> None:
        """Periodic housekeeping (packet time)."""


def build_detectors(config: AgentConfig) -> list[Detector]:
    """The detectors the configuration enables, in a fixed order."""
    from netmon.agent.detectors.critical_ports import CriticalPortDetector
    from netmon.agent.detectors.domains import DomainDetector
    from netmon.agent.detectors.suspicious_ips import SuspiciousIpDetector

    detectors: list[Detector] = [CriticalPortDetector(config.critical_ports)]
    if config.threat_lists:
        detectors.append(SuspiciousIpDetector(config.threat_lists, config.list_reload_interval))
    policy = config.domains
    if policy.approved or policy.approved_files or policy.denied or policy.denied_files:
        detectors.append(DomainDetector(policy))
    return detectors
