"""Detectors: small plugins that look at flows and return their own findings.

Each detector module holds one class deriving from ``Detector``. The flow table calls, for
every flow:
- ``on_init(flow)`` on its first packet (the 5-tuple is known: ports, addresses);
- ``on_update(flow)`` when the flow learns its application name (``flow.domain``);
- ``on_expire(flow)`` when it ends;
and ``tick(now)`` once per tick (list reloads). Hooks return the findings (``Detection``) to
add to the flow, or ``None``. They are not called for every packet: per-packet work belongs
in the flow table, so the hot path stays free of plugin calls. A finding with severity
"critical" is raised at once (``DetectionRaised``) by the pipeline, which also picks the
detectors a configuration enables (``netmon.agent.pipeline.build_detectors``).
"""

from __future__ import annotations

from netmon.agent.flowrecord import Flow
from netmon.storage.contract.events import Detection


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
