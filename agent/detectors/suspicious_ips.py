"""Suspicious IPs: threat lists of IPs and CIDRs (IPv4, IPv6) from text or CSV files.

Lists are reloaded when their file's mtime changes, checked at most every
``list_reload_interval`` seconds. A list that cannot be read keeps its previous contents (a
bad reload never empties the protection) and the error is logged. Lines that are not an IP or
CIDR are skipped and counted in the log line.
"""

from __future__ import annotations

import csv
import ipaddress
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from netmon.agent.config import ThreatList
from netmon.agent.detectors import Detector
from netmon.agent.flowrecord import Flow, ip_text
from netmon.storage.contract.events import Detection

log = logging.getLogger(__name__)


class ThreatListError(Exception):
    """A threat list file cannot be used."""


class IpSet:
    """Exact addresses and networks of one list; lookups by packed address."""

    __slots__ = ("exact", "networks")

    def __init__(self) -> None:
        self.exact: set[bytes] = set()
        # (address length, prefix length) -> set of network ints with that prefix
        self.networks: dict[tuple[int, int], set[int]] = {}

    def add(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        """Add one network (a host network is an exact address)."""
        if network.prefixlen == network.max_prefixlen:
            self.exact.add(network.network_address.packed)
            return
        size = network.max_prefixlen // 8
        self.networks.setdefault((size, network.prefixlen), set()).add(int(network.network_address))

    def __contains__(self, packed: bytes) -> bool:
        if packed in self.exact:
            return True
        value = -1
        for (size, prefix), members in self.networks.items():
            if size != len(packed):
                continue
            if value < 0:
                value = int.from_bytes(packed, "big")
            if (value >> (size * 8 - prefix)) << (size * 8 - prefix) in members:
                return True
        return False

    def __len__(self) -> int:
        return len(self.exact) + sum(len(m) for m in self.networks.values())


def parse_threat_file(path: Path, column: str = "") -> tuple[IpSet, int]:
    """Read a list file; returns (addresses, count of skipped lines). Raises ThreatListError."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ThreatListError(f"cannot read threat list {path}: {error.strerror}") from None
    ips = IpSet()
    skipped = 0
    is_csv = path.suffix.lower() == ".csv"
    rows = csv.reader(text.splitlines()) if is_csv else ([line] for line in text.splitlines())
    index = -1
    for number, row in enumerate(rows):
        cells = [cell.split("#", 1)[0].strip() for cell in row]
        if not any(cells):
            continue
        if is_csv and number == 0 and column and not column.isdigit():
            index = cells.index(column) if column in cells else -2
            continue
        if index == -2:
            raise ThreatListError(f"threat list {path}: no column named {column!r}")
        if column.isdigit():
            index = int(column)
        network = _first_network(cells if index < 0 else cells[index : index + 1])
        if network is None:
            skipped += 1
        else:
            ips.add(network)
    return ips, skipped


def _first_network(
    cells: list[str],
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    for cell in cells:
        try:
            return ipaddress.ip_network(cell, strict=False)
        except ValueError:
            continue
    return None


class _LoadedList:
    __slots__ = ("spec", "ips", "mtime", "checked")

    def __init__(self, spec: ThreatList) -> None:
        self.spec = spec
        self.ips = IpSet()
        self.mtime = -1.0
        self.checked = float("-inf")


class SuspiciousIpDetector(Detector):
    """Flags flows whose source or destination is on a threat list."""

    name = "suspicious_ip"

    def __init__(self, lists: Sequence[ThreatList], reload_interval: float) -> None:
        self._lists = [_LoadedList(spec) for spec in lists]
        self._interval = reload_interval
        for loaded in self._lists:
            self._reload(loaded, time.monotonic())

    def _reload(self, loaded: _LoadedList, now: float) -> None:
        loaded.checked = now
        path = Path(loaded.spec.path)
        try:
            mtime = os.stat(path).st_mtime
        except OSError as error:
            log.error("threat list %s (%s): %s", loaded.spec.name, path, error.strerror)
            return
        if mtime == loaded.mtime:
            return
        try:
            ips, skipped = parse_threat_file(path, loaded.spec.column)
        except ThreatListError as error:
            log.error("threat list %s: %s; keeping the previous contents", loaded.spec.name, error)
            return
        loaded.ips, loaded.mtime = ips, mtime
        log.info(
            "threat list %s loaded: %d entries, %d lines skipped",
            loaded.spec.name,
            len(ips),
            skipped,
        )

    def tick(self, now: float) -> None:
        """Reload changed lists, at most one mtime check per list per interval (wall time)."""
        wall = time.monotonic()
        for loaded in self._lists:
            if wall - loaded.checked >= self._interval:
                self._reload(loaded, wall)

    def on_init(self, flow: Flow) -> list[Detection] | None:
        """Check both endpoints against every list."""
        src, dst, _, _ = flow.endpoints()
        found: list[Detection] | None = None
        for loaded in self._lists:
            for address in (src, dst):
                if address in loaded.ips:
                    found = found or []
                    found.append(
                        Detection(
                            kind=self.name,
                            detail=f"{ip_text(address)} in list {loaded.spec.name}",
                            severity=loaded.spec.severity,
                            rule=loaded.spec.name,
                        )
                    )
        return found
