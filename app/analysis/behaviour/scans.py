"""Scan detectors: TCP scans by shape (port, address, network) and UDP scans.

One tracker per probing source holds the distinct (host, port) pairs it probed in the current
episode. An episode ends after ``scan_idle_s`` without a probe (bro-simple-scan's expiry, so a
slow scan at one probe a minute still adds up) instead of a fixed window (Zeek's tumbling 5
minutes, which a scan straddling two epochs can slip through). When the tracker crosses a
threshold the scan is named by its shape, as bro-simple-scan does at notice time:
``port_scan`` (many ports of one host), ``addr_scan`` (one port on many hosts), otherwise
``net_scan`` (many pairs); a scan named once stays named for its episode.
"""

from __future__ import annotations

import msgspec

from netmon.app.analysis.behaviour.bounded import sample
from netmon.app.analysis.behaviour.findings import MAX_SAMPLE_IDS, Finding
from netmon.app.analysis.behaviour.probes import (
    is_failed_probe,
    is_unanswered_udp,
    port_unreachables,
)
from netmon.app.analysis.behaviour.tracked import TrackedDetector
from netmon.app.detection_settings import Thresholds
from netmon.storage.contract.events import AlertEvidence, FlowObserved

PAIR_CAP = 20_000  # distinct (host, port) pairs remembered per source; counts go on past it
SET_CAP = 65_536
SAMPLE = 20


class ScanTracker(msgspec.Struct, kw_only=True):
    """One source's current scan episode."""

    branch: str
    first: float
    last: float
    probes: int = 0
    pairs: int = 0
    by_host: dict[str, set[int]] = {}
    by_port: dict[int, set[str]] = {}
    most_ports: int = 0  # max over hosts of len(by_host[host])
    most_hosts: int = 0  # max over ports of len(by_port[port])
    unreachables: int = 0  # ICMP port-unreachable answers the source received (UDP scans)
    rule: str = ""  # the rule it fired, once it did
    new_ids: list[str] = []


class ScanState(msgspec.Struct):
    """Every tracked source, least recently probing first."""

    sources: dict[str, ScanTracker] = {}


class ScanDetector(TrackedDetector[ScanTracker]):
    """Failed TCP probes (``udp=False``) or unanswered UDP datagrams (``udp=True``)."""

    def __init__(self, max_tracked: int, *, udp: bool, state: ScanState | None = None) -> None:
        self.udp = udp
        self.rules: tuple[str, ...] = (
            ("udp_scan",) if udp else ("port_scan", "addr_scan", "net_scan")
        )
        self.state = state or ScanState()
        super().__init__(max_tracked, self.state.sources)

    def observe(self, flow: FlowObserved, th: Thresholds) -> None:
        """Count the flow if it is a probe (or, for UDP, an ICMP port-unreachable answer)."""
        if self.udp:
            answers = port_unreachables(flow)
            if answers:
                self._answered(flow, answers, th)
                return
            if not is_unanswered_udp(flow) or _is_group_address(flow.dst_ip):
                return
        elif not is_failed_probe(flow):
            return
        tracker = self._tracker(flow, th)
        tracker.probes += 1
        if tracker.pairs < PAIR_CAP:
            self._add_pair(tracker, flow.dst_ip, flow.dst_port)
        if len(tracker.new_ids) < MAX_SAMPLE_IDS:
            tracker.new_ids.append(flow.id)
        self._judge(flow.src_ip, tracker, th)

    def _answered(self, flow: FlowObserved, answers: int, th: Thresholds) -> None:
        """The ICMP error goes from the probed host back to the prober (the flow's dst)."""
        tracker = self.table.get(flow.dst_ip)
        if tracker is None:
            return  # no probes from it seen yet: nothing to corroborate
        tracker.unreachables += answers
        self._judge(flow.dst_ip, tracker, th)

    def _tracker(self, flow: FlowObserved, th: Thresholds) -> ScanTracker:
        when = flow.first_seen
        tracker = self.table.touch(
            flow.src_ip, lambda: ScanTracker(branch=flow.branch, first=when, last=when)
        )
        if when - tracker.last > th.scan_idle_s:  # a new episode: start counting afresh
            tracker = ScanTracker(branch=flow.branch, first=when, last=when)
            self.table.entries[flow.src_ip] = tracker
        tracker.last = max(tracker.last, when)
        return tracker

    @staticmethod
    def _add_pair(tracker: ScanTracker, host: str, port: int) -> None:
        ports = tracker.by_host.setdefault(host, set())
        if port in ports:
            return
        ports.add(port)
        hosts = tracker.by_port.setdefault(port, set())
        hosts.add(host)
        tracker.pairs += 1
        tracker.most_ports = max(tracker.most_ports, len(ports))
        tracker.most_hosts = max(tracker.most_hosts, len(hosts))

    def _judge(self, source: str, tracker: ScanTracker, th: Thresholds) -> None:
        if not tracker.rule:
            tracker.rule = self._shape(tracker, th)
        if tracker.rule:
            self.dirty.add(source)

    def _shape(self, t: ScanTracker, th: Thresholds) -> str:
        if self.udp:
            confirmed = t.unreachables >= th.udp_unreachables
            wide = t.most_ports >= th.udp_ports or t.most_hosts >= th.scan_hosts
            return (
                "udp_scan" if wide or (confirmed and t.most_ports >= th.udp_ports_confirmed) else ""
            )
        if t.most_ports >= th.scan_ports:
            return "port_scan"
        if t.most_hosts >= th.scan_hosts:
            return "addr_scan"
        spread = len(t.by_host) > 1 and len(t.by_port) > 1  # else one of the shapes above
        return "net_scan" if spread and t.pairs >= th.scan_pairs else ""

    def finding(self, source: str, t: ScanTracker, th: Thresholds) -> Finding | None:
        """The finding about a source whose scan grew (None until it has a name)."""
        if not t.rule:
            return None
        hosts = sorted(t.by_host, key=lambda h: (-len(t.by_host[h]), h))
        ports = {p for p in t.by_port}
        duration = max(t.last - t.first, 0.0)
        rate = t.probes / max(duration, 1.0)
        tags = ("slow",) if rate < th.scan_slow_rate and t.probes > 1 else ()
        evidence = AlertEvidence(
            count=t.probes,
            first_seen=t.first,
            last_seen=t.last,
            distinct_targets=len(t.by_host),
            distinct_ports=len(ports),
            targets=tuple(hosts[:SAMPLE]),
            ports=sample(ports, SAMPLE),
        )
        return Finding(
            rule=t.rule,
            entity=source,
            branch=t.branch,
            ts=t.last,
            severity="medium",
            title=_title(source, t, hosts, ports, duration),
            evidence=evidence,
            evidence_ids=tuple(t.new_ids),
            tags=tags,
            threshold=self._threshold(t.rule, th),
        )

    @staticmethod
    def _threshold(rule: str, th: Thresholds) -> int:
        return {
            "port_scan": th.scan_ports,
            "addr_scan": th.scan_hosts,
            "net_scan": th.scan_pairs,
        }.get(rule, th.udp_ports_confirmed)


def _title(source: str, t: ScanTracker, hosts: list[str], ports: set[int], duration: float) -> str:
    span = f"{t.probes} probes in {_span(duration)}"
    if t.rule == "addr_scan":
        port = max(t.by_port, key=lambda p: len(t.by_port[p]))
        return f"{source} probed port {port} on {t.most_hosts} hosts ({span})"
    where = f"of {hosts[0]}" if len(hosts) == 1 else f"on {len(hosts)} hosts"
    if t.rule == "port_scan":
        return f"{source} scanned {len(ports)} ports {where} ({span})"
    if t.rule == "udp_scan":
        answered = f", {t.unreachables} port-unreachable answers" if t.unreachables else ""
        return (
            f"{source} probed {len(ports)} closed or filtered UDP ports {where} ({span}{answered})"
        )
    return f"{source} probed {t.pairs} host:port pairs on {len(hosts)} hosts ({span})"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _is_group_address(ip: str) -> bool:
    """Multicast and broadcast destinations answer nobody; they are not probes."""
    if ":" in ip:
        return ip[:2].lower() == "ff"
    first = ip.split(".", 1)[0]
    return ip.endswith(".255") or (first.isdigit() and 224 <= int(first) <= 239)
