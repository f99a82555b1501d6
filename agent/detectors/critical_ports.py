"""Critical ports: SSH, RDP, Telnet (configurable), judged on the responder's port only.

The responder is the receiver of the flow's first packet, so a client that happens to use
ephemeral port 3389 to reach a web server is not an RDP finding.
"""

from __future__ import annotations

from collections.abc import Sequence

from netmon.agent.config import CriticalPort
from netmon.agent.detectors import Detector
from netmon.agent.flowrecord import Flow
from netmon.storage.contract.events import Detection

_PROTOCOLS = {"tcp": 6, "udp": 17}


class CriticalPortDetector(Detector):
    """Flags flows whose responder port is in the critical port table."""

    name = "critical_port"

    def __init__(self, ports: Sequence[CriticalPort]) -> None:
        self._table: dict[tuple[int, int], Detection] = {
            (_PROTOCOLS[entry.protocol], entry.port): Detection(
                kind=self.name,
                detail=f"{entry.name} ({entry.port}/{entry.protocol})",
                severity=entry.severity,
                rule=entry.rule,
            )
            for entry in ports
        }

    def on_init(self, flow: Flow) -> list[Detection] | None:
        """Look the responder's port up; one dict lookup per new flow."""
        key = flow.key
        proto = key[0]
        if proto != 6 and proto != 17:
            return None
        dport = (key[-2] << 8) | key[-1]
        detection = self._table.get((proto, dport))
        return [detection] if detection is not None else None
