"""Unapproved domains: an allowlist of approved domains and a denylist.

Both match a name and its subdomains on label boundaries ("example.com" matches
"www.example.com", not "badexample.com"), case-insensitively, after IDN normalisation (UTS #46
via the ``idna`` package, so "BÜCHER.example" and "xn--bcher-kva.example" are one name). A
denied name is a finding whatever the allowlist says; with a non-empty allowlist, every other
name outside it is an "unapproved" finding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import idna

from netmon.agent.config import AgentConfigError, DomainPolicy
from netmon.agent.detectors import Detector
from netmon.agent.flowrecord import Flow
from netmon.storage.contract.events import Detection

log = logging.getLogger(__name__)


class DomainListError(AgentConfigError):
    """A domain list file named in the configuration cannot be used."""


def normalise(name: str) -> str:
    """Lower-case ASCII (A-label) form of a domain name, without the trailing dot."""
    name = name.strip().rstrip(".")
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return name.lower()


def read_domain_file(path: Path) -> list[str]:
    """One domain per line; blank lines and ``#`` comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DomainListError(f"cannot read domain list {path}: {error}") from None
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


class SuffixSet:
    """Domains matched with all their subdomains."""

    __slots__ = ("_names",)

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(normalise(name) for name in names if name.strip(" ."))

    def match(self, name: str) -> str | None:
        """The listed domain that ``name`` (already normalised) equals or is under."""
        names = self._names
        while True:
            if name in names:
                return name
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1 :]

    def __bool__(self) -> bool:
        return bool(self._names)

    def __len__(self) -> int:
        return len(self._names)


class DomainDetector(Detector):
    """Flags denied domains, and names outside the approved list."""

    name = "unapproved_domain"

    def __init__(self, policy: DomainPolicy) -> None:
        approved = list(policy.approved)
        denied = list(policy.denied)
        for path in policy.approved_files:
            approved += read_domain_file(Path(path))
        for path in policy.denied_files:
            denied += read_domain_file(Path(path))
        self._approved = SuffixSet(approved)
        self._denied = SuffixSet(denied)
        self._policy = policy

    @property
    def rules(self) -> int:
        """Distinct approved and denied domains, lists and files together (heartbeats)."""
        return len(self._approved) + len(self._denied)

    def judge(self, domain: str) -> Detection | None:
        """The finding for one name, or None when it is allowed."""
        name = normalise(domain)
        hit = self._denied.match(name)
        if hit is not None:
            return Detection(
                kind=self.name,
                detail=f"{name} is denied ({hit})",
                severity=self._policy.denied_severity,
                rule="denylist",
            )
        if self._approved and self._approved.match(name) is None:
            return Detection(
                kind=self.name,
                detail=f"{name} is not an approved domain",
                severity=self._policy.unapproved_severity,
                rule="allowlist",
            )
        return None

    def on_update(self, flow: Flow) -> list[Detection] | None:
        """Judge the name the flow just learned."""
        if not flow.domain:
            return None
        detection = self.judge(flow.domain)
        return [detection] if detection is not None else None
